"""The documented install lines work as written, in a fresh venv, from a copy of the checkout.

Each ``pip install`` line starts from a venv emptied of everything it installed before, so a
line passes only if it brings what it promises on its own (the wheel line its dependencies, the
air-gapped line everything from ``dist/wheels`` with no index). After each: the distribution
``localrun-tracker`` is installed at the project's version with its extras' dependencies,
``import localrun`` works from another folder, and ``localrun --help`` runs (or, without the
``cli`` extra, prints an install hint that works).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_docs import install_lines

pytestmark = [pytest.mark.slow, pytest.mark.install]

STEP_TIMEOUT = 900  # seconds per command: pip may download pyarrow on a slow link
KEEP = {"pip", "setuptools", "wheel"}  # what a new venv has

# Run by the venv's python: is the distribution installed, with what each asked-for extra needs?
_PROBE = r"""
import json, re, sys
from importlib import metadata
import localrun
extras = set(filter(None, sys.argv[1].split(",")))
missing = []
for req in metadata.requires("localrun-tracker") or []:
    name = re.match(r"[A-Za-z0-9_.-]+", req)[0]
    extra = re.search(r"extra == ['\"]([\w-]+)['\"]", req)
    if extra is None or extra[1] in extras:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(req)
print(json.dumps({"version": metadata.version("localrun-tracker"), "file": localrun.__file__,
                  "missing": missing}))
"""


def _copy_checkout(dest: Path) -> Path:
    """The checkout as a user has it: sources only, no venv, no build output."""
    skip = {".git", ".venv", "dist", "localruns", "__pycache__", ".pytest_cache", ".mypy_cache"}
    skip |= {".ruff_cache", ".hypothesis", "out"}
    shutil.copytree(REPO, dest, ignore=lambda _d, names: [n for n in names if n in skip])
    return dest


def _project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no version"
    return match[1]


class _Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent, env=os.environ.copy())
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
            and not k.startswith("LOCALRUN_")
        }
        # What `source venv/bin/activate` does.
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(path)
        self.env = env

    def sh(self, line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return _run(["bash", "-e", "-c", line], cwd=cwd, env=self.env)

    def empty(self) -> None:
        """Uninstall everything an earlier line installed."""
        listed = _run(
            [str(self.bin / "python"), "-m", "pip", "list", "--format=json"], self.path, self.env
        )
        names = [p["name"] for p in json.loads(listed.stdout) if p["name"].lower() not in KEEP]
        if names:
            _run(
                [str(self.bin / "python"), "-m", "pip", "uninstall", "-y", *names],
                self.path,
                self.env,
            )


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
    if check:
        assert done.returncode == 0, (
            f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def _extras(line: str) -> set[str]:
    match = re.search(r"\[([\w,-]+)\]", line)
    return set(match[1].split(",")) if match else set()


def _check(venv: _Venv, line: str, src: Path, elsewhere: Path) -> None:
    extras = _extras(line)
    probe = _run(
        [str(venv.bin / "python"), "-c", _PROBE, ",".join(sorted(extras))], elsewhere, venv.env
    )
    got = json.loads(probe.stdout)
    assert got["version"] == _project_version(), line
    assert got["missing"] == [], f"{line}: not installed: {got['missing']}"
    home = src if " -e " in f" {line} " else venv.path
    assert Path(got["file"]).is_relative_to(home), f"{line}: localrun imported from {got['file']}"
    cli = _run([str(venv.bin / "localrun"), "--help"], elsewhere, venv.env, check=False)
    if "cli" in extras:
        assert cli.returncode == 0 and "Usage" in cli.stdout, f"{line}: {cli.stderr}"
        return
    # Without the extra the command says what to install; that line works.
    assert cli.returncode == 2, f"{line}: localrun --help without click: {cli.returncode}"
    hint = re.search(r"pip install .*", cli.stderr)
    assert hint, f"{line}: no install hint in {cli.stderr!r}"
    venv.sh(hint[0], elsewhere)
    cli = _run([str(venv.bin / "localrun"), "--help"], elsewhere, venv.env, check=False)
    assert cli.returncode == 0 and "Usage" in cli.stdout, f"after {hint[0]}: {cli.stderr}"


def test_documented_install_lines_work(tmp_path: Path) -> None:
    lines = install_lines()
    assert "make dist" in lines and any(line.startswith("pip install") for line in lines)
    src = _copy_checkout(tmp_path / "checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = _Venv(tmp_path / "venv")
    checked = []
    for line in lines:
        if line.startswith("pip install"):
            venv.empty()
        venv.sh(line, src)
        if line == "make dist":
            wheels = sorted(p.name for p in (src / "dist").glob("*.whl"))
            assert wheels == [f"localrun_tracker-{_project_version()}-py3-none-any.whl"], wheels
        if line.startswith("pip install"):
            _check(venv, line, src, elsewhere)
            checked.append(line)
    assert any(".whl" in line for line in checked), checked
    assert any("--no-index" in line for line in checked), checked
