"""Every LOCALRUN_* variable is read and validated in one place (localrun/_settings.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import localrun
from localrun import _settings
from tests.conftest import REPO, run_py

BAD = {
    "LOCALRUN_LOCK_TIMEOUT": "2m",
    "LOCALRUN_STALE_LOCK": "-1",
    "LOCALRUN_LOCK": "fcntl",
    "LOCALRUN_COMPACT_FANOUT": "1",
    "LOCALRUN_KEEP_REVISIONS": "0",
    "LOCALRUN_KEEP_VERSIONS": "many",
    "LOCALRUN_FLUSH_INTERVAL": "fast",
    "LOCALRUN_FLUSH_ROWS": "2.5",
    "LOCALRUN_LEASE_TTL": "0.1",
    "LOCALRUN_FORCE": "maybe",
    "LOCALRUN_RESUME": "sometimes",
    "LOCALRUN_WATCH": "inotify",
    "LOCALRUN_PROJECT": "x" * 65,
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_is_one_clear_error_naming_the_variable(
    name: str, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, BAD[name])
    with pytest.raises(localrun.UsageError) as info:
        localrun.init(project=None if name == "LOCALRUN_PROJECT" else "p", dir=root)
    text = str(info.value)
    assert name in text or "project name" in text, text
    assert localrun.run is None  # nothing started


def test_bad_values_never_break_import_and_never_hang(root: Path) -> None:
    """The two reported in the issue: a traceback at import, and flush() that never returned."""
    result = run_py(
        """
        import localrun  # must import whatever the variables say
        try:
            localrun.init(project="p")
        except localrun.UsageError as exc:
            print("refused:", exc)
        """,
        root,
        timeout=60,
        LOCALRUN_LOCK_TIMEOUT="2m",
        LOCALRUN_COMPACT_FANOUT="1",
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "LOCALRUN_" in result.stdout


def test_readers_validate_their_variables_too(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with localrun.init(project="p", id="r", dir=root):
        pass
    monkeypatch.setenv("LOCALRUN_LOCK_TIMEOUT", "soon")
    with pytest.raises(localrun.UsageError, match="LOCALRUN_LOCK_TIMEOUT"):
        localrun.Api(root).verify("p/r", repair=True)


def test_good_values_are_taken(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALRUN_COMPACT_FANOUT", "4")
    monkeypatch.setenv("LOCALRUN_LOCK", "strict")
    monkeypatch.setenv("LOCALRUN_LOCK_TIMEOUT", "1.5")
    monkeypatch.setenv("LOCALRUN_FORCE", "yes")
    with localrun.init(project="p", dir=root) as run:
        s = run.settings
        assert (s.compact_fanout, s.store.lock_kind, s.store.mutex_wait, s.force) == (
            4,
            "strict",
            1.5,
            True,
        )


def _environ_readers() -> dict[str, list[int]]:
    """Modules (and lines) that read os.environ or os.getenv."""
    found: dict[str, list[int]] = {}
    for path in sorted((REPO / "localrun").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                found.setdefault(str(path.relative_to(REPO)), []).append(node.lineno)
    return found


def test_only_the_settings_module_reads_localrun_variables() -> None:
    readers = _environ_readers()
    # _settings: every LOCALRUN_* variable and the scheduler's job ids (SLURM_JOB_ID...).
    # _cli: passes the environment on to the command it launches. The Lightning logger: the
    # launchers' rank variables, and the run id rank zero hands to the ranks DDP starts.
    lightning = "localrun/integrations/lightning.py"
    assert set(readers) <= {"localrun/_settings.py", "localrun/_cli.py", lightning}, readers
    for module in ("localrun/_cli.py", lightning):
        text = (REPO / module).read_text()
        reads = re.findall(
            r"environ(?:\.get)?\(\s*\"(LOCALRUN_\w+)\"|getenv\(\"(LOCALRUN_\w+)", text
        )
        assert not reads, (module, reads)
    assert "localrun/_store" not in " ".join(readers)  # the store takes its options as arguments


def test_every_documented_variable_is_known() -> None:
    documented = set()
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        documented |= set(re.findall(r"LOCALRUN_[A-Z_]+[A-Z]", page.read_text()))
    assert documented <= set(_settings.KNOWN), documented - set(_settings.KNOWN)
    in_code = set(
        re.findall(r"\"(LOCALRUN_[A-Z_]+)\"", (REPO / "localrun/_settings.py").read_text())
    )
    assert in_code <= set(_settings.KNOWN)
