"""Remote URLs and names: what ``--to`` accepts, and the root's list of named remotes.

``--to`` takes a URL or the name of a remote recorded in ``<root>/.sync/remotes.json`` (by
``localrun remote add NAME URL``), so every node of a cluster that sees the root syncs to the
same places without repeating URLs in job scripts. A URL never carries a secret: the token of
a ``localrun server`` or MLflow remote comes from ``LOCALRUN_TOKEN`` or ``LOCALRUN_TOKEN_FILE``,
S3 credentials from the usual AWS variables and files.

=================================== ===================================================
URL                                 remote
=================================== ===================================================
``file:///path``                    a localrun root in that folder (a disk, a mount)
``s3://bucket/prefix``              a localrun root in S3 (or any S3-compatible store)
``http(s)://host:port``             a ``localrun server``
``mlflow+http(s)://host:port``      an MLflow tracking server (runs mapped onto MLflow's)
=================================== ===================================================
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from .. import _settings
from .._store import atomic
from .._store.layout import sanitize_id
from ..errors import UsageError
from .cursor import SYNC_DIR
from .remote import ObjectStore, Remote

REMOTES_FILE = "remotes.json"
SCHEMES = ("file", "s3", "http", "https", "mlflow+http", "mlflow+https")


def check_url(url: str) -> str:
    """``url`` if it names a remote localrun can push to; else a :class:`UsageError` saying why."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise UsageError(
            f"{url!r} is not a remote URL localrun knows; use file:///path, s3://bucket/prefix, "
            "http(s)://host:port (a localrun server) or mlflow+http(s)://host:port, or the name "
            "of a remote added with `localrun remote add NAME URL`"
        )
    if parts.password is not None:
        raise UsageError(
            f"the remote URL for {parts.hostname} holds a password: never put secrets on a "
            "command line (other users see it in `ps`). Set LOCALRUN_TOKEN or "
            "LOCALRUN_TOKEN_FILE (S3: the AWS_* variables or ~/.aws) and drop it from the URL"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(
                f"{url!r}: a file remote is file:///absolute/path (three slashes), on this host"
            )
    elif not parts.netloc:
        raise UsageError(f"{url!r} names no host or bucket")
    return url


def resolve(target: str, root: Path) -> str:
    """The URL ``target`` stands for: itself if it is a URL, else a named remote's URL."""
    if "://" in target:
        return check_url(target)
    remotes = load_remotes(root)
    if target not in remotes:
        known = ", ".join(sorted(remotes)) or "none yet"
        raise UsageError(
            f"no remote named {target!r} under {root} (named remotes: {known}); give a URL "
            "or add it with `localrun remote add NAME URL`"
        )
    return remotes[target]


def check_apart(url: str, root: Path) -> None:
    """Refuse a ``file://`` remote inside the local root or holding it: the replica would
    become runs of the root it copies (and the next pass would push it into itself)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return
    there, here = Path(parts.path).resolve(), root.resolve()
    if there == here or there.is_relative_to(here) or here.is_relative_to(there):
        raise UsageError(
            f"the remote {url} and the root {root} overlap; a replica must live outside the "
            "root it copies (pick a folder beside it, not in it)"
        )


def open_remote(url: str) -> Remote:
    """A :class:`Remote` for ``url`` (checked with :func:`check_url`)."""
    check_url(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _replica(_fsstore().LocalStore(Path(parts.path).absolute()))
    if parts.scheme == "s3":
        return _replica(_fsstore().ArrowStore(url))
    token = _settings.token()
    if parts.scheme.startswith("mlflow+"):
        mlflow = _optional("localrun._sync.mlflow", "mlflow", url)
        return cast(Remote, mlflow.MlflowRemote(url, token=token))
    http = _optional("localrun._sync.httpstore", "server", url)
    return _replica(cast(ObjectStore, http.HttpStore(url, token=token)))


def _fsstore() -> Any:
    from . import fsstore

    return fsstore


def _replica(store: ObjectStore) -> Remote:
    from .replica import Replica

    return Replica(store)


def _optional(module: str, extra: str, url: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"cannot sync to {url}: {exc}. That kind of remote needs localrun's [{extra}] extra "
            "(and a version of localrun that has it)"
        ) from None


# -- named remotes ---------------------------------------------------------------------------


def _remotes_path(root: Path) -> Path:
    return root / SYNC_DIR / REMOTES_FILE


def load_remotes(root: Path) -> dict[str, str]:
    """Name -> URL of the root's named remotes ({} when there are none)."""
    path = _remotes_path(root)
    try:
        data = atomic.read_json(path)
    except FileNotFoundError:
        return {}
    remotes = data.get("remotes") if isinstance(data, dict) else None
    if not isinstance(remotes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in remotes.items()
    ):
        raise UsageError(
            f'{path} is not a list of remotes ({{"remotes": {{name: url}}}}); fix or remove it'
        )
    return dict(remotes)


def add_remote(root: Path, name: str, url: str) -> None:
    """Record ``name`` -> ``url`` (refusing a name already used for another URL)."""
    clean = sanitize_id(name, "remote name")
    if clean != name:
        raise UsageError(f"remote name {name!r} must be made of [A-Za-z0-9_-] (like {clean!r})")
    check_url(url)
    remotes = load_remotes(root)
    if remotes.get(name, url) != url:
        raise UsageError(
            f"remote {name!r} already names {remotes[name]}; remove it first "
            f"(`localrun remote remove {name}`)"
        )
    remotes[name] = url
    _save(root, remotes)


def remove_remote(root: Path, name: str) -> str:
    """Forget ``name``; returns the URL it named. Cursors stay (they are keyed by URL)."""
    remotes = load_remotes(root)
    if name not in remotes:
        raise UsageError(
            f"no remote named {name!r} under {root} (named remotes: "
            f"{', '.join(sorted(remotes)) or 'none'})"
        )
    url = remotes.pop(name)
    _save(root, remotes)
    return url


def _save(root: Path, remotes: dict[str, str]) -> None:
    if not (root / "localrun.json").is_file():
        raise UsageError(
            f"{root} is not a localrun root (no localrun.json); point --root or LOCALRUN_DIR at "
            "the folder your runs are in"
        )
    path = _remotes_path(root)
    path.parent.mkdir(exist_ok=True)
    atomic.write_json(path, {"remotes": dict(sorted(remotes.items()))})


def as_json(remotes: dict[str, str]) -> str:
    return json.dumps(remotes, indent=1, sort_keys=True)
