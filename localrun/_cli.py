"""The ``localrun`` command line, built on the public API only (click parses, rich draws).

Every error from the LocalrunError tree becomes one line on stderr and the exit code its class
carries, so scripts can branch on "not found" (3) or "in use" (5) without parsing text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

try:
    import click

    if importlib.util.find_spec("rich") is None:  # imported where a table is drawn (~50 ms)
        raise ModuleNotFoundError("No module named 'rich'", name="rich")
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    print(
        f"localrun: the command line needs the 'cli' extra ({exc.name} is missing): "
        "pip install 'click>=8.1' 'rich>=13'",
        file=sys.stderr,
    )
    raise SystemExit(2) from None

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

import localrun

F = TypeVar("F", bound=Callable[..., Any])
RETRY_CODES = (128 + signal.SIGKILL, 128 + signal.SIGTERM)
# Piped output is read by scripts and grep: never cut an id to fit a pretend 80-column screen.
PIPE_WIDTH = 10_000


def _emit_rows(
    rows: list[dict[str, Any]], as_json: bool, what: str, project: str | None, root: object
) -> Console | None:
    """Print ``rows`` as JSON, or say there are none; else the console to draw the table on."""
    if as_json:
        _emit_json(rows)
        return None
    out = _console()
    if not rows:
        where = f"in project {project} under" if project else "under"
        out.print(f"no {what} {where} {root}", highlight=False)
        return None
    return out


def _console() -> Console:
    """A console for this command's stdout: the terminal's width there, else unbounded.

    Made per command, not at import, because the stdout (and whether it is a terminal) is only
    known then.
    """
    from rich.console import Console

    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def _table(*columns: str, title: str | None = None) -> Table:
    """A table whose cells wrap onto more lines in a narrow terminal instead of ending in "…"
    (a cut run id or state cannot be told apart from another)."""
    from rich.table import Table

    table = Table(title=title)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ts).strftime(fmt) if ts else "-"


def _short(ts: float | None) -> str:
    """Month-day and time: fits an attempts table in an 80-column terminal."""
    return _when(ts, "%m-%d %H:%M:%S")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


def _set_root(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["root"] = value


def _root_option(f: F) -> F:
    """``--root`` after the subcommand too (``localrun ls --root R``); it wins over one given
    before it, which wins over ``LOCALRUN_DIR``."""
    return click.option(
        "--root",
        default=None,
        expose_value=False,
        callback=_set_root,
        help="The runs' root folder (default: $LOCALRUN_DIR, else ./localruns).",
    )(f)


def _api(ctx: click.Context, target: str | None = None, *, check: bool = True) -> localrun.Api:
    """The API on the chosen root; with ``check``, a missing or foreign root, project
    (``target``) or run (``target`` = project/run_id) is an error, not an empty listing."""
    api = localrun.Api(ctx.obj["root"])
    if check:
        api.check(target)
    return api


def _run_api(ctx: click.Context, run: str) -> localrun.StoredRun:
    """RUN (project/run_id), after the root and the project are checked."""
    if "/" not in run:
        raise localrun.UsageError(f"run path {run!r} must look like 'project/run_id'")
    return _api(ctx, run).run(run)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    envvar="LOCALRUN_DIR",
    default=None,
    help="The runs' root folder (default: $LOCALRUN_DIR, else ./localruns).",
)
@click.version_option(localrun.__version__, prog_name="localrun")
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """localrun: experiment runs on a plain (shared) filesystem, with crash-safe resume."""
    ctx.obj = {"root": root}


def _run_row(r: localrun.StoredRun) -> dict[str, Any]:
    return {
        "path": r.path,
        "name": r.name,
        "state": r.state,
        "steps": r.last_step + 1,
        "attempts": len(r.attempts),
        "updated": r.updated,
        "host": r.host,
        "heartbeat_age": r.heartbeat_age,
    }


def _damaged_row(d: localrun.DamagedRun) -> dict[str, Any]:
    """A damaged run in the shape of a run row (unknown fields None), plus its problem."""
    return {
        "path": d.path,
        "name": d.id,
        "state": "damaged",
        "steps": None,
        "attempts": None,
        "updated": None,
        "host": None,
        "heartbeat_age": None,
        "problem": d.problem,
    }


@cli.command("ls")
@click.argument("project", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_root_option
@click.pass_context
def ls_cmd(ctx: click.Context, project: str | None, as_json: bool) -> None:
    """List runs (of PROJECT, or of every project) with state, steps, last update and host.

    A run whose manifest cannot be read is listed as damaged, with the reason.
    """
    if project and "/" in project:
        raise localrun.UsageError(
            f"ls takes a project, not {project!r}; `localrun show {project}` shows one run"
        )
    api = _api(ctx, project)
    runs, damaged_runs = api.runs_and_damaged(project)
    rows = [_run_row(r) for r in runs] + [_damaged_row(d) for d in damaged_runs]
    if as_json or not rows:
        _emit_rows(rows, as_json, "runs", project, api.location)
        return
    damaged = [row for row in rows if row["state"] == "damaged"]
    columns = ["run", "state", "steps", "attempts", "updated", "host"]
    cells = []
    for row in rows:
        line = [
            row["path"],
            row["state"],
            _dash(row["steps"]),
            _dash(row["attempts"]),
            _when(row["updated"]),
            row["host"] or "-",
        ]
        if damaged:
            line.append(row.get("problem", "").split("; ")[0] or "-")
        cells.append(line)
    _print_table([*columns, *(["problem"] if damaged else [])], cells)
    if damaged:
        click.echo(
            f"{len(damaged)} damaged run(s): `localrun verify RUN` says what is wrong, "
            "`localrun verify --repair RUN` rebuilds what it can"
        )


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    """Draw a table as rich draws ``_table``'s, but written directly when no cell needs to
    wrap: rich lays out 10,000 rows in seconds, longer than listing them takes. In a terminal
    too narrow for the table, rich draws it (cells fold, never cut)."""
    widths = [max(_cell_len(c) for c in col) for col in zip(columns, *rows, strict=True)]
    tty = sys.stdout.isatty()
    too_wide = tty and sum(widths) + 3 * len(widths) + 1 > shutil.get_terminal_size().columns
    if too_wide or not all(c.isprintable() for row in rows for c in row):
        table = _table(*columns)
        for row in rows:
            table.add_row(*row)
        _console().print(table)
        return
    bold = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    head = [
        f"\x1b[1m{c}\x1b[0m{' ' * (w - _cell_len(c))}" if bold else _pad(c, w)
        for c, w in zip(columns, widths, strict=True)
    ]
    lines = [
        "┏━" + "━┳━".join("━" * w for w in widths) + "━┓",
        "┃ " + " ┃ ".join(head) + " ┃",
        "┡━" + "━╇━".join("━" * w for w in widths) + "━┩",
        *("│ " + " │ ".join(map(_pad, row, widths)) + " │" for row in rows),
        "└─" + "─┴─".join("─" * w for w in widths) + "─┘",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _cell_len(text: str) -> int:
    """Columns ``text`` takes in a terminal (wide characters take two)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _cell_len(text))


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


