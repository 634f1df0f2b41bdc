"""Every code block of the README and the docs runs as written.

A page's blocks run in order, in a temp folder with ``LOCALRUN_DIR`` inside it: its python
blocks in one namespace (a block may use what an earlier one defined), its shell blocks with
``bash -e``, its sql blocks in DuckDB, and a block fenced with ``title="NAME"`` is a file the
reader saves (a later shell block runs it). Output, listings and trees are fenced ``text`` or
``console``. A fence with no language, or one this file does not know, fails the page: nothing
runnable is skipped silently. Install blocks run in a fresh venv (tests/test_install.py); the
blocks listed in ``DEDICATED`` run in a test of their own here, against the data they need.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import localrun
from tests.conftest import REPO, child_env, track

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]

PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell"}
SQL = {"sql"}
OUTPUT = {"text", "console"}  # not runnable by nature: output, a file listing, an on-disk tree

# Blocks that need data prepared for them, each run by the named test below:
# (page, a string in the block or its title) -> test function.
DEDICATED = {
    ("docs/format.md", "concat_tables"): "test_pyarrow_recipe_in_format_md",
    ("docs/format.md", "read_parquet("): "test_duckdb_query_in_format_md_applies_manifests",
    ("docs/resuming.md", "#SBATCH"): "test_slurm_recipe_delivers_sigterm_to_the_training_process",
}

# Pages that are not this file's author's to edit, with what their owner must change: the
# named test fails for that page (strictly: it must start passing once the page is fixed).
OWNED_ELSEWHERE: dict[tuple[str, str], str] = {}

# Pages whose blocks train Lightning or Transformers models: run by `make test-frameworks`.
FRAMEWORK_PAGES = {"docs/integrations/lightning.md", "docs/integrations/transformers.md"}

PAGE_TIMEOUT = 900  # seconds for one page's blocks (Keras and torch imports on a loaded CPU)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # the line of the block's first code line in the page
    lang: str
    title: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


def doc_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order. A fence this parser misses is an error."""
    text = page.read_text()
    rel = _rel(page)
    found = []
    for m in _FENCE.finditer(text):
        lang, _, attrs = m["info"].strip().partition(" ")
        title = re.search(r'title="([^"]+)"', attrs)
        line = text.count("\n", 0, m.start("code")) + 1
        found.append(Block(rel, line, lang.lower(), title[1] if title else None, m["code"]))
    fence_lines = len(re.findall(r"^\s*```", text, re.M))
    assert fence_lines == 2 * len(found), f"{rel}: an indented or unclosed fence"
    return found


def _rel(page: Path) -> str:
    return page.relative_to(REPO).as_posix() if page.is_relative_to(REPO) else page.name


