"""What the NNI manager on a port really listens on: the line `make experiment` prints.

Read from the kernel's socket table (psutil), not from SEGMODEL_BIND, so it shows what
another machine would find. `python -m segmodel.experiment.listening PORT [CONFIG]`; with CONFIG,
it also warns when trials run elsewhere (remote, Kubernetes) but cannot reach the manager.
"""
from __future__ import annotations

import ipaddress
import sys

SECURITY = "docs/security.md"


def listening(port: int, pid: int | None = None) -> list[str]:
    """The local IP addresses of the TCP sockets in LISTEN state on `port` (of `pid` if given)."""
    import psutil
    conns = psutil.Process(pid).net_connections(kind="tcp") if pid else psutil.net_connections(kind="tcp")
    return sorted({c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port})


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def describe(port: int, addresses: list[str]) -> str:
    """One line: where the web UI is and who can reach it."""
    if not addresses:
        return f"Nothing listens on port {port}: the NNI manager did not start (see nnictl's message above)."
    where = ", ".join(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in addresses)
    if all(is_loopback(ip) for ip in addresses):
        return (f"Web UI: http://127.0.0.1:{port}  (listening on {where} only: this machine; "
                f"BIND=all or BIND=<address> opens it, {SECURITY})")
    return (f"Web UI: http://127.0.0.1:{port}  (listening on {where}: reachable from the network, "
            f"no authentication; {SECURITY})")


def platform(config_path: str) -> str:
    """trainingService.platform of an NNI config file ('hybrid' for a list)."""
    import yaml
    with open(config_path) as f:
        service = (yaml.safe_load(f) or {}).get("trainingService") or {}
    return "hybrid" if isinstance(service, list) else str(service.get("platform", "local"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2) or not argv[0].isdigit():
        print("usage: python -m segmodel.experiment.listening PORT [CONFIG]", file=sys.stderr)
        return 2
    port = int(argv[0])
    addresses = listening(port)
    print(describe(port, addresses))
    if len(argv) == 2 and addresses and all(is_loopback(ip) for ip in addresses):
        where = platform(argv[1])
        if where != "local":
            print(f"warning: {argv[1]} runs {where} trials, which report back to this port: from another "
                  f"machine they cannot reach 127.0.0.1. Restart with BIND=all or BIND=<nniManagerIp> "
                  f"({SECURITY}).", file=sys.stderr)
    return 0 if addresses else 1


if __name__ == "__main__":
    sys.exit(main())