@cli.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@_root_option
@click.pass_context
def show_cmd(ctx: click.Context, run: str, as_json: bool) -> None:
    """Show RUN (project/run_id): state, attempts, rewinds, saved files, config, summary."""
    r = _run_api(ctx, run)
    if as_json:
        _emit_json(r.manifest)
        return
    out = _console()
    out.print(
        f"[bold]{r.path}[/bold]  name={r.name}  state={r.state}  steps={r.last_step + 1}  "
        f"created={_when(r.created)}  updated={_when(r.updated)}"
    )
    for label, value in (
        ("notes", r.notes),
        ("tags", ", ".join(r.tags)),
        ("group", r.group),
        ("job_type", r.job_type),
    ):
        if value:
            out.print(f"{label}: {value}")
    if r.dropped_steps:
        out.print(f"dropped steps (logged below the current step): {r.dropped_steps}")
    attempts = _table(
        "attempt",
        "host",
        "pid",
        "started",
        "ended",
        "start step",
        "state",
        "exit",
        title="attempts",
    )
    for a in r.attempts:
        attempts.add_row(
            str(a["attempt"]),
            str(a.get("host") or "-"),
            str(a.get("pid") or "-"),
            _short(a.get("started")),
            _short(a.get("ended")),
            str(a.get("start_step")),
            a.get("state") or "-",
            "-" if a.get("exit_code") is None else str(a["exit_code"]),
        )
    out.print(attempts)
    _show_context(out, r)
    _show_rewinds(out, r)
    _show_files(out, r)
    for title, data in (("config", r.config), ("summary (last values)", r.summary)):
        table = _table("key", "value", title=title)
        for k in sorted(data):
            table.add_row(k, repr(data[k]))
        out.print(table)


