"""``shipit up --gateway-workers 2``: two gateway processes on one port. New connections are
answered by both (``/shipit/status`` names the pid), the second serves the first's replicas
(it starts none of its own), and one SIGTERM to ``shipit up`` stops every process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from support.up_process import SIM_MODEL, launch


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    cfg = {
        "deployments": [
            {
                "name": "sim",
                "model": SIM_MODEL,
                "simulate": f"H100:{SIM_MODEL}",
                "replicas": 1,
                "health_interval_s": 0.2,
                "replica_args": ["--log-level", "warning"],
            }
        ]
    }
    proc, port, log = launch(tmp_path, cfg, ready_replicas=1, args=("--gateway-workers", "2"))
    url = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        replica_urls: set[tuple[str, ...]] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            # a new connection each time: the kernel spreads connections, not requests
            status = httpx.get(url + "/shipit/status", timeout=10).json()
            pids.add(status["pid"])
            replica_urls.add(tuple(r["url"] for r in status["deployments"][0]["replicas"]))
        assert len(pids) == 2, f"only {pids} answered:\n{log.read_text()}"
        assert proc.pid in pids
        assert len(replica_urls) == 1, replica_urls  # both route to the same single replica
        body = {
            "model": SIM_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
        }
        for _ in range(6):
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200, r.text
        children = _children(proc.pid)
        workers = [p for p in children if p in pids]
        assert len(workers) == 1, (children, pids)
        replicas = [p for p in children if p not in pids]
        assert len(replicas) == 1, children  # the second worker started no replica
        assert not [p for p in _children(workers[0]) if _alive(p)]
    finally:
        proc.send_signal(15)
        code = proc.wait(timeout=90)
    assert code == 0, log.read_text()
    for pid in (*workers, *replicas):
        assert not _alive(pid), f"process {pid} outlived SIGTERM:\n{log.read_text()}"