def _commands(code: str) -> list[str]:
    return [ln.strip() for ln in code.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def is_install_block(block: Block) -> bool:
    """A shell block of install commands (pip, make dist): tests/test_install.py runs it."""
    cmds = _commands(block.code)
    return (
        block.lang in SHELL
        and bool(cmds)
        and all(c.startswith("pip ") or c == "make dist" for c in cmds)
    )


def install_lines() -> list[str]:
    """Every documented install command, in page order, each once."""
    lines: list[str] = []
    for page in PAGES:
        for block in doc_blocks(page):
            if is_install_block(block):
                lines += [c for c in _commands(block.code) if c not in lines]
    return lines


def dedicated_test(block: Block) -> str | None:
    for (page, marker), test in DEDICATED.items():
        if block.page == page and (marker in block.code or marker == block.title):
            return test
    return None


def dedicated_block(page: str, marker: str) -> Block:
    [block] = [
        b
        for b in doc_blocks(REPO / page)
        if marker in b.code or marker == b.title
        if dedicated_test(b) is not None
    ]
    return block


def plan(page: Path) -> list[dict[str, object]]:
    """The steps that run ``page``'s blocks; fails on a block it cannot tell how to run."""
    steps: list[dict[str, object]] = []
    for b in doc_blocks(page):
        if b.lang in OUTPUT or dedicated_test(b) is not None or is_install_block(b):
            continue
        if b.lang not in PYTHON | SHELL | SQL:
            raise AssertionError(
                f"{b.where}: fence language {b.lang!r} is not known: use python, sh/bash or sql "
                "for code that runs, text or console for output, listings and trees"
            )
        if b.lang in SHELL and any("pip install" in c for c in _commands(b.code)):
            raise AssertionError(f"{b.where}: keep install commands in a block of their own")
        kind = "file" if b.title else "python" if b.lang in PYTHON else b.lang
        steps.append(
            {"kind": kind, "where": b.where, "line": b.line, "code": b.code, "name": b.title}
        )
    for i, step in enumerate(steps):
        if step["kind"] == "file":
            users = [
                s
                for s in steps[i + 1 :]
                if s["kind"] in SHELL and str(step["name"]) in str(s["code"])
            ]
            assert users, (
                f"{step['where']}: file {step['name']} is written, but no later block runs it"
            )
    return steps


# Runs one page's steps in order, in one process: python blocks share one namespace.
_DRIVER = r"""
import json, subprocess, sys, traceback
steps = json.load(open(sys.argv[1]))
scope = {"__name__": "__main__"}
for step in steps:
    where, kind, code = step["where"], step["kind"], step["code"]
    print(f"----- {where} ({kind})", flush=True)
    if kind == "python":
        try:
            exec(compile("\n" * (step["line"] - 1) + code, where.split(":")[0], "exec"), scope)
        except BaseException:
            traceback.print_exc()
            sys.exit(f"the python block at {where} failed")
    elif kind == "file":
        with open(step["name"], "w") as f:
            f.write(code)
    elif kind == "sql":
        import duckdb
        print(duckdb.sql(code).fetchall())
    else:
        done = subprocess.run(["bash", "-e", "-c", code], timeout=600)
        if done.returncode:
            sys.exit(f"the shell block at {where} exited with {done.returncode}")
"""


def _page_params(test: str) -> list[object]:
    params: list[object] = []
    for page in PAGES:
        why = OWNED_ELSEWHERE.get((test, _rel(page)))
        marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
        if _rel(page) in FRAMEWORK_PAGES:
            marks.append(pytest.mark.frameworks)  # trains real models: make test-frameworks
        params.append(pytest.param(page, id=_rel(page), marks=marks))
    return params


def _env(tmp: Path) -> dict[str, str]:
    """A user's shell: this project's python and localrun first on PATH, a root in the temp dir."""
    env = child_env(tmp / "localruns")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["SHARED"] = str(tmp / "shared")  # the preemptible-VM recipe's shared disk
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("page", _page_params("test_page_runs_as_written"))
def test_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    steps = plan(page)
    if not steps:
        return
    (tmp_path / "shared").mkdir()
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(tmp_path / "steps.json")],
        cwd=work,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT,
    )
    assert done.returncode == 0, f"{_rel(page)}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"


def test_page_runner_refuses_an_unknown_fence(tmp_path: Path) -> None:
    """The guard itself: a bare fence, or a new language, is never skipped silently."""
    page = tmp_path / "page.md"
    for fence in ("```", "```javascript"):
        page.write_text(f"# t\n{fence}\nprint(1)\n```\n")
        with pytest.raises(AssertionError, match="fence language"):
            plan(page)


def test_page_runner_refuses_a_file_nothing_runs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('```python title="train.py"\nprint(1)\n```\n```sh\necho no\n```\n')
    with pytest.raises(AssertionError, match="no later block runs it"):
        plan(page)


def test_every_dedicated_block_exists_and_has_its_test() -> None:
    for (page, marker), test in DEDICATED.items():
        block = dedicated_block(page, marker)
        assert callable(globals().get(test)), f"{block.where}: no test named {test}"


# -- install lines ---------------------------------------------------------------------------
_PIP_INSTALL = re.compile(r"pip install[^`\n]*")


def _installs_a_path(cmd: str) -> bool:
    """``pip install [options] REQ``: REQ is the checkout or a wheel file, never an index name."""
    args = shlex.split(cmd)[2:]
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("--find-links", "-f"):
            args.pop(0)
    return bool(args) and args[0].startswith((".", "$(echo dist/", "dist/"))


@pytest.mark.parametrize("page", _page_params("test_no_page_installs_from_the_index"))
def test_no_page_installs_from_the_index(page: Path) -> None:
    """Every ``pip install`` a page mentions (in a block or in the text) is one of the lines
    tests/test_install.py runs, and installs the checkout or a wheel, never a name."""
    tested = install_lines()
    text = page.read_text()
    for m in _PIP_INSTALL.finditer(text):
        cmd = m[0].split("  #")[0].strip()
        where = f"{_rel(page)}:{text.count(chr(10), 0, m.start()) + 1}"
        assert cmd in tested, f"{where}: {cmd!r} is not one of the tested install lines {tested}"
        assert _installs_a_path(cmd), f"{where}: {cmd!r} installs a name from the index"


