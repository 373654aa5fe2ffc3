"""AMX refused to a process (segmodel/amx.py): the filter refuses exactly the AMX tile request,
in the process and its children, on any x86-64 Linux machine (a CPU without AMX answers that
request EINVAL, the filter EPERM), and `refuse()` says what holds."""
import errno
import json
import os
import platform
import subprocess
import sys

import pytest

from segmodel.deploy import amx

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="seccomp filter for x86-64 Linux")

PROBE = """
import ctypes, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
def ask():
    rc = libc.syscall(158, 0x1023, 18)  # arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    return 0 if rc == 0 else ctypes.get_errno()
mask = ctypes.c_uint64(0)
get = libc.syscall(158, 0x1022, ctypes.byref(mask))  # ARCH_GET_XCOMP_PERM: not refused
child = subprocess.run([sys.executable, "-c", "import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                        "l.syscall(158, 0x1023, 18); print(ctypes.get_errno())"], capture_output=True, text=True)
print(json.dumps({"req": ask(), "get": get, "child": int(child.stdout)}))
"""


def _run(code, env=None):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return out


def test_the_filter_refuses_the_amx_request_only_and_children_inherit_it():
    before = json.loads(_run(PROBE).stdout)
    assert before["req"] != errno.EPERM  # granted (0) on an AMX CPU, EINVAL elsewhere
    after = json.loads(_run("from segmodel.deploy import amx; amx.install_filter()\n" + PROBE).stdout)
    assert after == {"req": errno.EPERM, "get": 0, "child": errno.EPERM}


def test_refuse_says_what_holds(monkeypatch):
    monkeypatch.setattr(amx, "cpu_has_amx_int8", lambda: False)
    assert amx._refuse() == "not an AMX CPU"
    monkeypatch.setattr(amx, "cpu_has_amx_int8", lambda: True)
    monkeypatch.setenv("SEGMODEL_KEEP_AMX", "1")
    assert amx._refuse() == "kept (SEGMODEL_KEEP_AMX)"


def test_python_m_segmodel_amx_runs_a_command_with_amx_refused():
    """On an AMX-INT8 CPU the command's request is refused; elsewhere it runs as it is."""
    env = {k: v for k, v in os.environ.items() if k != "SEGMODEL_KEEP_AMX"}
    out = subprocess.run([sys.executable, "-m", "segmodel.amx", sys.executable, "-c", PROBE],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    state, probe = out.stderr.strip().splitlines()[-1], json.loads(out.stdout)
    if amx.cpu_has_amx_int8():
        assert state == "amx: refused" and probe["req"] == errno.EPERM
    else:
        assert state == "amx: not an AMX CPU" and probe["req"] != errno.EPERM
    usage = subprocess.run([sys.executable, "-m", "segmodel.amx"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: python -m segmodel.amx COMMAND" in usage.stderr
    missing = subprocess.run([sys.executable, "-m", "segmodel.amx", "no-such-command"], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.splitlines()[-1] == \
        "amx: cannot run no-such-command: No such file or directory"


def test_state_is_read_only(monkeypatch):
    monkeypatch.setattr(amx, "_state", None)
    assert amx.state() == "not refused" and amx._state is None