def _show_context(out: Console, r: localrun.StoredRun) -> None:
    """Where each attempt ran: what to check first when a curve surprises (the diff itself is
    the blob named by diff_file in --json)."""
    table = _table("attempt", "git", "command", "python", "packages", "job", title="context")
    for a in r.attempts:
        ctx = a.get("context")
        if not isinstance(ctx, dict):
            continue
        git = ctx.get("git") or {}
        where = (
            f"{str(git.get('commit', ''))[:10]} {git.get('branch') or '(detached)'}"
            + (" +dirty" if git.get("dirty") else "")
            if git
            else "-"
        )
        job = ctx.get("job") or {}
        table.add_row(
            str(a["attempt"]),
            where,
            " ".join(map(str, ctx.get("argv") or [])) or "-",
            str(ctx.get("python") or "-"),
            ", ".join(f"{k} {v}" for k, v in (ctx.get("packages") or {}).items()) or "-",
            f"{job.get('scheduler')} {job.get('id')}" if job else "-",
        )
    if table.row_count:
        out.print(table)


def _show_rewinds(out: Console, r: localrun.StoredRun) -> None:
    """Each rewind hides the rows logged before it above its step (history shows them with
    --all-attempts); without this, a resumed attempt's start step looks like a gap."""
    rewinds = r.manifest.get("rewinds") or []
    if not rewinds:
        out.print("rewinds: none")
        return
    table = _table("attempt", "seq", "step", title="rewinds (rows above step hidden)")
    for rw in rewinds:
        table.add_row(str(rw.get("attempt")), str(rw.get("seq")), str(rw.get("step")))
    out.print(table)


def _show_files(out: Console, r: localrun.StoredRun) -> None:
    files = r.files()
    if not files:
        out.print("saved files: none")
        return
    table = _table("file", "versions", "size", "latest", "saved", "attempt", title="saved files")
    for name, latest in files.items():
        table.add_row(
            name,
            str(latest["versions"]),
            _size(latest.get("size")),
            str(latest.get("version") or "-"),
            _short(latest.get("saved")),
            _dash(latest.get("attempt")),
        )
    out.print(table)


@cli.command("logs")
@click.argument("run")
@click.option("--attempt", type=int, help="Only this attempt's output.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the run ends.")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between polls."
)
@_root_option
@click.pass_context
def logs_cmd(
    ctx: click.Context, run: str, attempt: int | None, follow: bool, interval: float
) -> None:
    """Print RUN's captured stdout and stderr, a header before each attempt's output."""
    r = _run_api(ctx, run)
    shown: set[str] = set()
    while True:
        for text in r.console_texts(attempt, shown):
            click.echo(text, nl=False)
        sys.stdout.flush()
        if not follow or r.state != "running":
            return
        time.sleep(interval)
        r.refresh()


