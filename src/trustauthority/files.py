"""Writing files only their owner may read (keys, tokens, configs that may hold a password)."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write `data` to `path` with mode 0600, also when the file already existed with another
    mode; `exclusive` refuses an existing file (FileExistsError)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data.encode() if isinstance(data, str) else data)
