"""The built-in synthetic dataset, generated on first use into a cache folder.

Many NNI trials may start at the same instant on an empty cache. They take an
exclusive lock (flock, released by the kernel even if the holder is killed); the
first builds into a private temp folder and renames it into place, the rest wait and
then use it. A folder is trusted only if it has the `.complete` marker, which is
written last, inside the temp folder, before the atomic rename: a build killed
mid-write leaves only a `.tmp-*` folder that nobody reads (and that is swept later).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path

import filelock

from .synthetic import SynthSpec, write_dataset

# The dataset every trial without data_dir trains on. Edit here to resize experiments:
# 6 tiles x 2 images of 380-520 px: 12 images (3 held out for validation), ~2.4 Mpx,
# ~130 patches of 128 px or ~560 of 64 px.
BUILTIN = SynthSpec(tiles=6, images_per_tile=2, min_size=380, max_size=520, seed=0)
VERSION = "synthetic-v1"
MARKER = ".complete"
STALE_TMP_S = 3600


def cache_root() -> Path:
    if os.environ.get("SEGMODEL_CACHE"):
        return Path(os.environ["SEGMODEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segmodel"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def ensure(spec: SynthSpec = BUILTIN, root: Path | None = None, writer=None) -> tuple[Path, bool]:
    """Path of the complete dataset for `spec`, building it if needed (with `writer`,
    default write_dataset); (path, built_here)."""
    writer = writer or write_dataset
    root = Path(root) if root is not None else cache_root()
    final = root / f"{VERSION}-{spec.name}"
    if is_complete(final):
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{final.name}.lock") as held:
        if is_complete(final):
            return final, False
        _sweep(root, final.name, max_age_s=0 if held else STALE_TMP_S)
        if final.exists():  # no marker: left by something other than this code; never trust it
            shutil.rmtree(final, ignore_errors=True)
        tmp = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            writer(tmp, spec)
            (tmp / MARKER).write_text(f"{VERSION} {spec}\n")
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_complete(final):  # lost a race (lock unavailable on this filesystem)
                return final, False
            raise
        return final, True


def _sweep(root: Path, name: str, max_age_s: float) -> None:
    """Remove temp folders of builds that died. Under the lock every temp folder is dead
    (a live build would hold the lock); without one, only old ones are."""
    for tmp in root.glob(f".{name}.tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime >= max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive file lock (filelock, NNI's dependency) and yield True; yield False
    where the filesystem cannot lock (the atomic rename still decides who wins)."""
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire()
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
