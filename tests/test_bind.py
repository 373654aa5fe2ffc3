"""The NNI manager's web UI / REST API listens on 127.0.0.1 unless SEGMODEL_BIND opens it.

Three layers, each real: the Node preload (segmodel/experiment/loopback.js) in NNI's own node binary;
the import hook that puts it in NODE_OPTIONS (segmodel/experiment/loopback_hook.py); and the whole
route a user takes - `pip install` (regular and editable) into a fresh venv, then that
venv's `nnictl create` - read back from the kernel's socket table. No test sends a byte
to any address but loopback.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import nni_helpers
import nni_node
import psutil
import pytest
from nni_helpers import ROOT, NNIExperiment, base_config, final_and_intermediate

from segmodel.experiment import listening, loopback_hook

NODE = str(Path(nni_node.__path__[0]) / "node")
PRELOAD = ROOT / "segmodel" / "experiment" / "loopback.js"
WILDCARDS = {"0.0.0.0", "::"}

# A stand-in for nni_node/main.js: one HTTP server, listened to as LISTEN says, then a GET
# to every address in PROBE (loopback ones only), then its address as JSON, then close.
# A server the preload left open (its 127.0.0.1 twin) would keep node from exiting.
FAKE_MAIN = r"""
const http = require('http');
const server = http.createServer((req, res) => res.end('nni'));
const how = process.env.LISTEN || 'port';
const port = 0;
if (how === 'port') server.listen(port);
else if (how === 'wildcard') server.listen(port, '0.0.0.0');
else if (how === 'options') server.listen({ port });
else if (how === 'host') server.listen(port, '127.0.0.1');
else if (how === 'callback') server.listen(() => {});  // LISTEN=none: no server at all
server.on('listening', async () => {
    const { address, port } = server.address();
    const probes = {};
    for (const ip of (process.env.PROBE || '').split(',').filter(Boolean)) {
        probes[ip] = await new Promise((resolve) => {
            http.get({ host: ip, port, path: '/' }, (res) => {
                let body = ''; res.on('data', (d) => { body += d; }); res.on('end', () => resolve(body));
            }).on('error', (e) => resolve(e.code));
        });
    }
    console.log(JSON.stringify({ address, probes }));
    server.close();
});
"""
# NNI's TensorBoard button: getTunerProc(['tensorboard', '--bind_all --logdir_spec=...', '--port=N'])
FAKE_TENSORBOARD_MAIN = r"""
require('child_process').spawn('tensorboard', ['--bind_all --logdir_spec=1-abc:/tmp/tb', '--port=6006'],
                               { shell: true, stdio: 'inherit' });
