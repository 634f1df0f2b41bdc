"""S3 against a real server (OpenStack Swift's s3api, started by the ``swift_s3`` fixture).

What a replica on S3 relies on, checked against a real object store rather than a mock: pyarrow's
S3 client can create, stream (multipart), read, list and delete objects there, and DuckDB reads a
Parquet file in place, both through pyarrow and with its own httpfs extension (the way the docs
tell users to query a synced root).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from tests.conftest import REPO
from tests.servers.swift import SwiftS3

pytestmark = pytest.mark.swift

# DuckDB with httpfs, installed by .ci/install-servers (PyPI has httpfs only for some versions).
DUCKDB_TOOLS = Path(os.environ.get("LOCALRUN_DUCKDB_HTTPFS_VENV", REPO / ".venv-tools" / "duckdb"))


@pytest.fixture
def prefix(swift_s3: SwiftS3) -> str:
    """A folder of the test bucket that no other test uses."""
    return f"{swift_s3.bucket}/t-{secrets.token_hex(4)}"


def test_pyarrow_writes_reads_lists_and_deletes(swift_s3: SwiftS3, prefix: str) -> None:
    s3 = swift_s3.filesystem()
    # 12 MiB in 1 MiB writes: more than pyarrow's 10 MiB part, so a real multipart upload.
    chunk = secrets.token_bytes(1 << 20)
    with s3.open_output_stream(f"{prefix}/run/history/0001-000000.parquet") as out:
        for _ in range(12):
            out.write(chunk)
    with s3.open_output_stream(f"{prefix}/run/log/000000000001.json") as out:
        out.write(b'{"rev": 1}')
    s3.create_dir(f"{prefix}/empty")

    with s3.open_input_stream(f"{prefix}/run/history/0001-000000.parquet") as f:
        assert f.read() == chunk * 12
    with s3.open_input_file(f"{prefix}/run/log/000000000001.json") as f:  # random access
        f.seek(2)
        assert f.read(3) == b"rev"

    listed = s3.get_file_info(fs.FileSelector(f"{prefix}/run", recursive=True))
    files = {i.path: i.size for i in listed if i.type == fs.FileType.File}
    assert files == {
        f"{prefix}/run/history/0001-000000.parquet": 12 << 20,
        f"{prefix}/run/log/000000000001.json": 10,
    }
    assert s3.get_file_info(f"{prefix}/empty").type == fs.FileType.Directory

    s3.delete_file(f"{prefix}/run/log/000000000001.json")
    assert s3.get_file_info(f"{prefix}/run/log/000000000001.json").type == fs.FileType.NotFound
    # One object at a time, deepest first: Swift 2.30 refuses the multi-object delete that
    # delete_dir sends for a folder with contents (it wants a Content-MD5 header, and the AWS SDK
    # in pyarrow sends a CRC32 checksum instead), so a sync must not rely on delete_dir.
    for info in sorted(
        s3.get_file_info(fs.FileSelector(prefix, recursive=True)),
        key=lambda i: i.path.count("/"),
        reverse=True,
    ):
        if info.type == fs.FileType.File:
            s3.delete_file(info.path)
        else:
            s3.delete_dir(info.path)
    s3.delete_dir(prefix)
    assert s3.get_file_info(prefix).type == fs.FileType.NotFound


def _segment(first: int, rows: int) -> pa.Table:
    steps = list(range(first, first + rows))
    return pa.table({"_step": steps, "loss": [1.0 / (s + 1) for s in steps]})


def test_duckdb_reads_parquet_in_place_through_pyarrow(swift_s3: SwiftS3, prefix: str) -> None:
    """The project's own duckdb (no extension needed): DuckDB scans an Arrow dataset on S3."""
    s3 = swift_s3.filesystem()
    pq.write_table(_segment(0, 100), f"{prefix}/history/0001-000000.parquet", filesystem=s3)
    pq.write_table(_segment(100, 50), f"{prefix}/history/0001-000001.parquet", filesystem=s3)
    history = ds.dataset(f"{prefix}/history", format="parquet", filesystem=s3)
    con = duckdb.connect()
    con.register("history", history)
    [got] = con.execute(
        "SELECT count(*), max(_step), sum(loss) FROM history WHERE _step >= 90"
    ).fetchall()
    expected = sum(1.0 / (s + 1) for s in range(90, 150))
    assert got[:2] == (60, 149)
    assert got[2] == pytest.approx(expected)


def test_duckdb_httpfs_reads_parquet_in_place(swift_s3: SwiftS3, prefix: str) -> None:
    """DuckDB's own S3 reader (httpfs), as docs/sync.md tells users to query a synced root."""
    python = DUCKDB_TOOLS / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"no DuckDB with httpfs at {DUCKDB_TOOLS}: run .ci/install-servers", pytrace=False
        )
    s3 = swift_s3.filesystem()
    pq.write_table(_segment(0, 100), f"{prefix}/history/0001-000000.parquet", filesystem=s3)
    pq.write_table(_segment(100, 50), f"{prefix}/history/0001-000001.parquet", filesystem=s3)
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import duckdb, duckdb_extension_httpfs
        [ext] = Path(duckdb_extension_httpfs.__file__).parent.rglob("httpfs.duckdb_extension")
        # Offline: never download an extension, load the one the package ships.
        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        con.load_extension(str(ext))
        endpoint, key, secret, region, glob = sys.argv[1:]
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, ENDPOINT ?, REGION ?, "
            "URL_STYLE 'path', USE_SSL false)".replace("?", "'{}'").format(
                key, secret, endpoint, region
            )
        )
        row = con.execute(
            "SELECT count(*), max(_step), sum(loss) FROM read_parquet(?) WHERE _step >= 90",
            [glob],
        ).fetchone()
        print(json.dumps(row))
        """
    )
    proc = subprocess.run(
        [
            str(python),
            "-c",
            script,
            swift_s3.host_port,
            swift_s3.access_key,
            swift_s3.secret_key,
            swift_s3.region,
            f"s3://{prefix}/history/*.parquet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + swift_s3.logs()
    count, last, total = json.loads(proc.stdout)
    assert (count, last) == (60, 149)
    assert total == pytest.approx(sum(1.0 / (s + 1) for s in range(90, 150)))
