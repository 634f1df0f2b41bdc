"""The on-disk format (docs/format.md): paths and names, atomic files, the manifest, segments,
the mutex and the lease, saved files, verify and repair.

Nothing here imports the writer, the readers or the command line: the format stands on its own,
so a reader of the spec and this package always agree.
"""
