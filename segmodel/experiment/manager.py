"""Talking to a running NNI manager: its REST API and ports.

A trial is not told how many trials run beside it, so it asks: $SEGMODEL_TRIAL_CONCURRENCY
if set, else the NNI manager's REST API (its address is in the trial's
$NNI_TRIAL_COMMAND_CHANNEL), else 1. `runtime.configure` divides the cores by that number.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import urllib.parse
import urllib.request

from .records import ExperimentError

CONCURRENCY_ENV = "SEGMODEL_TRIAL_CONCURRENCY"


def free_port() -> int:
    """A free TCP port for `nnictl create --port`; NNI also uses port+1 internally, so both are free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise ExperimentError("no free pair of ports for the NNI manager")


def _manager_urls(channel: str) -> list[str]:
    """Candidate REST URLs for the experiment profile, from the trial's command-channel
    URL (ws://host:port/[url_prefix/]channel-path/id): the prefix is unknown, so try
    each leading run of path segments, shortest first."""
    url = urllib.parse.urlsplit(channel)
    if not url.hostname or not url.port:
        return []
    scheme = "https" if url.scheme in ("wss", "https") else "http"
    parts = [p for p in url.path.split("/") if p]
    return [f"{scheme}://{url.netloc}/" + "/".join([*parts[:k], "api/v1/nni/experiment"])
            for k in range(len(parts))]


def concurrency_from_profile(profile: dict) -> int | None:
    """trialConcurrency per machine from NNI's experiment profile (remote training
    services spread trials over `machineList`)."""
    params = (profile or {}).get("params") or {}
    n = params.get("trialConcurrency")
    if not isinstance(n, int) or n < 1:
        return None
    services = params.get("trainingService")
    services = services if isinstance(services, list) else [services or {}]
    machines = sum(len(s.get("machineList") or []) for s in services if isinstance(s, dict))
    return max(1, math.ceil(n / machines)) if machines else n


def nni_concurrency(timeout: float = 2.0) -> int | None:
    """The running experiment's trial concurrency, asked of the NNI manager, or None."""
    channel = os.environ.get("NNI_TRIAL_COMMAND_CHANNEL", "")
    for url in _manager_urls(channel):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                profile = json.loads(r.read() or b"null")
        except (OSError, ValueError):
            continue
        if isinstance(profile, dict) and "params" in profile:
            return concurrency_from_profile(profile)
    return None


def trial_concurrency() -> tuple[int, str]:
    """(trials running at once on this machine, where that number came from)."""
    raw = os.environ.get(CONCURRENCY_ENV, "").strip()
    if raw:
        try:
            return max(1, int(raw)), CONCURRENCY_ENV
        except ValueError:
            print(f"warning: ignoring {CONCURRENCY_ENV}={raw!r} (not an integer)", file=sys.stderr)
    if os.environ.get("NNI_TRIAL_COMMAND_CHANNEL"):
        n = nni_concurrency()
        if n is not None:
            return n, "NNI experiment"
    return 1, "default"
