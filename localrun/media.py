"""Media values for ``log()``: images, histograms and tables (docs/media.md).

``run.log({"samples": [localrun.Image(x, caption="epoch 3")]})`` stores each value once,
content-addressed, under the run's ``media/`` folder, and the row holds a small typed reference
(kind, path, sha256, and metadata such as width and height) as a JSON string
(docs/format.md). ``StoredRun.media(key, step)`` opens them again.

Every check happens when the value is made, in the caller's thread: a wrong shape, a dtype that
is not an image, a histogram of NaNs or a table with ragged rows is a
:class:`~localrun.LogValueError` before anything is stored. The encoded bytes are kept in the
value, so a source file that vanishes after ``Image(path)`` loses nothing.

numpy, Pillow (``localrun-tracker[media]``) and pandas are imported only when a value needs
them, never by ``import localrun``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import LogValueError

MEDIA_KINDS = ("image", "histogram", "table")


class Media:
    """A media value: its encoded bytes (``payload``), a file suffix and small metadata."""

    kind: str = ""
    suffix: str = ""

    def __init__(self, payload: bytes, meta: dict[str, Any]) -> None:
        self.payload = payload
        self.meta = meta
        self.sha256 = hashlib.sha256(payload).hexdigest()

    @property
    def path(self) -> str:
        """Where the bytes live inside the run: ``media/<2 hex>/<sha256><suffix>``."""
        return f"media/{self.sha256[:2]}/{self.sha256}{self.suffix}"

    def reference(self) -> str:
        """The JSON the row holds (the bytes are written apart, see ``_store/media.py``)."""
        ref = {
            "_type": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "size": len(self.payload),
            **self.meta,
        }
        return json.dumps(ref, sort_keys=True, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"<localrun.{type(self).__name__} {self.meta}>"


def _caption(caption: object) -> dict[str, Any]:
    if caption is None:
        return {}
    if not isinstance(caption, str):
        raise LogValueError(f"caption must be a string, got {type(caption).__name__}")
    return {"caption": caption}


_PIP_NAME = {"PIL": "pillow", "numpy": "numpy"}


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise LogValueError(
            f"this media value needs {top}: pip install {_PIP_NAME.get(top, top)} (or install "
            f"localrun's checkout with its '.[{extra}]' extra)"
        ) from None


class Image(Media):
    """An image, stored as PNG: a numpy array (HW, HWC with 1, 3 or 4 channels; uint8, or float
    in [0, 1]), a PIL image, or the path of an image file."""

    kind = "image"
    suffix = ".png"

    def __init__(self, data: Any, caption: str | None = None) -> None:
        pil = _need("PIL.Image", "media")
        if isinstance(data, (str, os.PathLike)):
            img = _open_image_file(pil, Path(data))
        elif isinstance(data, pil.Image):
            img = data
        elif hasattr(data, "shape") and hasattr(data, "dtype"):
            img = pil.fromarray(_image_array(data))
        else:
            raise LogValueError(
                f"Image() takes a numpy array, a PIL image or a file path, not "
                f"{type(data).__name__}"
            )
        if img.mode not in ("L", "RGB", "RGBA", "LA", "P", "I;16", "I"):
            img = img.convert("RGBA")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        meta = {"width": img.width, "height": img.height, **_caption(caption)}
        super().__init__(buf.getvalue(), meta)


def _open_image_file(pil: Any, path: Path) -> Any:
    try:
        with pil.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise LogValueError(f"Image({str(path)!r}): no such file") from None
    except (OSError, ValueError) as exc:
        raise LogValueError(f"Image({str(path)!r}) is not an image Pillow reads: {exc}") from None


def _image_array(data: Any) -> Any:
    np = _need("numpy", "media")
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise LogValueError(
            f"Image() of an array of shape {arr.shape}: use HW (grey) or HWC with 1, 3 or 4 "
            "channels (channels last; for CHW torch tensors use x.permute(1, 2, 0))"
        )
    if arr.size == 0:
        raise LogValueError(f"Image() of an empty array (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise LogValueError("Image() of a float array with NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise LogValueError(
                f"Image() of a float array with values in [{lo:g}, {hi:g}]: floats must be in "
                "[0, 1] (scale them, or pass uint8 in [0, 255])"
            )
        return np.ascontiguousarray((arr * 255.0 + 0.5).astype(np.uint8))
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    raise LogValueError(
        f"Image() of an array of dtype {arr.dtype}: use uint8 in [0, 255] or float in [0, 1]"
    )


class Histogram(Media):
    """A histogram: of ``sequence`` in ``num_bins`` bins, or precomputed ``np_histogram=(counts,
    edges)``; stored as its bin edges and counts (JSON)."""

    kind = "histogram"
    suffix = ".json"

    def __init__(
        self,
        sequence: Sequence[float] | Any = None,
        np_histogram: tuple[Any, Any] | None = None,
        num_bins: int = 64,
    ) -> None:
        if (sequence is None) == (np_histogram is None):
            raise LogValueError("Histogram() takes a sequence or np_histogram=(counts, edges)")
        if np_histogram is not None:
            counts, edges = (list(map(float, x)) for x in np_histogram)
            if len(edges) != len(counts) + 1:
                raise LogValueError(
                    f"Histogram(np_histogram=...): {len(counts)} counts need {len(counts) + 1} "
                    f"edges, got {len(edges)}"
                )
        else:
            counts, edges = _bin(sequence, num_bins)
        for v in (*counts, *edges):
            if not math.isfinite(v):
                raise LogValueError("Histogram() of NaN or infinite values: filter them first")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise LogValueError("Histogram(): bin edges must increase")
        payload = json.dumps({"counts": counts, "edges": edges}).encode()
        super().__init__(payload, {"bins": len(counts)})


def _bin(sequence: Any, num_bins: int) -> tuple[list[float], list[float]]:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or not 1 <= num_bins <= 512:
        raise LogValueError(f"Histogram(num_bins={num_bins!r}): use an int in 1..512")
    np = _need("numpy", "media")
    try:
        arr = np.asarray(sequence, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise LogValueError(f"Histogram() of values that are not numbers: {exc}") from None
    if arr.size == 0:
        raise LogValueError("Histogram() of an empty sequence")
    if not np.isfinite(arr).all():
        raise LogValueError("Histogram() of NaN or infinite values: filter them first")
    counts, edges = np.histogram(arr, bins=num_bins)
    return [float(c) for c in counts], [float(e) for e in edges]


class Table(Media):
    """A table: ``columns`` and ``data`` (rows), or ``dataframe=`` (pandas or Arrow); stored as
    Parquet."""

    kind = "table"
    suffix = ".parquet"

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        data: Sequence[Sequence[Any]] | None = None,
        dataframe: Any = None,
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = _arrow_table(pa, columns, data, dataframe)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        meta = {"rows": table.num_rows, "columns": table.column_names}
        super().__init__(buf.getvalue(), meta)


def _arrow_table(pa: Any, columns: Any, data: Any, dataframe: Any) -> Any:
    if dataframe is not None:
        if data is not None:
            raise LogValueError("Table() takes data= (with columns=) or dataframe=, not both")
        if isinstance(dataframe, pa.Table):
            return dataframe
        try:
            return pa.Table.from_pandas(dataframe, preserve_index=False)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise LogValueError(f"Table(dataframe=...) cannot be stored: {exc}") from None
    if columns is None or data is None:
        raise LogValueError("Table() needs columns= and data= (rows), or dataframe=")
    names = [str(c) for c in columns]
    if len(set(names)) != len(names):
        raise LogValueError(f"Table(columns={names}): column names repeat")
    rows = [list(r) for r in data]
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise LogValueError(
                f"Table(): row {i} has {len(row)} values for {len(names)} columns (ragged rows)"
            )
    try:
        return pa.table({n: [r[j] for r in rows] for j, n in enumerate(names)})
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise LogValueError(f"Table(): a column mixes values Arrow cannot store: {exc}") from None


def parse_reference(text: str) -> dict[str, Any]:
    """A reference as the row holds it, checked: readers never follow a path they did not
    check (``StoredRun.media`` opens it through the run-folder containment check)."""
    try:
        ref = json.loads(text)
    except (TypeError, ValueError):
        raise LogValueError(f"not a media reference: {text!r:.80}") from None
    if not isinstance(ref, dict) or ref.get("_type") not in MEDIA_KINDS:
        raise LogValueError(f"not a media reference: {text!r:.80}")
    return ref
