"""The public surface: __all__ is what is exported, errors refine builtins, imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import localrun
from localrun import errors

PKG = Path(localrun.__file__).parent


def test_all_is_exactly_the_public_names() -> None:
    public = {n for n in vars(localrun) if not n.startswith("_")} | {"run", "__version__"}
    # submodules imported as a side effect are not API, except util (documented).
    public -= {"errors", "integrations"}
    assert set(localrun.__all__) == public
    for name in localrun.__all__:
        assert hasattr(localrun, name) or name == "run"


def test_module_level_run_is_none_before_init() -> None:
    assert localrun.run is None
    with pytest.raises(AttributeError):
        localrun.nonexistent  # noqa: B018


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.UsageError, ValueError),
        (errors.InvalidIdError, ValueError),
        (errors.LogValueError, TypeError),
        (errors.RunNotFoundError, LookupError),
        (errors.RunExistsError, FileExistsError),
        (errors.StorageError, OSError),
        (errors.LockTimeout, TimeoutError),
    ],
)
def test_errors_refine_builtins(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, errors.LocalrunError)
    assert issubclass(cls, builtin)


def test_every_error_has_a_distinct_exit_code() -> None:
    leaves = [
        errors.UsageError,
        errors.RunNotFoundError,
        errors.RunExistsError,
        errors.RunInUseError,
        errors.RunSupersededError,
        errors.CorruptRunError,
        errors.StorageError,
        errors.LockTimeout,
    ]
    codes = [c.exit_code for c in leaves]
    assert len(set(codes)) == len(codes)
    assert all(c > 0 for c in codes)


def _imports(path: Path) -> set[str]:
    """Absolute names of localrun modules that ``path`` imports."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {n for n in out if n == "localrun" or n.startswith("localrun.")}


def test_dependency_direction() -> None:
    """store knows nothing above it; writer and readers never import each other; the CLI and
    integrations use only the public package."""
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        imported = _imports(path)
        if rel.startswith("_store/") or rel == "errors.py":
            above = {
                n for n in imported if not n.startswith(("localrun._store", "localrun.errors"))
            }
            assert not above, f"{rel} imports {above}"
        if rel == "_writer.py":
            assert not any(n.startswith("localrun._query") for n in imported), rel
        if rel == "_query.py":
            assert not any(n.startswith("localrun._writer") for n in imported), rel
        if rel == "_cli.py" or rel.startswith("integrations/"):
            private = {
                n for n in imported if n.startswith("localrun._") and n not in ("localrun._demo",)
            }
            assert not private, f"{rel} imports private {private}"