@cli.command("history")
@click.argument("run")
@click.option("--keys", "-k", multiple=True, help="Keys to print (repeat, or comma-separate).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default="-",
    help="File to write (default: stdout; parquet needs a file).",
)
@click.option("--all-attempts", is_flag=True, help="Include rows a rewind hides, with _attempt.")
@_root_option
@click.pass_context
def history_cmd(
    ctx: click.Context, run: str, keys: Sequence[str], fmt: str, output: str, all_attempts: bool
) -> None:
    """Print RUN's logged rows as CSV, JSON lines or Parquet."""
    wanted = [k for group in keys for k in group.split(",") if k] or None
    table = _run_api(ctx, run).history(wanted, all_attempts=all_attempts)
    if fmt == "parquet":
        if output == "-":
            raise localrun.UsageError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        return
    stream = sys.stdout if output == "-" else open(output, "w", newline="")  # noqa: SIM115
    try:
        if fmt == "json":
            for row in table.to_pylist():
                stream.write(json.dumps(row, default=str) + "\n")
        else:
            import csv

            writer = csv.writer(stream)
            writer.writerow(table.column_names)
            for row in table.to_pylist():
                writer.writerow(["" if v is None else v for v in row.values()])
    finally:
        if stream is not sys.stdout:
            stream.close()


