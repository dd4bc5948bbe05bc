"""The pod the Kubernetes replica backend creates, per engine: the embedded engine runs
``shipit replica``; vLLM and SGLang run their own OpenAI-compatible servers, as the rendered
workloads do; every pod passes ``kubernetes-validate --strict``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipit.backends.base import ReplicaSpec
from shipit.backends.fleet import Fleet
from shipit.backends.k8s_pods import replica_pod, settings_for
from shipit.config.gateway import parse_config
from shipit.config.k8s_backend import KubernetesBackendConfig

VALIDATOR = Path(sys.executable).with_name("kubernetes-validate")


def _config(engine: str) -> Any:
    return parse_config(
        {
            "deployments": [
                {
                    "name": "chat",
                    "model": "Qwen/Qwen3-8B",
                    "served_model_name": "qwen3-8b",
                    "backend": "kubernetes",
                    "simulate": "H100:llama-3.1-8b",
                    "replica_args": ["--max-num-seqs", "8"],
                    "routing": {"lora_affinity": {"adapters": {"sql": "/adapters/sql"}}},
                }
            ],
            "kubernetes": {
                "namespace": "llm",
                "images": {"registry": "registry.example.com/shipit", "tag": "1"},
                "deployments": {
                    "chat": {
                        "engine": engine,
                        "gpus": 2,
                        "engine_args": ["--max-model-len", "8192"],
                    }
                },
            },
        }
    )


def _pod(engine: str) -> dict[str, Any]:
    cfg = _config(engine)
    (d,) = cfg.deployments
    pod = replica_pod(Fleet.spec(d), settings_for(cfg, d), "chat-v1-abc123")
    out: dict[str, Any] = pod.to_dict()
    return out


def test_vllm_pods_run_vllm_serve() -> None:
    pod = _pod("vllm")
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "registry.example.com/shipit/replica-vllm:1"
    assert c["command"] == ["vllm", "serve"]
    assert c["args"] == [
        "Qwen/Qwen3-8B",
        "--served-model-name", "qwen3-8b",
        "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "2",
        "--load-format", "safetensors",
        "--max-model-len", "8192",
    ]  # fmt: skip
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert c["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["spec"]["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"  # vLLM's own


def test_sglang_pods_run_the_sglang_server() -> None:
    (c,) = _pod("sglang")["spec"]["containers"]
    assert c["image"] == "registry.example.com/shipit/replica-sglang:1"
    assert c["command"] == ["python3", "-m", "sglang.launch_server"]
    args = c["args"]
    assert args[:2] == ["--model-path", "Qwen/Qwen3-8B"]
    assert args[args.index("--tp-size") + 1] == "2"
    assert args[args.index("--served-model-name") + 1] == "qwen3-8b"
    assert args[-2:] == ["--max-model-len", "8192"]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_gpu_engines_get_none_of_shipits_replica_flags(engine: str) -> None:
    (c,) = _pod(engine)["spec"]["containers"]
    for flag in ("--simulate", "--drain-timeout-s", "--enable-lora-loading", "--max-num-seqs"):
        assert flag not in c["args"], flag


def test_embedded_pods_run_shipit_replica_with_the_deployments_flags() -> None:
    pod = _pod("embedded")
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["shipit", "replica"]
    args = c["args"]
    assert args[:2] == ["--model", "Qwen/Qwen3-8B"]
    assert args[args.index("--simulate") + 1] == "H100:llama-3.1-8b"
    assert args[args.index("--max-num-seqs") + 1] == "8"
    assert "--enable-lora-loading" in args and "volumes" not in pod["spec"]


def test_a_gpu_engine_needs_no_served_name_flag() -> None:
    cfg = KubernetesBackendConfig(engine="vllm", gpus=1)
    pod = replica_pod(ReplicaSpec("chat", "org/model"), cfg, "chat-v1-0")
    args = pod.to_dict()["spec"]["containers"][0]["args"]
    assert args[args.index("--served-model-name") + 1] == "org/model"


@pytest.mark.parametrize("engine", ["embedded", "vllm", "sglang"])
def test_pods_pass_strict_validation(engine: str, tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", **_pod(engine)}))
    done = subprocess.run(
        [str(VALIDATOR), "--strict", "-k", "1.33.0", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "passed" in done.stdout, done.stdout + done.stderr
