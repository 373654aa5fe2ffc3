"""The built-in synthetic set: deterministic, built once by N trials starting together,
never trusted when half-written. Uses real parallel processes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmodel.data import builtin
from segmodel.data.cli import inspect_dataset
from segmodel.data.synthetic import SynthSpec, write_dataset
from segmodel.errors import DataError

TINY = SynthSpec(tiles=2, images_per_tile=1, min_size=60, max_size=90, seed=7)
SPEC_ARGS = "tiles=2, images_per_tile=1, min_size=60, max_size=90, seed=7"

WORKER = """
import json, os, sys, time
from pathlib import Path
from segmodel.data.builtin import ensure
from segmodel.data.synthetic import SynthSpec, write_dataset

def counted(root, spec):  # every generator run leaves a line, so "built once" is measured, not assumed
    with open(sys.argv[3], "a") as log:
        log.write(f"{{os.getpid()}}\\n")
    write_dataset(root, spec)

go = Path(sys.argv[2])
with open(sys.argv[4], "a") as ready:  # started and imported: now wait at the barrier
    ready.write(f"{{os.getpid()}}\\n")
while not go.exists():
    time.sleep(0.002)
path, built = ensure(SynthSpec({spec}), Path(sys.argv[1]), writer=counted)
print(json.dumps({{"path": str(path), "built": built}}))
"""

KILLED = """
import sys, time
from pathlib import Path
from segmodel.data.builtin import ensure
from segmodel.data.synthetic import SynthSpec, write_dataset

def slow(root, spec):
    write_dataset(root, spec)
    (Path(root) / "writing").write_text("")
    time.sleep(120)  # killed here: files are written, the marker is not

ensure(SynthSpec({spec}), Path(sys.argv[1]), writer=slow)
"""


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


def test_synthetic_is_deterministic_and_imbalanced(tmp_path):
    spec = SynthSpec(tiles=2, images_per_tile=2, min_size=150, max_size=260, seed=3)
    a, b = write_dataset(tmp_path / "a", spec), write_dataset(tmp_path / "b", spec)
    assert digest(a) == digest(b)
    assert digest(write_dataset(tmp_path / "c", SynthSpec(2, 2, 150, 260, seed=4))) != digest(a)
    report = inspect_dataset(a, 64)
    assert report["layout"] == "dubai" and report["images"] == 4 and report["out_of_palette_pixels"] == 0
    f = report["class_fractions"]
    assert all(v > 0 for v in f.values()), f                 # every class occurs
    assert f["Land"] == max(f.values()) and f["Land"] > 0.3  # land dominates
    assert f["Unlabeled"] < 0.08                             # and unlabeled is rare
    sizes = {Image.open(p).size for p in a.rglob("*.jpg")}
    assert len(sizes) == 2                                   # one size per tile, as in the Dubai set


def test_parallel_first_use_builds_once(tmp_path):
    cache, go = tmp_path / "cache", tmp_path / "go"
    script = WORKER.format(spec=SPEC_ARGS)
    runs, ready = tmp_path / "generator-runs.log", tmp_path / "ready.log"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(cache), str(go), str(runs), str(ready)],
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    while not ready.exists() or len(ready.read_text().splitlines()) < len(procs):  # all six at the barrier
        assert all(p.poll() is None for p in procs), "a worker died before the barrier"
        time.sleep(0.05)
    go.touch()
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(runs.read_text().splitlines()) == 1          # the generator ran once
    assert sum(r["built"] for r in results) == 1            # and one process reports building
    assert len({r["path"] for r in results}) == 1           # everyone reads the same folder
    final = Path(results[0]["path"])
    assert builtin.is_complete(final)
    assert not list(cache.glob(".*.tmp-*"))                 # no leftovers
    ref = write_dataset(tmp_path / "ref", TINY)
    (ref / builtin.MARKER).write_text((final / builtin.MARKER).read_text())
    assert digest(final) == digest(ref)                     # complete and identical to a clean build


def test_killed_build_is_never_trusted(tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLED.format(spec=SPEC_ARGS), str(cache)])
    try:
        deadline = time.time() + 60
        while not list(cache.glob(".*.tmp-*/writing")):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    final = cache / f"{builtin.VERSION}-{TINY.name}"
    assert not final.exists()                               # the half-done build is invisible
    path, built = builtin.ensure(TINY, cache)               # the lock died with its holder
    assert built and path == final and builtin.is_complete(path)
    assert not list(cache.glob(".*.tmp-*"))                 # and its temp folder was swept
    assert not (path / "writing").exists()


def test_unmarked_folder_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    final = cache / f"{builtin.VERSION}-{TINY.name}"
    (final / "Tile 1" / "images").mkdir(parents=True)       # e.g. copied in half
    path, built = builtin.ensure(TINY, cache)
    assert built and builtin.is_complete(path) and len(list(path.rglob("*.png"))) == 2


def test_cache_location_and_data_dir_precedence(tmp_path, monkeypatch):
    from segmodel.data import resolve_data_dir

    monkeypatch.setenv("SEGMODEL_CACHE", str(tmp_path / "c"))
    assert builtin.cache_root() == tmp_path / "c"
    monkeypatch.setenv("SEGMODEL_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("") == tmp_path / "env"
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_builtin_tiles_picks_a_larger_set_built_once_beside_the_standard_one(tmp_path, monkeypatch):
    from segmodel.data import resolve_data_dir

    calls = []

    def writer(root, spec):  # records the spec; the real writer is tested above
        calls.append(spec)
        (root / "Tile 1").mkdir(parents=True)

    monkeypatch.setattr(builtin, "write_dataset", writer)
    monkeypatch.setenv("SEGMODEL_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("SEGMODEL_DATA_DIR", raising=False)
    big = resolve_data_dir("", 12)
    assert big == resolve_data_dir("", 12) and len(calls) == 1  # built once per cache
    assert calls[0] == dataclasses.replace(builtin.BUILTIN, tiles=12)
    assert resolve_data_dir("", 0) == resolve_data_dir("") != big  # 0 = the standard set
    assert calls[1] == builtin.BUILTIN and len(calls) == 2


def test_unwritable_cache_is_a_data_error(tmp_path, monkeypatch):
    from segmodel.data import resolve_data_dir

    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder should be: mkdir fails, even as root
    monkeypatch.setenv("SEGMODEL_CACHE", str(blocker / "cache"))
    monkeypatch.delenv("SEGMODEL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="cannot write the built-in dataset under .*set SEGMODEL_CACHE"):
        resolve_data_dir("")


def test_cli_synth_writes_dubai_layout(tmp_path, capsys):
    from segmodel.__main__ import main

    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--tiles", "2", "--seed", "5", "--min-size", "70",
                 "--max-size", "90"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == [
        "Tile 1/images/image_part_001.jpg", "Tile 1/images/image_part_002.jpg",
        "Tile 1/masks/image_part_001.png", "Tile 1/masks/image_part_002.png",
        "Tile 2/images/image_part_001.jpg", "Tile 2/images/image_part_002.jpg",
        "Tile 2/masks/image_part_001.png", "Tile 2/masks/image_part_002.png"]
    assert main(["data", "synth", str(out)]) == 2                       # refuses to overwrite
    assert "output folder exists and is not empty" in capsys.readouterr().err
    masks = [np.asarray(Image.open(p)) for p in out.rglob("*.png")]
    assert all(m.ndim == 3 and m.shape[2] == 3 for m in masks)           # RGB palette masks, like Dubai
