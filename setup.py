"""Build hook only (metadata lives in pyproject.toml): ship the loopback .pth.

Adds two files at the top of site-packages, beside the `segmodel` package:
`segmodel-loopback.pth` and `_segmodel_loopback.py` (a copy of segmodel/experiment/loopback_hook.py),
so that every NNI manager started from the venv listens on 127.0.0.1 unless
SEGMODEL_BIND says otherwise (docs/security.md). A regular wheel takes them from
build_lib; an editable one (`pip install -e .`) only from install_lib, which is the
unpacked wheel there.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "segmodel-loopback.pth"
MODULE = "_segmodel_loopback"


class BuildPyWithLoopback(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            root = self.get_finalized_command("install").install_lib
        else:
            root = self.build_lib
        self.mkpath(root)
        self.copy_file(os.path.join("segmodel", "experiment", "loopback_hook.py"), os.path.join(root, MODULE + ".py"))
        with open(os.path.join(root, PTH), "w") as f:
            f.write(f"import {MODULE}; {MODULE}.install()\n")


setup(cmdclass={"build_py": BuildPyWithLoopback})
