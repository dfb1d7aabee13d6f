"""Durable replacement of a file: readers see the old file or the whole new one, never a torn one.

The bytes go to a temporary file beside the target (``<name>.<random>.tmp``),
are flushed and fsynced, and the temporary is renamed over the target; the
directory is then fsynced so that the rename itself survives a crash. On any
failure (or an interrupt) the temporary is removed and the target is left as
it was. Nothing here imports JAX.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"
"""Suffix of the temporary files (a killed writer can leave one: ``<name>.<random>.tmp``)."""


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably; raises ``OSError`` with ``path`` unchanged."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