"""


def clean_env(**overrides) -> dict:
    """os.environ without a NODE_OPTIONS or SEGMODEL_BIND of its own (this process's may
    already carry the preload, from the venv's hook), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_OPTIONS", "SEGMODEL_BIND")}
    return {**env, **overrides}


def run_node(script: Path, env: dict | None = None, args=(), preload: Path = PRELOAD) -> subprocess.CompletedProcess:
    env = clean_env(**(env or {}), NODE_OPTIONS=loopback_hook.node_options("", str(preload)))
    return subprocess.run([NODE, str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def fake_manager(folder: Path, source: str = FAKE_MAIN) -> Path:
    """`source` saved as <folder>/nni_node/main.js: what the preload recognizes as NNI's manager."""
    script = folder / "nni_node" / "main.js"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(source)
    return script


def listened(script: Path, bind: str | None, how: str = "port", probe: str = "") -> dict:
    env = {"LISTEN": how, "PROBE": probe}
    if bind is not None:
        env["SEGMODEL_BIND"] = bind
    out = run_node(script, env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------
# The preload, in NNI's node
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["port", "wildcard", "options", "callback"])
def test_preload_binds_loopback_by_default(tmp_path, how):
    got = listened(fake_manager(tmp_path), None, how, probe="127.0.0.1")
    assert got["address"] == "127.0.0.1"
    assert got["probes"] == {"127.0.0.1": "nni"}


def test_preload_all_leaves_nni_alone(tmp_path):
    assert listened(fake_manager(tmp_path), "all")["address"] in WILDCARDS
    assert listened(fake_manager(tmp_path), "ALL", how="wildcard")["address"] == "0.0.0.0"


def test_preload_keeps_a_specific_host(tmp_path):
    assert listened(fake_manager(tmp_path), "127.0.0.2", how="host")["address"] == "127.0.0.1"


def test_preload_address_also_answers_on_127_0_0_1(tmp_path):
    """BIND=<address>: that address, and 127.0.0.1 too (nnictl and the tuner use localhost).
    127.0.0.2 stands in for a LAN address: Linux routes all of 127/8 to loopback."""
    got = listened(fake_manager(tmp_path), "127.0.0.2", probe="127.0.0.2,127.0.0.1,127.0.0.3")
    assert got["address"] == "127.0.0.2"
    assert got["probes"] == {"127.0.0.2": "nni", "127.0.0.1": "nni", "127.0.0.3": "ECONNREFUSED"}


def test_preload_ignores_other_node_programs(tmp_path):
    other = tmp_path / "server.js"
    other.write_text(FAKE_MAIN)
    out = run_node(other)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["address"] in WILDCARDS


def test_preload_bad_value_is_one_line_exit_2(tmp_path):
    out = run_node(fake_manager(tmp_path), {"SEGMODEL_BIND": "everywhere"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        'error: SEGMODEL_BIND="everywhere": expected "all" or an IP address '
        '(e.g. 127.0.0.1, or the nniManagerIp that trials connect to)']


@pytest.mark.parametrize("value", ["", " all ", "ALL", "localhost", "127.0.0.2", "::1", "0.0.0.0", "fe80::1%eth0",
                                   "everywhere", "127.0.0.256", "host.example", "0.0.0.0:8080"])
def test_python_and_node_agree_on_bind_values(tmp_path, value):
    """The hook (nnictl's side) and the preload (the manager's) accept the same values,
    and both refuse a bad one with the same line and exit 2."""
    python = subprocess.run([sys.executable, "-m", "segmodel.experiment.loopback_hook"], env=clean_env(SEGMODEL_BIND=value),
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    node = run_node(fake_manager(tmp_path), {"SEGMODEL_BIND": value, "LISTEN": "none"})  # judge, don't listen
    assert (python.returncode, python.stderr) == (node.returncode, node.stderr if node.returncode else "")
    assert python.returncode == (2 if loopback_hook.bind_error(value) else 0)


def test_preload_warns_when_remote_trials_cannot_connect(tmp_path):
    script = fake_manager(tmp_path)
    out = run_node(script, {"LISTEN": "port"}, args=["--port", "8080", "--mode", "remote"])
    assert "remote trials on other machines cannot connect back" in out.stderr
    assert "cannot connect" not in run_node(script, {"LISTEN": "port"}, args=["--mode", "local"]).stderr


@pytest.mark.parametrize("bind, expected", [
    (None, "--host 127.0.0.1 --logdir_spec=1-abc:/tmp/tb --port=6006"),
    ("all", "--bind_all --logdir_spec=1-abc:/tmp/tb --port=6006"),
])
def test_preload_tensorboard_button(tmp_path, bind, expected):
    """NNI starts TensorBoard with --bind_all; here it gets the manager's address instead."""
    fake = tmp_path / "bin" / "tensorboard"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}"}
    if bind:
        env["SEGMODEL_BIND"] = bind
    out = run_node(fake_manager(tmp_path, FAKE_TENSORBOARD_MAIN), env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


# ---------------------------------------------------------------------------------
# The hook: NODE_OPTIONS of a process that starts a manager
# ---------------------------------------------------------------------------------
def test_node_options_appends_once_and_quotes():
    assert loopback_hook.node_options("", "/a/loopback.js") == '--require "/a/loopback.js"'
    mine = "--max-old-space-size=100"
    assert loopback_hook.node_options(mine, "/a/loopback.js") == f'{mine} --require "/a/loopback.js"'
    once = loopback_hook.node_options(mine, "/a/loopback.js")
    assert loopback_hook.node_options(once, "/a/loopback.js") == once


def test_node_parses_a_quoted_preload_path(tmp_path):
    """A checkout under a folder with a space and a quote still loads the preload."""
    odd = tmp_path / 'my "seg" dir' / "loopback.js"
    odd.parent.mkdir()
    shutil.copy(PRELOAD, odd)
    out = run_node(fake_manager(tmp_path), {"LISTEN": "port"}, preload=odd)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["address"] == "127.0.0.1"


HOOK_PROBE = """
import json, os, sys
sys.path.insert(0, {root!r})
from segmodel.experiment import loopback_hook
loopback_hook.install(); loopback_hook.install()
before = os.environ.get("NODE_OPTIONS")
import nni_node
print(json.dumps([before, os.environ.get("NODE_OPTIONS")]))
"""


def test_hook_sets_node_options_when_nni_node_is_imported():
    """Nothing before NNI's launcher imports nni_node; then the user's options + the preload, once."""
    env = clean_env(NODE_OPTIONS="--max-old-space-size=100")
    out = subprocess.run([sys.executable, "-c", HOOK_PROBE.format(root=str(ROOT))], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout)
    assert before == "--max-old-space-size=100"
    assert after == f'--max-old-space-size=100 --require "{PRELOAD}"'


def test_describe_says_who_can_reach_it():
    assert "127.0.0.1:8080 only: this machine" in listening.describe(8080, ["127.0.0.1"])
    assert "reachable from the network" in listening.describe(8080, ["::"])
    assert "[::]:8080" in listening.describe(8080, ["::"])
    assert "did not start" in listening.describe(8080, [])
    assert listening.is_loopback("::ffff:127.0.0.1") and not listening.is_loopback("0.0.0.0")


def test_listening_reads_the_real_socket(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening.listening(port) == ["127.0.0.1"]
        assert listening.listening(port, pid=os.getpid()) == ["127.0.0.1"]
    assert listening.listening(port) == []


@pytest.mark.parametrize("config, warns", [("config.yml", False), ("configs/remote.yml", True),
                                           ("configs/kubeflow.yml", True)])
def test_make_experiment_line_warns_for_trials_elsewhere(capsys, config, warns):
    """`make experiment`'s last step, against a real loopback socket: remote and Kubernetes
    configs get a warning that their trials cannot report back."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listening.main([str(port), str(ROOT / config)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"Web UI: http://127.0.0.1:{port}  (listening on 127.0.0.1:{port} only")
    assert ("cannot reach 127.0.0.1" in err) == warns, err
    assert listening.main([str(port)]) == 1  # nothing listens any more


# ---------------------------------------------------------------------------------
# pip install + nnictl create from that venv, as a user does
# ---------------------------------------------------------------------------------
def make_venv(tmp: Path, editable: bool) -> Path:
    """A fresh venv with this package pip-installed (--no-deps), seeing the project venv's
    packages (nni, TensorFlow) through a plain path line, and NNI's `nnictl` script."""
    src = tmp / "src"
    if not src.exists():  # a copy: the build writes build/ and *.egg-info next to the sources
        src.mkdir(parents=True)
        for name in ("pyproject.toml", "setup.py", "README.md"):
            shutil.copy(ROOT / name, src / name)
        shutil.copytree(ROOT / "segmodel", src / "segmodel", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp / ("venv-editable" if editable else "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--ignore-installed", *(["-e"] if editable else []), str(src)]
    out = subprocess.run(pip, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert out.returncode == 0, out.stdout + out.stderr
    # NNI's console script, as pip writes it into a venv where nni is installed.
    script = (nni_helpers.BIN / "nnictl").read_text().split("\n", 1)[1]
    nnictl = venv / "bin" / "nnictl"
    nnictl.write_text(f"#!{python}\n{script}")
    nnictl.chmod(0o755)
    return venv


@pytest.fixture(scope="module")
def venvs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bind")
    return {"regular": make_venv(tmp, editable=False), "editable": make_venv(tmp, editable=True)}


def started_by_hook(manager: psutil.Process, venv: Path) -> bool:
    """The manager got the preload from `venv`'s hook, not from the test's environment."""
    home = venv.parent / "src" if venv.name == "venv-editable" else venv
    options = manager.environ().get("NODE_OPTIONS", "")
    return "loopback.js" in options and str(home) in options


def manager_sockets(port: int) -> tuple[psutil.Process, set[tuple[str, int]]]:
    """The process listening on `port` (NNI's node manager) and all its listening sockets."""
    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert len(pids) == 1 and None not in pids, pids
    proc = psutil.Process(pids.pop())
    assert any(arg.endswith(os.path.join("nni_node", "main.js")) for arg in proc.cmdline()), proc.cmdline()
    return proc, {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp")
                  if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["regular", "editable"])
def test_pip_install_ships_the_hook(venvs, kind):
    venv = venvs[kind]
    python = venv / "bin" / "python"
    probe = "import os; import nni_node; print(os.environ['NODE_OPTIONS'])"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, cwd=venv,
                         env=clean_env(NODE_OPTIONS="--max-old-space-size=100"))
    assert out.returncode == 0, out.stderr
    home = venv.parent / "src" if kind == "editable" else Path(
        subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                text=True).strip())
    assert out.stdout.strip() == f'--max-old-space-size=100 --require "{home / "segmodel" / "experiment" / "loopback.js"}"'


@pytest.mark.slow
def test_nnictl_experiment_listens_on_loopback_only(venvs, tmp_path, monkeypatch):
    """`nnictl create` from a pip-installed venv: the manager's only listening socket is
    127.0.0.1:port, trials report, the web UI serves its page there."""
    monkeypatch.setattr(nni_helpers, "NNICTL", str(venvs["editable"] / "bin" / "nnictl"))
    with NNIExperiment(base_config(maxTrialNumber=1), tmp_path, env=clean_env(NODE_OPTIONS="")) as exp:
        manager, sockets = manager_sockets(exp.port)
        assert sockets == {("127.0.0.1", exp.port)}, sockets
        assert started_by_hook(manager, venvs["editable"]), manager.environ().get("NODE_OPTIONS")
        assert listening.describe(exp.port, listening.listening(exp.port)).startswith(
            f"Web UI: http://127.0.0.1:{exp.port}  (listening on 127.0.0.1:{exp.port} only")
        with urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/", timeout=30) as r:
            assert r.status == 200 and b'<div id="root">' in r.read()
        trials = exp.wait_done(n_trials=1)
        assert [t["status"] for t in trials] == ["SUCCEEDED"], exp.trial_log(trials[0]["trialJobId"])
        final, inter = final_and_intermediate(exp.metrics(trials[0]["trialJobId"]))
        assert len(final) == 1 and len(inter) == 2
        assert manager_sockets(exp.port)[1] == {("127.0.0.1", exp.port)}  # still, after the trial


@pytest.mark.slow
def test_nnictl_experiment_opt_in_listens_on_all_interfaces(venvs, tmp_path, monkeypatch):
    """SEGMODEL_BIND=all, the preload loaded all the same: NNI's own every-interface socket."""
    monkeypatch.setattr(nni_helpers, "NNICTL", str(venvs["regular"] / "bin" / "nnictl"))
    env = clean_env(NODE_OPTIONS="", SEGMODEL_BIND="all")
    with NNIExperiment(base_config(maxTrialNumber=1), tmp_path, env=env) as exp:
        manager, sockets = manager_sockets(exp.port)
        assert started_by_hook(manager, venvs["regular"]), manager.environ().get("NODE_OPTIONS")
        assert len(sockets) == 1 and sockets.pop() in {(ip, exp.port) for ip in WILDCARDS}
        assert "reachable from the network" in listening.describe(exp.port, listening.listening(exp.port))
