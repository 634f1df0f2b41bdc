"""Column kinds and their Arrow types: the typed part of the on-disk format.

Every logged key has one kind for the life of a run, recorded in the manifest's ``schema``, so a
reader can build one unified Arrow schema over segments whose columns differ.
"""

from __future__ import annotations

import pyarrow as pa

NUMBER = "number"
STRING = "string"
LIST_NUMBER = "list<number>"
LIST_STRING = "list<string>"
# Media references (localrun/media.py): JSON strings in the row, the bytes under media/. Their
# own kinds, so a key keeps holding images, and readers know to open them.
MEDIA = "media"
LIST_MEDIA = "list<media>"

ARROW_TYPES: dict[str, pa.DataType] = {
    NUMBER: pa.float64(),
    STRING: pa.string(),
    LIST_NUMBER: pa.list_(pa.float64()),
    LIST_STRING: pa.list_(pa.string()),
    MEDIA: pa.string(),
    LIST_MEDIA: pa.list_(pa.string()),
}
STEP_FIELDS = (
    pa.field("_step", pa.int64()),
    pa.field("_timestamp", pa.float64()),
    pa.field("_runtime", pa.float64()),
)


def arrow_schema(kinds: dict[str, str]) -> pa.Schema:
    """The unified schema of a run: the three step columns, then every key by name."""
    return pa.schema([*STEP_FIELDS, *(pa.field(k, ARROW_TYPES[kinds[k]]) for k in sorted(kinds))])


def kind_of_arrow(t: pa.DataType) -> str | None:
    for kind, at in ARROW_TYPES.items():
        if at == t:
            return kind
    return None
