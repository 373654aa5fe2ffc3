"""Writing and measuring files: every output of segmodel goes through here.

Writes are atomic (temp name in the same folder, then `os.replace`), so a killed
process leaves the old file or none, never a half-written one; temp names start
with a dot and nothing reads them. Sizes are raw and gzip-compressed (level 6, as
`gzip` does): a pruned model's zeros cost full size on disk but almost nothing
compressed, so the gzip size is the one that shows what pruning saved.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import zlib
from pathlib import Path

from .errors import SegmodelError
from .surgery import fresh_copy

# ---- writing ------------------------------------------------------------------------

def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def save_model_atomic(model, path: Path) -> None:
    """Keras insists on the .keras suffix, so the temp file keeps it. What is saved is an
    uncompiled copy: a .keras file carries the compiled optimizer's state, which the last
    training phase left on the model and which would double the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    ship = fresh_copy(model)
    try:
        ship.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- reading ------------------------------------------------------------------------

def parse_json(text: str, what: str, error: type[SegmodelError]):
    """json.loads, or `error` in one line naming `what` and where the JSON breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON ({e.msg} at char {e.pos})") from None


def read_json(path, what: str, error: type[SegmodelError]):
    """A JSON file's value, or `error` in one line (unreadable file, invalid JSON)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise error(f"{what}: cannot read {path}: {e.strerror}") from None
    return parse_json(text, f"{what}: {path}", error)


# ---- measuring ----------------------------------------------------------------------

def gzip_size(path, chunk: int = 1 << 20) -> int:
    """Bytes of the file gzip-compressed (level 6, as `gzip -6`), streamed; a folder
    (a SavedModel) is measured as a .tar.gz of it."""
    path = Path(path)
    if path.is_dir():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
            tar.add(path, arcname=path.name)
        return len(buf.getvalue())
    z = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    total = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            total += len(z.compress(block))
    return total + len(z.flush())


def raw_size(path) -> int:
    """Bytes on disk; a folder's files summed."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
