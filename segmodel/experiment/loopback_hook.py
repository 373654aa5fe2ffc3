"""Give every NNI manager started from this venv the loopback preload (segmodel/experiment/loopback.js).

Why: NNI 3.0's manager serves its unauthenticated web UI and REST API on every interface
(docs/security.md). The manager is a Node process that `nnictl` (or nni.experiment's
Python API) spawns with the caller's environment, so NODE_OPTIONS reaches it.

How: pip installs `segmodel-loopback.pth` and a copy of this file as the top-level module
`_segmodel_loopback` into site-packages (setup.py; both for `pip install .` and `-e .`).
The .pth runs `install()` at every interpreter start of the venv, so this file stays
cheap: it imports nothing but os and sys (not segmodel, whose __init__ sets environment
variables, nor nni) and only adds an import hook. The hook fires when `nni_node` is
imported - NNI's launchers do that right before they spawn the manager - and appends
`--require ".../segmodel/experiment/loopback.js"` to NODE_OPTIONS (a user's own options stay).
An unusable SEGMODEL_BIND stops the launcher there with one line, exit 2 (also
`python -m segmodel.experiment.loopback_hook`, which `make experiment` runs first).
"""
import os
import sys

TRIGGER = "nni_node"   # imported by nni.experiment.launcher and nnictl's legacy launcher only
PRELOAD = "loopback.js"


def node_options(current: str, preload: str) -> str:
    """NODE_OPTIONS `current` with `--require preload` appended once (quoted for Node)."""
    if preload in current:
        return current
    quoted = '"' + preload.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{current} --require {quoted}".strip()


def bind_error(value: str) -> str | None:
    """Why SEGMODEL_BIND=value is unusable, or None. loopback.js applies the same rule."""
    import ipaddress
    import json
    text = value.strip()
    if text.lower() in ("", "all") or text == "localhost":
        return None
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        return (f'SEGMODEL_BIND={json.dumps(value)}: expected "all" or an IP address '
                "(e.g. 127.0.0.1, or the nniManagerIp that trials connect to)")


def check_bind() -> None:
    problem = bind_error(os.environ.get("SEGMODEL_BIND", ""))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)


def preload_path() -> str | None:
    """segmodel/experiment/loopback.js of the segmodel this interpreter imports, without importing it."""
    from importlib.util import find_spec
    spec = find_spec("segmodel")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "experiment", PRELOAD)
        if os.path.isfile(path):
            return path
    return None


def arm() -> None:
    """Put the preload in this process's NODE_OPTIONS (inherited by the manager)."""
    check_bind()
    preload = preload_path()
    if preload:
        os.environ["NODE_OPTIONS"] = node_options(os.environ.get("NODE_OPTIONS", ""), preload)


class _Hook:
    """A meta-path finder that finds nothing: it only notices the import of TRIGGER."""
    segmodel_loopback = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname == TRIGGER:
            arm()
        return None


def install() -> None:
    """Add the hook once (site-packages may be processed twice, via lib and lib64)."""
    if TRIGGER in sys.modules:
        arm()
    elif not any(getattr(f, "segmodel_loopback", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


if __name__ == "__main__":
    check_bind()
