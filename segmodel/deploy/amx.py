"""int8 on AMX CPUs: refuse AMX tiles, so that XNNPACK runs its faster int8 kernels.

On a CPU with AMX-INT8 (and GFNI), XNNPACK runs full-int8 convolutions on AMX kernels that
compute 64 output channels at a time (16x64c4, its `gemm-config.c`), so a U-Net layer of 8-32
channels does the work of 64, and its int8 file runs no faster than float32. Its AVX512-VNNI
kernels (16 channels at a time) run the same files about twice as fast (docs/quantization.md).
XNNPACK has no switch for this, but it asks Linux for AMX tile data first (arch_prctl
ARCH_REQ_XCOMP_PERM) and uses AMX only if granted: a seccomp filter that refuses that one
request makes it pick VNNI.

The filter holds for the whole process and its children, for good, and XNNPACK decides once,
at its first delegate. So only processes that time or run TFLite files and never train call
`refuse()`, first (`export`, `predict`, the speed benchmarks): oneDNN's bf16 training wants
AMX. `python -m segmodel.amx COMMAND...` runs any command so (your own LiteRT app, a bench).
SEGMODEL_KEEP_AMX=1 keeps AMX everywhere.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

from ..runtime import cpu_flags

ARCH_GET_XCOMP_PERM, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 0x1022, 0x1023, 18
_NR_ARCH_PRCTL, _AUDIT_ARCH_X86_64 = 158, 0xC000003E
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_state: str | None = None  # what refuse() found, once per process


def cpu_has_amx_int8(cpuinfo: str = "/proc/cpuinfo") -> bool:
    return "amx_int8" in cpu_flags(cpuinfo)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def granted() -> bool:
    """This process may already use AMX tile data (something asked before us)."""
    mask = ctypes.c_uint64(0)
    return _libc().syscall(_NR_ARCH_PRCTL, ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) == 0 \
        and bool(mask.value >> XFEATURE_XTILEDATA & 1)


def _filter() -> bytes:
    """BPF: arch_prctl(ARCH_REQ_XCOMP_PERM, ...) -> EPERM; every other call allowed."""
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    prog = [(ld, 0, 0, 4), (jeq, 0, 5, _AUDIT_ARCH_X86_64),     # seccomp_data.arch
            (ld, 0, 0, 0), (jeq, 0, 3, _NR_ARCH_PRCTL),         # .nr
            (ld, 0, 0, 16), (jeq, 0, 1, ARCH_REQ_XCOMP_PERM),   # .args[0] (low 32 bits)
            (ret, 0, 0, eperm), (ret, 0, 0, allow)]
    return b"".join(struct.pack("HBBI", *op) for op in prog)


def install_filter() -> None:
    """Refuse AMX tile data to this process and its children (Linux x86-64), for good."""
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    code = ctypes.create_string_buffer(_filter())
    prog = SockFprog(len(code.raw) // 8, ctypes.addressof(code))
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
            libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def refuse() -> str:
    """Before the first TFLite interpreter of a process that never trains: refuse AMX on
    an AMX-INT8 CPU. Returns what holds, for the records: "refused", "not an AMX CPU",
    "kept (SEGMODEL_KEEP_AMX)", "kept (granted before)" or "kept (<why the filter failed>)"."""
    global _state
    if _state is None:
        _state = _refuse()
    return _state


def state() -> str:
    """What refuse() found in this process, for a record; "not refused" if nothing asked.
    Reading it never installs the filter (a record may be written in a process that trains)."""
    return _state or "not refused"


def _refuse() -> str:
    if sys.platform != "linux" or platform.machine() != "x86_64" or not cpu_has_amx_int8():
        return "not an AMX CPU"
    if os.environ.get("SEGMODEL_KEEP_AMX") == "1":
        return "kept (SEGMODEL_KEEP_AMX)"
    if granted():
        return "kept (granted before)"
    try:
        install_filter()
    except OSError as e:
        return f"kept (seccomp: {e.strerror})"
    return "refused"


def main(argv: list[str]) -> int:
    """`python -m segmodel.amx COMMAND [ARGS...]`: COMMAND with AMX tile data refused."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\nusage: python -m segmodel.amx COMMAND [ARGS...]",
              file=sys.stderr)
        return 0 if argv else 2
    print(f"amx: {refuse()}", file=sys.stderr, flush=True)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"amx: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
