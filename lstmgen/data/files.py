"""Opening data files whatever their packaging: plain, gzip, or a zip holding one file."""
from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path
from typing import Optional

from ..errors import UserInputError


def open_binary(path: Path, member: Optional[str] = None):
    """Open a plain, .gz or single-member .zip file for binary reading."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zip":
        zf = zipfile.ZipFile(path)
        names = [n for n in zf.namelist() if not n.endswith("/")]
        name = member if member in names else (names[0] if len(names) == 1 else None)
        if name is None:
            raise UserInputError(f"{path}: zip holds {len(names)} files; name one with a data set entry")
        return zf.open(name)
    return open(path, "rb")


def sha256_of(path: Path, raw: bool = False) -> str:
    """sha256 of the file's content: decompressed for .gz and .zip unless `raw`."""
    h = hashlib.sha256()
    with (open(path, "rb") if raw else open_binary(Path(path))) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
