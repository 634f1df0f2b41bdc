"""Media values: images, histograms and tables round-trip through a run, content-addressed.

Real files and processes; the reader is a separate process from the writer where it matters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import localrun
from tests.conftest import run_py

PIL = pytest.importorskip("PIL.Image")  # the [media] extra is part of [dev]: never skipped in CI


def test_images_histograms_and_tables_round_trip(root: Path, tmp_path: Path) -> None:
    grey = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    rgb = np.linspace(0, 1, 2 * 5 * 3).reshape(2, 5, 3)
    png = tmp_path / "pic.png"
    PIL.fromarray(np.full((4, 6, 3), 200, dtype=np.uint8)).save(png)
    data = np.random.default_rng(0).normal(size=1000)
    with localrun.init(project="m", id="r", dir=root) as run:
        run.log(
            {
                "grey": localrun.Image(grey, caption="step 0"),
                "samples": [localrun.Image(rgb), localrun.Image(png)],
                "weights": localrun.Histogram(data, num_bins=10),
                "preds": localrun.Table(columns=["x", "label"], data=[[1, "a"], [2, "b"]]),
                "loss": 0.5,
            }
        )
        run.log({"weights": localrun.Histogram(np_histogram=([1, 2], [0.0, 0.5, 1.0]))})
    stored = localrun.Api(root).run("m/r")
    img = stored.media("grey", 0)
    assert np.array_equal(np.asarray(img), grey)
    first, second = stored.media("samples", 0)
    assert np.array_equal(np.asarray(first), (rgb * 255 + 0.5).astype(np.uint8))
    assert second.size == (6, 4)
    counts, edges = stored.media("weights", 0)
    assert counts.sum() == 1000 and len(edges) == 11
    assert np.array_equal(np.histogram(data, bins=10)[0], counts)
    counts, edges = stored.media("weights", 1)
    assert counts.tolist() == [1, 2] and edges.tolist() == [0.0, 0.5, 1.0]
    table = stored.media("preds", 0)
    assert table.to_pylist() == [{"x": 1, "label": "a"}, {"x": 2, "label": "b"}]
    # The row holds a typed reference; the bytes are content-addressed under media/.
    ref = json.loads(stored.history(["grey"]).column("grey")[0].as_py())
    assert ref["_type"] == "image" and ref["width"] == 4 and ref["height"] == 3
    assert ref["caption"] == "step 0"
    blob = stored.dir / ref["path"]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == ref["sha256"] == blob.stem
    assert stored.manifest["schema"]["samples"] == "list<media>"


def test_the_same_image_logged_twice_is_stored_once(root: Path) -> None:
    img = np.zeros((8, 8), dtype=np.uint8)
    with localrun.init(project="m", id="r", dir=root) as run:
        for _ in range(5):
            run.log({"img": localrun.Image(img)})
    assert len(list((root / "m" / "r" / "media").rglob("*.png"))) == 1
    refs = localrun.Api(root).run("m/r").history(["img"]).column("img").to_pylist()
    assert len(refs) == 5 and len(set(refs)) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: localrun.Image(np.zeros((2, 3, 5), dtype=np.uint8)), "shape"),
        (lambda: localrun.Image(np.zeros((2, 2, 2, 3))), " shape"),
        (lambda: localrun.Image(np.full((2, 2), 3.0)), r"\[0, 1\]"),
        (lambda: localrun.Image(np.zeros((2, 2), dtype=np.int32)), "dtype"),
        (lambda: localrun.Image(np.array([[np.nan]])), "NaN"),
        (lambda: localrun.Image("/no/such/file.png"), "no such file"),
        (lambda: localrun.Image(object()), "numpy array"),
        (lambda: localrun.Histogram([float("nan")] * 3), "NaN"),
        (lambda: localrun.Histogram([]), "empty"),
        (lambda: localrun.Histogram(np_histogram=([1, 2], [0.0, 1.0])), "edges"),
        (lambda: localrun.Table(columns=["a", "b"], data=[[1, 2], [3]]), "ragged"),
        (lambda: localrun.Table(columns=["a", "a"], data=[[1, 2]]), "repeat"),
        (lambda: localrun.Table(columns=["a"], data=[[1], ["x"]]), "Arrow"),
    ],
)
def test_bad_media_is_refused_before_anything_is_stored(
    root: Path, make: object, message: str
) -> None:
    with localrun.init(project="m", id="r", dir=root) as run:
        run.log({"loss": 1.0})
        with pytest.raises(localrun.LogValueError, match=message):
            run.log({"bad": make()})  # type: ignore[operator]
        with pytest.raises(localrun.LogValueError, match="only media"):
            run.log({"mixed": [localrun.Histogram([1.0]), 2.0]})
    stored = localrun.Api(root).run("m/r")
    assert stored.keys == ["loss"]
    assert not (stored.dir / "media").exists()


def test_a_media_key_keeps_its_kind(root: Path) -> None:
    with localrun.init(project="m", id="r", dir=root) as run:
        run.log({"img": localrun.Image(np.zeros((2, 2), dtype=np.uint8))})
        with pytest.raises(localrun.LogValueError, match="media"):
            run.log({"img": "a string"})
    with pytest.raises(localrun.UsageError, match="no media"):
        localrun.Api(root).run("m/r").media("_step", 0)


def test_media_survive_sigkill_after_the_flush_and_resume(root: Path) -> None:
    code = """
    import os, signal, numpy as np, localrun
    run = localrun.init(project="m", id="k", resume="allow")
    run.log({"img": localrun.Image(np.full((3, 3), run.step, dtype=np.uint8))})
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
    for _ in range(2):
        out = run_py(code, root)
        assert out.returncode == -9, out.stderr
    stored = localrun.Api(root).run("m/k")
    assert [np.asarray(stored.media("img", s))[0, 0] for s in (0, 1)] == [0, 1]


def test_a_table_from_arrow_and_pandas(root: Path) -> None:
    pd = pytest.importorskip("pandas")
    with localrun.init(project="m", id="t", dir=root) as run:
        run.log({"a": localrun.Table(dataframe=pa.table({"x": [1.5]}))})
        run.log({"a": localrun.Table(dataframe=pd.DataFrame({"x": [2.5], "y": ["z"]}))})
    stored = localrun.Api(root).run("m/t")
    assert stored.media("a", 0).to_pylist() == [{"x": 1.5}]
    assert stored.media("a", 1).to_pylist() == [{"x": 2.5, "y": "z"}]