def test_install_hints_in_the_code_name_packages_that_exist() -> None:
    """An error that says how to install something never names this project on the index."""
    for path in sorted((REPO / "localrun").rglob("*.py")):
        for n, text in enumerate(path.read_text().splitlines(), 1):
            for m in re.finditer(r"pip install ([^\"\n]*)", text):
                names = [a.strip("'") for a in m[1].split() if not a.startswith("-")]
                bad = [a for a in names if a.startswith("localrun")]
                assert not bad, f"{path.relative_to(REPO)}:{n}: {m[0]}"


def test_install_blocks_are_found() -> None:
    lines = install_lines()
    assert "make dist" in lines
    assert any(".whl" in line and line.startswith("pip install") for line in lines)
    assert any(line.startswith("pip install -e ") for line in lines)


# -- the SLURM recipe ------------------------------------------------------------------------
# A training process the recipe's `srun python train.py` starts: it logs until it is stopped.
_TRAIN = """
import os, time
from pathlib import Path
import localrun

run = localrun.init(project="p")          # job.sh sets LOCALRUN_RESUME=auto: keyed by the job id
epochs = int(os.environ.get("EPOCHS", "1000000"))
for epoch in range(run.step, epochs):
    run.log({"loss": 1.0 / (epoch + 1)}, step=epoch, commit=True)
    if epoch == run.starting_step + 5:
        run.flush()
        Path("ready").write_text(f"{os.getpid()} {run.attempt} {run.id} {epoch}")
    time.sleep(0.005)
run.finish()
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait(what: str, ok: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class _Job:
    """``bash job.sh`` started the way slurmd starts a batch job: its own process group (as a
    job's cgroup holds all its processes), SLURM_JOB_ID set, srun and scontrol on PATH."""

    def __init__(self, tmp: Path, script: str) -> None:
        self.dir = tmp / "job"
        self.dir.mkdir()
        (self.dir / "job.sh").write_text(script)
        (self.dir / "train.py").write_text(_TRAIN)
        bin_ = tmp / "bin"
        bin_.mkdir()
        _exe(bin_ / "srun", '#!/bin/sh\n"$@"\n')  # runs its task as a child, as a job step
        _exe(bin_ / "scontrol", '#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
        self.scontrol = tmp / "scontrol.log"
        self.scontrol.touch()
        self.root = tmp / "runs"
        self.env = child_env(self.root, SLURM_JOB_ID="4242", SCONTROL_LOG=str(self.scontrol))
        self.env["PATH"] = os.pathsep.join(
            [str(bin_), str(Path(sys.executable).parent), self.env["PATH"]]
        )
        self.ready = self.dir / "ready"
        self.groups: list[int] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, **extra: str) -> subprocess.Popen[str]:
        self.ready.unlink(missing_ok=True)
        with open(self.dir / "job.log", "a") as out:
            self.proc = track(
                subprocess.Popen(
                    ["bash", "job.sh"],
                    cwd=self.dir,
                    env={**self.env, **extra},
                    start_new_session=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        self.groups.append(self.proc.pid)
        return self.proc

    def started(self) -> tuple[int, int, str, int]:
        """Wait until train.py has logged and flushed: (pid, attempt, run id, flushed step)."""
        proc = self.proc
        assert proc is not None
        _wait("train.py to log and flush", lambda: self.ready.exists() or proc.poll() is not None)
        assert self.ready.exists(), self.output()
        pid, attempt, run_id, step = self.ready.read_text().split()
        return int(pid), int(attempt), run_id, int(step)

    def output(self) -> str:
        return (self.dir / "job.log").read_text()[-4000:]

    def kill_all(self) -> None:
        """A failed test leaves no orphaned train.py behind (it outlives its batch shell)."""
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


@pytest.fixture
def slurm_job(tmp_path: Path):
    job = _Job(tmp_path, dedicated_block("docs/resuming.md", "#SBATCH").code)
    yield job
    job.kill_all()


@pytest.mark.slow
def test_slurm_recipe_delivers_sigterm_to_the_training_process(slurm_job: _Job) -> None:
    """The recipe's job.sh, with stand-ins for srun and scontrol, signalled the ways SLURM does:
    its --signal before the time limit, then preemption (every process of the job), then the
    requeued job resumes and finishes the same run."""
    job = slurm_job
    script = (job.dir / "job.sh").read_text()

    # 1. Before the time limit, --signal as the script asks: with B: to the batch shell only,
    #    without it to the job steps (what srun started: python), not to the batch shell.
    directive = re.search(r"^#SBATCH .*--signal=(B:|R:)?(\w+)@\d+", script, re.M)
    assert directive, "the recipe asks for no signal before the time limit"
    signum = signal.Signals[f"SIG{directive[2]}"]
    proc = job.start()
    pid, attempt, run_id, flushed = job.started()
    assert attempt == 1
    os.kill(proc.pid if directive[1] == "B:" else pid, signum)
    assert proc.wait(timeout=60) == 143, job.output()
    _wait("train.py to exit", lambda: _gone(pid))
    stored = localrun.Api(job.root).run(f"p/{run_id}")
    assert [(a["state"], a["exit_code"]) for a in stored.attempts] == [("preempted", 143)]
    assert stored.last_step >= flushed
    assert job.scontrol.read_text() == "requeue 4242\n"  # the batch shell lived to requeue

    # 2. The requeued job (same job id) resumes the run; then it is preempted: SIGCONT and
    #    SIGTERM to every process of the job, the batch shell included.
    proc = job.start()
    pid, attempt, again, _ = job.started()
    assert (attempt, again) == (2, run_id)
    os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM, job.output()  # SLURM itself requeues
    _wait("train.py to exit", lambda: _gone(pid))
    stored.refresh()
    assert [(a["state"], a["exit_code"]) for a in stored.attempts] == [("preempted", 143)] * 2
    assert job.scontrol.read_text() == "requeue 4242\n"

    # 3. SLURM's requeue starts the job again: it resumes the same run and finishes it.
    end = stored.last_step + 10
    proc = job.start(EPOCHS=str(end))
    assert proc.wait(timeout=120) == 0, job.output()
    stored.refresh()
    assert [a["state"] for a in stored.attempts] == ["preempted", "preempted", "finished"]
    assert stored.last_step == end - 1
    assert job.scontrol.read_text() == "requeue 4242\n"


# -- format.md: the reading recipes, against runs with a rewind --------------------------------
def _block(doc: str, lang: str, contains: str) -> str:
    for block in re.findall(rf"```{lang}\n(.*?)```", (DOCS / doc).read_text(), re.S):
        if contains in block:
            return block
    raise AssertionError(f"no {lang} block with {contains!r} in {doc}")


def duckdb_recipe(ordered: bool = False) -> str:
    """The DuckDB query of format.md; ``ordered``: with its commented ``ORDER BY`` line in
    force, as the doc tells a reader to do when rows must come in step order."""
    sql = _block("format.md", "sql", "read_parquet")
    line = next(x for x in sql.splitlines() if x.startswith("-- ORDER BY"))
    return sql.replace(line, line[3:].split("--")[0]) if ordered else sql


def _make_runs(root: Path) -> None:
    for rid, offset in (("a", 0.0), ("b", 100.0)):
        with localrun.init(project="p", id=rid, dir=root) as run:
            for i in range(10):
                run.log({"loss": offset + i})
            run.flush()
            run.rewind(4)  # steps 5..9 of the first flush become hidden
            for i in range(5, 8):
                run.log({"loss": -i - offset, "extra": "x"})


def test_duckdb_query_in_format_md_applies_manifests(tmp_path: Path) -> None:
    _make_runs(tmp_path / "localruns")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rows = duckdb.sql(duckdb_recipe()).fetchall()
        ordered = duckdb.sql(duckdb_recipe(ordered=True)).fetchall()
    finally:
        os.chdir(cwd)
    expected = []
    for rid, offset in (("a", 0.0), ("b", 100.0)):
        expected += [("p", rid, i, offset + i) for i in range(5)]
        expected += [("p", rid, i, -i - offset) for i in range(5, 8)]
    assert sorted(rows) == expected  # the same rows, in no promised order
    assert ordered == expected  # its ORDER BY line: in step order
    # and localrun's own reader agrees
    table = localrun.Api(tmp_path / "localruns").run("p/b").history(["loss"])
    assert table.column("loss").to_pylist() == [r[3] for r in expected if r[1] == "b"]


def test_pyarrow_recipe_in_format_md(tmp_path: Path) -> None:
    root = tmp_path / "localruns"
    with localrun.init(project="mnist", id="exp-42", dir=root, flush_interval=3600) as run:
        run.log({"loss": 1.0})
        run.flush()
        run.log({"acc": 0.5})
    code = _block("format.md", "python", "concat_tables")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict[str, object] = {"json": json, "pq": pq, "pa": pa}
        exec(code, scope)
    finally:
        os.chdir(cwd)
    table = scope["table"]
    assert isinstance(table, pa.Table)
    assert table.column("loss").to_pylist() == [1.0, None]
    assert table.column("acc").to_pylist() == [None, 0.5]


def test_readme_opens_with_the_two_commands() -> None:
    head = (DOCS.parent / "README.md").read_text().split("```python")[0]
    assert "make demo" in head and "make test" in head
