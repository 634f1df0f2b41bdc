"""The public surface: __all__ is what is exported, errors refine builtins, imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import localrun
from localrun import errors

PKG = Path(localrun.__file__).parent


def test_all_is_exactly_the_public_names() -> None:
    # dir(): the module's names, and those it imports on first use (localrun/__init__.py)
    public = {n for n in dir(localrun) if not n.startswith("_")} | {"run", "__version__"}
    # submodules imported as a side effect are not API, except util (documented).
    public -= {"errors", "integrations", "media", "wandb"}
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
        errors.FormatVersionError,
        errors.SyncError,
        errors.RemoteConflictError,
        errors.RemoteUnavailableError,
    ]
    codes = [c.exit_code for c in leaves]
    assert len(set(codes)) == len(codes)
    assert all(c > 0 for c in codes)


def _imports(path: Path) -> set[str]:
    """Absolute names of localrun modules that ``path`` imports (at run time: imports under
    ``if TYPE_CHECKING:`` are for the type checker only and are left out)."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if node.module:  # `from . import x` imports x, not the package itself
                out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {n for n in out if n == "localrun" or n.startswith("localrun.")}


# Each side of the package and the localrun modules it may import (DESIGN §7). A module not
# covered by a row fails the test, so a new module or a rename cannot slip past it.
LAYERS: dict[str, tuple[str, ...]] = {
    "localrun.errors": (),
    "localrun.util": (),
    "localrun.media": ("localrun.errors",),
    "localrun._store": ("localrun._store", "localrun.errors"),
    "localrun._settings": ("localrun._store", "localrun.errors"),
    "localrun._run": ("localrun._run", "localrun._store", "localrun._settings", "localrun.errors",
                      "localrun.util", "localrun.media"),
    "localrun._query": ("localrun._store", "localrun._settings", "localrun.errors",
                        "localrun.media"),
    "localrun._query_remote": ("localrun._query", "localrun._store", "localrun._settings",
                               "localrun.errors"),
    "localrun._restore": ("localrun._run", "localrun._query", "localrun._store", "localrun.errors"),
    # sync pushes runs as stored: it reads them through the store, never through the writer
    "localrun._sync": ("localrun._store", "localrun._query", "localrun._settings",
                       "localrun.errors"),
    # the receiving side of sync: an object store of a root, checked with the store's own rules
    # downsampling for charts, where the rows are read (pure pyarrow); the store's Arrow
    # builders (_store.arrays) as the readers use them
    "localrun._query_series": ("localrun._query", "localrun._store", "localrun.errors"),
    "localrun._server": ("localrun._store", "localrun.errors", "localrun", "localrun._query",
                         "localrun._query_series", "localrun.media"),
    "localrun._cli": ("localrun", "localrun._sync", "localrun._server"),  # sync and server
    "localrun._demo": ("localrun",),
    # the public API, and _settings for LOCALRUN_RUN_ID/PROJECT before a run exists (a logger's
    # version is asked for before its run starts)
    "localrun.integrations": ("localrun", "localrun._settings"),
    # wandb's names over the public API; _settings only to let LOCALRUN_* beat WANDB_*.
    "localrun.wandb": ("localrun", "localrun.errors", "localrun.util", "localrun._settings",
                       "localrun.integrations"),
    "localrun": ("localrun.",),  # the facade re-exports from every side
}  # fmt: skip


def _layer(module: str) -> str:
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} is in no layer of LAYERS: add it where it belongs")


def _allowed(layer: str, imported: str) -> bool:
    for prefix in LAYERS[layer]:
        if prefix == "localrun" and imported in ("localrun",):
            return True
        if prefix.endswith("."):
            return imported.startswith(prefix) or imported == prefix[:-1]
        if imported == prefix or imported.startswith(prefix + "."):
            return True
    return False


def test_dependency_direction() -> None:
    """The store knows nothing above it; the writer (_run) and the readers (_query) never import
    each other; the CLI and integrations use only the public package."""
    seen = set()
    for path in PKG.rglob("*.py"):
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        layer = _layer(module)
        seen.add(layer)
        wrong = {n for n in _imports(path) if _layer(n) != layer and not _allowed(layer, n)}
        assert not wrong, f"{module} ({layer}) imports {sorted(wrong)}"
    assert seen == set(LAYERS), f"layers with no module (renamed?): {set(LAYERS) - seen}"


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        graph[module] = {n for n in _imports(path) if n in _modules()}

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            raise AssertionError(" -> ".join([*stack[stack.index(node) :], node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for module in graph:
        visit(module, [], done)


def _modules() -> set[str]:
    return {
        ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in PKG.rglob("*.py")
    }