@cli.command("verify")
@click.argument("target", required=False)
@click.option("--repair", is_flag=True, help="Rebuild, adopt, quarantine and clean what is found.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_root_option
@click.pass_context
def verify_cmd(ctx: click.Context, target: str | None, repair: bool, as_json: bool) -> None:
    """Check runs (all, a PROJECT, or project/run_id) against their manifests.

    Exits 1 when a problem remains (after --repair: one it could not mend).
    """
    api = _api(ctx, target)
    reports = api.verify(target, repair=repair)
    if as_json:
        _emit_json([r.as_dict() for r in reports])
    else:
        out = _console()
        for r in reports:
            status = "ok" if r.ok else ("repaired" if r.repaired else "PROBLEMS")
            out.print(f"{r.run}: {status}")
            for p in r.problems:
                out.print(f"  problem: {p}", highlight=False)
            for p in r.repaired:
                out.print(f"  repaired: {p}", highlight=False)
        out.print(f"{len(reports)} run(s) checked")
    if repair:
        unmended = [r for r in api.verify(target, repair=False) if not r.ok]
        if unmended:
            sys.exit(1)
    elif any(not r.ok for r in reports):
        sys.exit(1)


@cli.group("markers", invoke_without_command=True)
@click.option("--project", default=None, help="Only this project's markers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_root_option
@click.pass_context
def markers_cmd(ctx: click.Context, project: str | None, as_json: bool) -> None:
    """List auto-resume markers: which job (key) resumes which run at its next start.

    init(resume=True) writes one per job and project; a clean finish removes it. Clear one
    (`localrun markers clear KEY`) to make that job's next start a new run.
    """
    if ctx.invoked_subcommand is not None:
        return
    api = _api(ctx, project)
    rows = [_marker_row(api, m) for m in api.resume_markers(project)]
    out = _emit_rows(rows, as_json, "resume markers", project, api.location)
    if out is None:
        return
    table = _table("project", "key", "run", "run state", "written")
    for row in rows:
        table.add_row(
            row["project"], row["key"], row["run_id"] or "-", row["state"], _when(row["written"])
        )
    out.print(table)


def _marker_row(api: localrun.Api, m: localrun.ResumeMarker) -> dict[str, Any]:
    return {
        "project": m.project,
        "key": m.key,
        "run_id": m.run_id,
        "written": m.written,
        "state": _marker_run_state(api, m),
        "file": str(m.file),
    }


def _marker_run_state(api: localrun.Api, m: localrun.ResumeMarker) -> str:
    """The state of the run a marker names: "unreadable" marker, "missing" run (the next start
    makes a new run), "damaged" run, or the run's own state."""
    if m.run_id is None:
        return "unreadable"
    try:
        return str(api.run(f"{m.project}/{m.run_id}").state)
    except localrun.RunNotFoundError:
        return "missing"
    except localrun.LocalrunError:
        return "damaged"


@markers_cmd.command("clear")
@click.argument("key", required=False)
@click.option("--all", "clear_all", is_flag=True, help="Clear every marker (of --project).")
@click.option(
    "--current",
    is_flag=True,
    help="Clear this shell's job's markers (its scheduler job id or LOCALRUN_RESUME_KEY).",
)
@click.option("--project", default=None, help="Only in this project.")
@_root_option
@click.pass_context
def markers_clear_cmd(
    ctx: click.Context, key: str | None, clear_all: bool, current: bool, project: str | None
) -> None:
    """Clear the auto-resume marker KEY (in every project, or --project's), --all of them, or
    --current: the job's next init(resume=True) starts a new run. Runs are not touched."""
    if sum((key is not None, clear_all, current)) != 1:
        raise localrun.UsageError(
            "markers clear needs exactly one of KEY, --all or --current "
            "(`localrun markers` lists the keys)"
        )
    if project is None and ctx.parent is not None:
        project = ctx.parent.params.get("project")  # `localrun markers --project P clear ...`
    if current:
        key = localrun.Api.current_job_key()
        if key is None:
            raise localrun.UsageError(
                "this shell has no scheduler job id or LOCALRUN_RESUME_KEY, so its job key "
                "depends on the training script; pick the key from `localrun markers`"
            )
    api = _api(ctx, project)
    markers = api.resume_markers(project)
    chosen = markers if clear_all else [m for m in markers if m.key == key]
    if key is not None and not chosen:
        where = f"project {project!r}" if project else "any project"
        keys = sorted({m.key for m in markers})
        raise localrun.RunNotFoundError(
            f"no resume marker {key!r} in {where} under {api.location}; "
            + (f"the markers there: {', '.join(keys)}" if keys else "there are none")
        )
    for m in chosen:
        api.clear_resume_marker(m.project, m.key)
        named = f"it named run {m.run_id}" if m.run_id else "it was unreadable"
        click.echo(
            f"cleared marker {m.project}/{m.key} ({named}); that job's next start makes a new run"
        )
    if not chosen:
        click.echo("no resume markers to clear")


@cli.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option(
    "--resume",
    type=click.Choice(["never", "allow", "must", "auto"]),
    default=None,
    help="Sets LOCALRUN_RESUME for the command.",
)
@click.option("--id", "run_id", default=None, help="Sets LOCALRUN_RUN_ID.")
@click.option("--project", default=None, help="Sets LOCALRUN_PROJECT.")
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Relaunch a command killed by a signal (or exiting 137/143), resuming its run.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_root_option
@click.pass_context
def run_cmd(
    ctx: click.Context,
    resume: str | None,
    run_id: str | None,
    project: str | None,
    retries: int,
    command: Sequence[str],
) -> None:
    """Run COMMAND with the run's variables set, forwarding signals and its exit code.

    Example: localrun run --resume allow --id abc123 --retries 3 -- python train.py
    """
    env = dict(os.environ)
    if ctx.obj["root"]:
        env["LOCALRUN_DIR"] = ctx.obj["root"]
    if project:
        env["LOCALRUN_PROJECT"] = project
    mode = resume or env.get("LOCALRUN_RESUME") or "never"
    run_id = run_id or env.get("LOCALRUN_RUN_ID")
    if mode == "must" and not run_id:
        raise localrun.UsageError("--resume must needs --id (or LOCALRUN_RUN_ID): which run?")
    if retries and mode != "auto" and not run_id:
        run_id = localrun.util.generate_id()  # the relaunches must find the same run
    if run_id:
        env["LOCALRUN_RUN_ID"] = run_id
    env["LOCALRUN_RESUME"] = mode
    launch = 0
    while True:
        launch += 1
        code, stopped = _run_forwarding(list(command), env)
        if code not in RETRY_CODES or stopped or launch > retries:
            sys.exit(code)
        if mode != "auto":
            env["LOCALRUN_RESUME"] = "allow" if mode == "never" else mode
        click.echo(
            f"localrun run: the command ended with {code} (killed or preempted); "
            f"relaunching ({launch} of {retries}) to resume run {run_id or '(auto)'}",
            err=True,
        )


def _run_forwarding(command: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run ``command``; forward TERM/INT/HUP/USR1/USR2 to it. Returns (exit code, told to stop).

    The child gets its own process group, so a terminal's Ctrl-C reaches it once, through us.
    """
    try:
        child = subprocess.Popen(command, env=env, start_new_session=True)
    except OSError as exc:
        raise localrun.UsageError(f"cannot start {command[0]!r}: {exc.strerror}") from None
    stopped = False
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopped
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            stopped = True
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in forwarded}
    try:
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return (128 - rc if rc < 0 else rc), stopped


@cli.command("demo")
@click.option("--steps", type=click.IntRange(10), default=60, show_default=True)
@_root_option
@click.pass_context
def demo_cmd(ctx: click.Context, steps: int) -> None:
    """The preemption story: train, get killed (SIGKILL), resume, show the attempts."""
    api = _api(ctx, check=False)  # the demo makes its root
    out = _console()
    run_id = localrun.util.generate_id()
    env = dict(
        os.environ,
        LOCALRUN_RESUME="allow",
        LOCALRUN_RUN_ID=run_id,
        LOCALRUN_PROJECT="demo",
        LOCALRUN_DIR=str(api.root),
    )
    train = [sys.executable, "-m", "localrun._demo", "--steps", str(steps)]
    out.print(f"[bold]1. Training[/bold] run demo/{run_id} in a child process (root {api.root})")
    child = subprocess.Popen(train, env=env)
    kill_at = steps // 3
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if api.run(f"demo/{run_id}").last_step >= kill_at:
                break
        except localrun.RunNotFoundError:
            pass
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = api.run(f"demo/{run_id}").last_step
    out.print(
        f"[bold red]2. The node is preempted[/bold red]: SIGKILL, last committed step {killed_at}"
    )
    out.print("[bold]3. The job is requeued[/bold]: the same command, resume='allow', same id")
    rc = subprocess.call(train, env=env)
    if rc != 0:
        raise localrun.LocalrunError(f"the resumed training exited with {rc}")
    out.print("[bold]4. The run, as stored[/bold]")
    ctx.invoke(show_cmd, run=f"demo/{run_id}", as_json=False)
    table = api.run(f"demo/{run_id}").history(["loss", "acc"])
    steps_seen = table.column("_step").to_pylist()
    out.print(
        f"history: {table.num_rows} rows, steps {steps_seen[0]}..{steps_seen[-1]}, "
        f"each step once: {len(set(steps_seen)) == len(steps_seen)}"
    )
    out.print(f"Try: localrun --root {api.root} history demo/{run_id} -k loss | tail")
    out.print(
        f"Look at it: localrun --root {api.root} ui, then open http://127.0.0.1:8766/runs/demo/"
        f"{run_id} (the resume point is drawn on its charts)"
    )


@cli.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@_root_option
@click.pass_context
def server_cmd(ctx: click.Context, host: str, port: int) -> None:
    """Receive pushes (`localrun sync --to http://HOST:PORT`) into the root, over HTTP.

    Token: LOCALRUN_TOKEN or LOCALRUN_TOKEN_FILE (required unless HOST is loopback)."""
    from localrun import _settings

    try:
        from localrun._server.app import serve
    except ImportError as exc:
        raise localrun.UsageError(
            f"localrun server needs the 'server' extra ({exc.name} is missing): from a "
            "checkout, pip install '.[server]'"
        ) from None
    serve(_settings.root(ctx.obj["root"]), host, port, _settings.token())


@cli.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback needs LOCALRUN_TOKEN.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True)
@_root_option
@click.pass_context
def ui_cmd(ctx: click.Context, host: str, port: int) -> None:
    """Look at the runs of the root in a browser (read-only; docs/ui.md).

    From another machine: ssh -L 8766:127.0.0.1:8766 THIS-HOST, then open
    http://127.0.0.1:8766/ there."""
    from localrun import _settings

    try:
        from localrun._server.app import serve
    except ImportError as exc:
        raise localrun.UsageError(
            f"localrun ui needs the 'server' extra ({exc.name} is missing): from a "
            "checkout, pip install '.[server]'"
        ) from None
    serve(_settings.root(ctx.obj["root"]), host, port, _settings.token(), pushes=False)


# -- sync -------------------------------------------------------------------------------------


def _sync_root(ctx: click.Context) -> Any:
    """The root sync reads (checked like every reader's) as a Path."""
    return _api(ctx).root


def _remote_urls(root: Any, to: tuple[str, ...]) -> list[str]:
    """The URLs of ``--to`` (URLs or names), else every named remote of the root."""
    from localrun._sync import urls

    if to:
        return list(dict.fromkeys(urls.resolve(t, root) for t in to))
    named = urls.load_remotes(root)
    if not named:
        raise localrun.UsageError(
            f"no remote to sync to: pass --to URL (or NAME), or name one for this root with "
            f"`localrun remote add NAME URL` (root: {root})"
        )
    return list(dict.fromkeys(named.values()))


class _Bar:
    """The rich progress bar of a one-shot sync: runs done, bytes sent."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def advance(self, nbytes: int) -> None:
        self.progress.update(self.task, sent=self.progress.tasks[0].fields["sent"] + nbytes)


@cli.command("sync")
@click.argument("target", required=False)
@click.option("--to", "to", multiple=True, help="A remote URL or NAME (repeat for several).")
@click.option("--all", "all_runs", is_flag=True, help="Every run of the root (the default).")
@click.option("--watch", is_flag=True, help="Keep pushing changes until SIGTERM (the daemon).")
@click.option("--status", "show_status", is_flag=True, help="Show what each remote lacks.")
@click.option(
    "--poll",
    type=click.FloatRange(0.05),
    default=2.0,
    show_default=True,
    help="--watch: seconds between polls of every run's newest revision.",
)
@click.option("--json", "as_json", is_flag=True, help="--status: print JSON for scripts.")
@_root_option
@click.pass_context
def sync_cmd(
    ctx: click.Context,
    target: str | None,
    to: tuple[str, ...],
    all_runs: bool,
    watch: bool,
    show_status: bool,
    poll: float,
    as_json: bool,
) -> None:
    """Push runs to remotes: TARGET is project/run_id, a project, or (default, --all) every run.

    Idempotent and safe to kill at any instant; never changes local data. The token for a
    localrun server or MLflow comes from LOCALRUN_TOKEN or LOCALRUN_TOKEN_FILE.
    """
    from localrun._sync import engine, urls

    if all_runs and target:
        raise localrun.UsageError("pass a TARGET (project or project/run_id) or --all, not both")
    root = _sync_root(ctx)
    if show_status:
        _sync_status(root, target, to, as_json)
        return
    targets = _remote_urls(root, to)
    for url in targets:
        urls.check_apart(url, root)
    runs = engine.select(root, target)
    if watch:
        _sync_watch(root, target, targets, poll)
        return
    code = 0
    for url in targets:
        code = max(code, _sync_once(root, url, runs))
    if code:
        sys.exit(code)


def _sync_once(root: Any, url: str, runs: list[Any]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from localrun._sync import engine, urls

    remote = urls.open_remote(url)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs, {task.fields[sent]:,} bytes sent"),
    )
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"sync to {url}", total=len(runs), sent=0)
            summary = engine.sync_pass(
                root,
                remote,
                runs,
                _Bar(progress, task),
                on_run=lambda _r: progress.advance(task),
            )
    finally:
        remote.close()
    for label, exc in summary.failed:
        click.echo(f"localrun: {label}: {exc}", err=True)
    click.echo(summary.line())
    return summary.exit_code


def _sync_watch(root: Any, target: str | None, targets: list[str], poll: float) -> None:
    from localrun._sync import daemon, engine, urls

    def say(text: str) -> None:
        click.echo(f"{datetime.now():%H:%M:%S} {text}", err=True)

    remotes = [urls.open_remote(u) for u in targets]
    daemon.Daemon(root, remotes, lambda: engine.select(root, target), poll=poll, say=say).run()


def _sync_status(root: Any, target: str | None, to: tuple[str, ...], as_json: bool) -> None:
    from localrun._sync import cursor, daemon, engine, urls

    if to:
        targets = [urls.resolve(t, root) for t in to]
    else:
        targets = list(
            dict.fromkeys([*urls.load_remotes(root).values(), *cursor.remotes_with_cursors(root)])
        )
    runs = engine.select(root, target)
    rows: list[dict[str, Any]] = [
        {
            "remote": s.remote,
            "run": s.run,
            "local_rev": s.local_rev,
            "pushed_rev": s.pushed_rev,
            "state": s.state,
        }
        for url in targets
        for s in engine.status(root, url, runs)
    ]
    daemons = {u: d for u in targets if (d := daemon.read_status(root, u)) is not None}
    if as_json:
        _emit_json({"runs": rows, "daemons": daemons})
        return
    out = _console()
    if not targets:
        out.print(f"no remotes for {root}: add one with `localrun remote add NAME URL`")
        return
    table = _table("remote", "run", "local rev", "pushed rev", "state")
    for row in rows:
        table.add_row(
            row["remote"],
            row["run"],
            _dash(row["local_rev"]),
            _dash(row["pushed_rev"]),
            row["state"],
        )
    out.print(table)
    for url in targets:
        pending = sum(1 for r in rows if r["remote"] == url and r["state"] != "up to date")
        line = f"{url}: {pending} of {len(runs)} runs pending"
        d = daemons.get(url)
        if d:
            line += f"; daemon pid {d.get('pid')} on {d.get('host')}: {d.get('state')}"
            if d.get("last_error"):
                line += f" ({d['last_error']})"
        out.print(line, highlight=False)


@cli.group("remote")
def remote_cmd() -> None:
    """Name remotes once for the root, so every node syncs alike (`sync --to NAME`)."""


@remote_cmd.command("add")
@click.argument("name")
@click.argument("url")
@_root_option
@click.pass_context
def remote_add_cmd(ctx: click.Context, name: str, url: str) -> None:
    """Name URL (file:///path, s3://bucket/prefix, http(s)://host:port, mlflow+http://...)."""
    from localrun._sync import urls

    root = _sync_root(ctx)
    urls.add_remote(root, name, url)
    click.echo(f"remote {name} -> {url}")


@remote_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_root_option
@click.pass_context
def remote_list_cmd(ctx: click.Context, as_json: bool) -> None:
    """The root's named remotes."""
    from localrun._sync import urls

    root = _sync_root(ctx)
    remotes = urls.load_remotes(root)
    if as_json:
        _emit_json(remotes)
        return
    if not remotes:
        click.echo(f"no named remotes under {root}")
    for name, url in sorted(remotes.items()):
        click.echo(f"{name}\t{url}")


@remote_cmd.command("remove")
@click.argument("name")
@_root_option
@click.pass_context
def remote_remove_cmd(ctx: click.Context, name: str) -> None:
    """Forget a named remote (nothing on the remote is touched)."""
    from localrun._sync import urls

    url = urls.remove_remote(_sync_root(ctx), name)
    click.echo(f"removed remote {name} ({url})")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI, turning localrun errors into one line and their exit code."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="localrun",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except localrun.LocalrunError as exc:
        click.echo(f"localrun: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a folder we may not read, a full disk: one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"localrun: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(localrun.StorageError.exit_code)


if __name__ == "__main__":
    main()
