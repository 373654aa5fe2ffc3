"""A throwaway OpenSSH server on 127.0.0.1 for tests of NNI's `remote` training service.

Everything lives in one folder: a host key, a client key made at start-up, the
authorized_keys file, sshd_config and the log. Key login only, no PAM, listening on
loopback only, stopped (by its own pid) on exit.

    with LocalSshd(tmp_path / "sshd") as sshd:
        sshd.port, sshd.user, sshd.key_file   # -> a machineList entry

Needs Debian's `openssh-server` (`apt-get install -y openssh-server`); `sshd_binary()`
says why it cannot run, so a test can skip with that reason.

Run alone for a manual check: `python tests/sshd.py` starts one, runs `ssh ... true`
through it and stops it.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# NNI needs port+1 free too; harmless for sshd
from segmodel.experiment.manager import free_port

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def sshd_binary() -> tuple[str | None, str]:
    """(path to sshd, "") or (None, why not)."""
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            break
    else:
        path = shutil.which("sshd")
        if not path:
            return None, "sshd not found: install Debian's openssh-server (apt-get install -y openssh-server)"
    if not shutil.which("ssh-keygen"):
        return None, "ssh-keygen not found: install openssh-client"
    if os.geteuid() != 0:
        return None, "sshd must run as root to log users in (privilege separation); tests run as non-root"
    return path, ""


class LocalSshd:
    """sshd on 127.0.0.1:<free port> that accepts one key, generated here, for the current user.

    `env` becomes `SetEnv` lines: variables every SSH session (and so every NNI trial
    started through it) sees, as a worker's login environment would provide them.
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None):
        self.dir = Path(workdir)
        self.env = dict(env or {})
        self.user = getpass.getuser()
        self.port = 0
        self.key_file = self.dir / "client_key"
        self.log_file = self.dir / "sshd.log"
        self._proc: subprocess.Popen | None = None

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> "LocalSshd":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 15) -> None:
        binary, why = sshd_binary()
        if not binary:
            raise RuntimeError(why)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        host_key = self.dir / "host_ed25519"
        for key in (host_key, self.key_file):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "segmodel-test",
                                "-f", str(key)], check=True, capture_output=True)
        authorized = self.dir / "authorized_keys"
        authorized.write_text(Path(f"{self.key_file}.pub").read_text())
        authorized.chmod(0o600)
        # sshd refuses to start without its privilege-separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

        last_error = ""
        for _ in range(5):  # a free port can be taken between probing and binding
            self.port = free_port()
            config = self._write_config(host_key, authorized)
            check = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"sshd rejected {config}: {check.stderr.strip()}")
            log = open(self.log_file, "ab")
            self._proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)],
                                          stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            if self._wait_listening(timeout):
                return
            last_error = self.log_tail()
            self.stop()
        raise RuntimeError(f"sshd did not start on 127.0.0.1: {last_error}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.terminate()  # sshd -D: SIGTERM stops the listener; sessions end with it
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    # -- helpers -----------------------------------------------------------------
    def _write_config(self, host_key: Path, authorized: Path) -> Path:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"AllowUsers {self.user}",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
            "MaxStartups 50",
            "MaxSessions 50",
            # NNI uploads the trial code and writes the trial keeper's config over SFTP.
            "Subsystem sftp internal-sftp",
        ]
        if self.env:  # one SetEnv line: sshd keeps only the first line of most keywords
            lines.append("SetEnv " + " ".join(f'{k}="{v}"' for k, v in self.env.items()))
        path = self.dir / "sshd_config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def ssh(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run `command` through this server with the OpenSSH client."""
        return subprocess.run(
            ["ssh", "-i", str(self.key_file), "-p", str(self.port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.dir / 'known_hosts'}",
             f"{self.user}@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def machine(self, **extra) -> dict:
        """This server as an entry of NNI's `machineList`."""
        return {"host": "127.0.0.1", "port": self.port, "user": self.user,
                "sshKeyFile": str(self.key_file), **extra}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, LocalSshd(Path(tmp), env={"SEGMODEL_PROBE": "ok"}) as sshd:
        out = sshd.ssh("echo $SEGMODEL_PROBE $HOME")
        print(f"port {sshd.port}: rc={out.returncode} stdout={out.stdout.strip()!r} stderr={out.stderr.strip()!r}")
        sys.exit(out.returncode)
