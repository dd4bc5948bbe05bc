"""``shipit up`` with a ``backend: kubernetes`` deployment, against the in-repo API emulator:
the gateway starts its replica as a pod; the pod crashes on a node; the node is cordoned, with
an Event on it, and the cordon is counted in the gateway's own ``/metrics``. The gateway runs as
a real process (stopped by pid); the emulator serves on 127.0.0.1 in this test's event loop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from support.k8s_emulator import K8sEmulator
from support.replica_process import SHIPIT, free_port

MODEL = "llama-3.1-8b"


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], proc: subprocess.Popen[bytes], log: Path
) -> None:
    for _ in range(600):
        assert proc.poll() is None, f"shipit up exited:\n{log.read_text()[-3000:]}"
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_a_cordon_under_shipit_up_shows_in_its_metrics(tmp_path: Path) -> None:
    async def main() -> None:
        emu = K8sEmulator(autopilot=True)
        await emu.start()
        for n in ("n1", "n2"):
            emu.add_node(n, {"gpu": "l4"})
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps(emu.kubeconfig("serving")))
        cfg = {
            "deployments": [
                {
                    "name": "chat",
                    "model": MODEL,
                    "simulate": f"H100:{MODEL}",
                    "backend": "kubernetes",
                    "replicas": 1,
                    "kubernetes_backend": {
                        "kubeconfig": str(kubeconfig),
                        "node_health": {"failures_to_cordon": 1, "max_cordoned_fraction": 0.5},
                    },
                }
            ],
            "kubernetes": {
                "namespace": "serving",
                "cordon_nodes": True,
                "node_pools": [{"name": "l4", "node_selector": {"gpu": "l4"}}],
                "deployments": {"chat": {"gpus": 1, "placements": [{"pool": "l4"}]}},
            },
        }
        path = tmp_path / "shipit.yaml"
        path.write_text(json.dumps(cfg))
        port = free_port()
        log = tmp_path / "up.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [SHIPIT, "up", "-c", str(path), "--port", str(port)], stdout=out, stderr=out
            )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

                async def pod_running() -> bool:
                    pods = emu.pods("serving")
                    return bool(pods) and pods[0]["status"].get("phase") == "Running"

                await _until("the replica pod", pod_running, proc, log)
                [pod] = emu.pods("serving")
                node = pod["spec"]["nodeName"]
                emu.kill(pod["metadata"]["name"], reason="Error", message="exit 1", ns="serving")

                async def cordoned() -> bool:
                    return emu.node(node)["spec"].get("unschedulable") is True

                await _until("the cordon", cordoned, proc, log)

                async def cordon_event() -> bool:  # written just after the node's patch
                    return bool(emu.events("ShipitCordoned"))

                await _until("the cordon's Event", cordon_event, proc, log)
                [event] = emu.events("ShipitCordoned")
                assert event["involvedObject"]["name"] == node
                metrics = (await client.get("/metrics")).text
                sample = 'shipit_node_cordons_total{deployment="chat",reason="repeated_failures"}'
                [line] = [x for x in metrics.splitlines() if x.startswith(sample)]
                assert float(line.split()[-1]) == 1.0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:  # the emulator keeps answering while the gateway shuts down
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            await emu.close()

    asyncio.run(main())
