"""``shipit render k8s``: the objects a shipit.yaml becomes, checked field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from shipit.backends.k8s_pods import labels as pod_labels
from shipit.cli.main import build_app
from shipit.config.gateway import ConfigError, load_config, parse_config
from shipit.deploy import k8s

ROOT = Path(__file__).resolve().parents[3]
README_EXAMPLE = ROOT / "examples" / "shipit.yaml"
MULTIPOOL = ROOT / "examples" / "k8s-multipool.yaml"
API_BACKED = ROOT / "examples" / "k8s-backend.yaml"


def _objects(path: Path) -> list[dict[str, Any]]:
    return k8s.render(load_config(path))


def _of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _replica_workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        n: o
        for n, o in _of(objects, "Deployment").items()
        if o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "replica"
    }


def test_readme_example_renders_the_whole_stack() -> None:
    objects = _objects(README_EXAMPLE)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == sorted(
        {
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ServiceMonitor",
            "PrometheusRule",
        }
    )
    assert objects[0]["kind"] == "Namespace"
    workloads = _replica_workloads(objects)
    assert list(workloads) == ["chat-v1-default"]
    # replicas: 2 is given beside autoscaling: that is how many start.
    assert workloads["chat-v1-default"]["spec"]["replicas"] == 2
    # No GPU for the embedded engine.
    container = workloads["chat-v1-default"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert container["args"][:3] == ["replica", "--model", "smollm2-135m-instruct"]


def test_multipool_has_one_workload_per_deployment_version_and_pool() -> None:
    workloads = _replica_workloads(_objects(MULTIPOOL))
    assert sorted(workloads) == [
        "llama-70b-v1-h100-reserved",
        "llama-70b-v1-h100-spot",
        "llama-70b-v2-h100-reserved",
        "llama-8b-v1-l4",
    ]
    assert [workloads[n]["spec"]["replicas"] for n in sorted(workloads)] == [2, 2, 1, 2]


def test_gpu_requests_equal_limits_and_engine_tp() -> None:
    workloads = _replica_workloads(_objects(MULTIPOOL))
    big = workloads["llama-70b-v1-h100-spot"]["spec"]["template"]["spec"]
    res = big["containers"][0]["resources"]
    assert res["requests"]["nvidia.com/gpu"] == 4
    assert res["limits"]["nvidia.com/gpu"] == 4
    assert big["containers"][0]["command"] == ["vllm", "serve"]
    args = big["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[0] == "/models"  # weights from the mounted claim
    small = workloads["llama-8b-v1-l4"]["spec"]["template"]["spec"]
    assert small["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert small["containers"][0]["command"] == ["python3", "-m", "sglang.launch_server"]


def test_pool_placement_selector_tolerations_affinity() -> None:
    workloads = _replica_workloads(_objects(MULTIPOOL))
    spot = workloads["llama-70b-v1-h100-spot"]["spec"]["template"]["spec"]
    assert spot["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    keys = [t["key"] for t in spot["tolerations"]]
    assert keys == ["cloud.google.com/gke-spot", "nvidia.com/gpu"]
    term = spot["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}
    ]
    reserved = workloads["llama-70b-v1-h100-reserved"]["spec"]["template"]["spec"]
    assert "affinity" not in reserved
    assert [t["key"] for t in reserved["tolerations"]] == ["nvidia.com/gpu"]
    labels = workloads["llama-70b-v1-h100-spot"]["spec"]["template"]["metadata"]["labels"]
    assert labels["shipit.dev/capacity"] == "spot"
    assert labels["shipit.dev/version"] == "v1"
    l4 = workloads["llama-8b-v1-l4"]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in l4
    assert l4["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 50


def test_topology_spread_over_nodes_and_zones_with_the_workload_selector() -> None:
    w = _replica_workloads(_objects(MULTIPOOL))["llama-70b-v2-h100-reserved"]
    spread = w["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    for c in spread:
        assert c["labelSelector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]


def test_probes_follow_the_cold_start_and_the_health_check() -> None:
    cfg = load_config(MULTIPOOL)
    w = _replica_workloads(k8s.render(cfg))["llama-70b-v1-h100-reserved"]
    c = w["spec"]["template"]["spec"]["containers"][0]
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    # startup_timeout_s: 900 in the file, probed every 5 s.
    assert startup["periodSeconds"] * startup["failureThreshold"] == 900
    ready = c["readinessProbe"]
    assert ready["httpGet"]["path"] == "/health"
    assert ready["failureThreshold"] == 3  # health.unhealthy_threshold's default
    # /health is 503 while draining on purpose: liveness must not kill a draining replica.
    assert "tcpSocket" in c["livenessProbe"]
    assert "httpGet" not in c["livenessProbe"]


def test_grace_periods_exceed_the_drain_timeouts() -> None:
    cfg = load_config(MULTIPOOL)
    objects = k8s.render(cfg)
    drains = {d.name: d.drain_timeout_s for d in cfg.deployments}
    for name, w in _replica_workloads(objects).items():
        dep = w["metadata"]["labels"]["shipit.dev/deployment"]
        assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drains[dep], name
    gw = _of(objects, "Deployment")["shipit-gateway"]["spec"]["template"]["spec"]
    assert gw["terminationGracePeriodSeconds"] > cfg.gateway.graceful_shutdown_s == 45


def test_embedded_replica_drains_for_its_timeout() -> None:
    cfg = parse_config({"deployments": [{"name": "a", "drain_timeout_s": 42}]})
    w = _replica_workloads(k8s.render(cfg))["a-v1-default"]
    spec = w["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert args[args.index("--drain-timeout-s") + 1] == "42"
    assert spec["terminationGracePeriodSeconds"] == 57


def test_pod_disruption_budgets_per_deployment_and_gateway() -> None:
    objects = _objects(MULTIPOOL)
    pdbs = _of(objects, "PodDisruptionBudget")
    assert sorted(pdbs) == ["llama-70b-replicas", "llama-8b-replicas", "shipit-gateway"]
    sel = pdbs["llama-70b-replicas"]["spec"]["selector"]["matchLabels"]
    assert sel == {"app.kubernetes.io/component": "replica", "shipit.dev/deployment": "llama-70b"}
    assert pdbs["llama-70b-replicas"]["spec"]["maxUnavailable"] == 1
    # The budget covers every workload of the deployment: each one's pods match it.
    for w in _replica_workloads(objects).values():
        labels = w["spec"]["template"]["metadata"]["labels"]
        dep = labels["shipit.dev/deployment"]
        budget = pdbs[f"{dep}-replicas"]["spec"]["selector"]["matchLabels"]
        assert budget.items() <= labels.items()


def test_a_gateway_that_does_not_use_the_api_gets_no_grant_and_no_token() -> None:
    objects = _objects(README_EXAMPLE)
    assert not {"Role", "RoleBinding", "ClusterRole"} & {o["kind"] for o in objects}
    assert _of(objects, "ServiceAccount")["shipit-gateway"]["automountServiceAccountToken"] is False
    gateway = _of(objects, "Deployment")["shipit-gateway"]["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is False
    # cordon_nodes alone grants nothing: only the replica backend would cordon.
    assert "ClusterRole" not in {o["kind"] for o in _objects(MULTIPOOL)}


def test_rbac_grants_exactly_the_backend_verbs() -> None:
    objects = _objects(API_BACKED)
    role = _of(objects, "Role")["shipit-gateway"]
    granted = {
        (r, v)
        for rule in role["rules"]
        for r in rule["resources"]
        for v in rule["verbs"]
        if rule["apiGroups"] == [""]
    }
    expected = {("pods", v) for v in ("list", "watch", "create", "delete")}
    assert granted == expected | {("events", "create"), ("events", "list")}
    assert sum(len(r["resources"]) * len(r["verbs"]) for r in role["rules"]) == len(granted)
    replica_sa = _of(objects, "ServiceAccount")["shipit-replica"]
    assert replica_sa["automountServiceAccountToken"] is False
    assert _of(objects, "ServiceAccount")["shipit-gateway"]["automountServiceAccountToken"] is True
    gateway = _of(objects, "Deployment")["shipit-gateway"]["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is True


def test_the_api_backed_deployment_gets_a_headless_service_and_no_workload() -> None:
    objects = _objects(API_BACKED)
    assert _replica_workloads(objects) == {}
    headless = _of(objects, "Service")["shipit-replicas"]
    assert headless["metadata"]["namespace"] == "llm"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    # A subset of the labels of the pods the backend creates.
    pod = pod_labels("chat", "v1", "spot")
    assert headless["spec"]["selector"].items() <= pod.items()
    assert headless["spec"]["ports"][0]["targetPort"] == 8000
    # The gateway's own shipit.yaml keeps the backend, its autoscaling and the placement.
    text = _of(objects, "ConfigMap")["shipit-gateway"]["data"]["shipit.yaml"]
    cfg = parse_config(yaml.safe_load(text))
    (chat,) = cfg.deployments
    assert chat.backend == "kubernetes" and chat.replica_urls == []
    assert chat.autoscaling is not None and chat.autoscaling.max_replicas == 8
    assert chat.kubernetes_backend.kubeconfig is None  # in-cluster
    assert cfg.kubernetes.deployments["chat"].engine == "vllm"


def test_cordoning_adds_a_cluster_role_for_nodes_get_list_patch_only() -> None:
    objects = _objects(API_BACKED)
    (cluster_role,) = _of(objects, "ClusterRole").values()
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}
    ]
    cfg = load_config(API_BACKED)
    off = cfg.kubernetes.model_copy(update={"cordon_nodes": False})
    cfg = cfg.model_copy(update={"kubernetes": off})
    (reader,) = _of(k8s.render(cfg), "ClusterRole").values()
    assert reader["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}
    ]
    (binding,) = _of(objects, "ClusterRoleBinding").values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shipit-gateway", "namespace": "llm"}
    ]


def test_gateway_config_map_is_a_valid_shipit_yaml_reaching_the_replica_services() -> None:
    objects = _objects(MULTIPOOL)
    text = _of(objects, "ConfigMap")["shipit-gateway"]["data"]["shipit.yaml"]
    cfg = parse_config(yaml.safe_load(text))
    assert cfg.gateway.host == "0.0.0.0"
    by_name = {d.name: d for d in cfg.deployments}
    assert by_name["llama-8b"].replica_urls == [
        "http://llama-8b-replicas.llm.svc.cluster.local:8000"
    ]
    # The gateway starts no replica processes of its own in the cluster.
    assert [d.initial_replicas for d in cfg.deployments] == [0, 0]
    services = _of(objects, "Service")
    assert services["llama-8b-replicas"]["spec"]["selector"]["shipit.dev/deployment"] == "llama-8b"
    gw = _of(objects, "Deployment")["shipit-gateway"]["spec"]["template"]["spec"]
    assert gw["serviceAccountName"] == "shipit-gateway"
    assert {"name": "keys", "secret": {"secretName": "shipit-gateway-keys"}} in gw["volumes"]


def test_readme_example_with_autoscaling_still_gives_a_valid_gateway_config() -> None:
    text = _of(_objects(README_EXAMPLE), "ConfigMap")["shipit-gateway"]["data"]["shipit.yaml"]
    (dep,) = parse_config(yaml.safe_load(text)).deployments
    assert dep.autoscaling is None
    assert dep.routing.policy == "prefix_cache"


def test_weights_never_from_the_image_and_pickles_refused_by_the_fetcher() -> None:
    w = _replica_workloads(_objects(MULTIPOOL))
    spec = w["llama-8b-v1-l4"]["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["name"] == "fetch-weights"
    assert "'*.pt'" in init["command"][2] and "exit 1" in init["command"][2]
    claim = w["llama-70b-v1-h100-spot"]["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "weights",
        "persistentVolumeClaim": {"claimName": "llama-70b-weights", "readOnly": True},
    } in claim


def test_monitoring_objects() -> None:
    objects = _objects(MULTIPOOL)
    monitors = _of(objects, "ServiceMonitor")
    assert sorted(monitors) == ["shipit-gateway", "shipit-replicas"]
    gw = monitors["shipit-gateway"]["spec"]["endpoints"][0]
    assert gw["authorization"]["credentials"]["name"] == "shipit-metrics-key"
    sel = monitors["shipit-replicas"]["spec"]["selector"]["matchLabels"]
    replica_services = [
        s for s in _of(objects, "Service").values() if s["metadata"]["name"].endswith("-replicas")
    ]
    assert len(replica_services) == 2
    for s in replica_services:
        assert sel.items() <= s["metadata"]["labels"].items()
    rule = _of(objects, "PrometheusRule")["shipit"]
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert names == ["shipit-recording", "shipit-alerts"]
    shipped = yaml.safe_load((ROOT / "deploy/prometheus/shipit-alerts.rules.yml").read_text())
    assert rule["spec"]["groups"][1]["rules"] == shipped["groups"][0]["rules"]
    boards = _of(objects, "ConfigMap")["shipit-dashboards"]
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(boards["data"]) == sorted(p.name for p in (ROOT / "deploy/grafana").iterdir())


def test_unknown_deployment_in_kubernetes_section_is_an_error_naming_it() -> None:
    cfg = parse_config(
        {"deployments": [{"name": "chat"}], "kubernetes": {"deployments": {"caht": {}}}}
    )
    with pytest.raises(ConfigError, match=r"'caht'.*not a deployment"):
        k8s.render(cfg)


def test_embedded_engine_with_an_unreachable_model_is_an_error() -> None:
    cfg = parse_config({"deployments": [{"name": "d", "model": "./my-model"}]})
    with pytest.raises(ConfigError, match=r"cannot fetch it in the cluster.*weights"):
        k8s.render(cfg)
    mounted = parse_config(
        {
            "deployments": [{"name": "d", "model": "./my-model"}],
            "kubernetes": {"deployments": {"d": {"weights": {"source": "volume", "claim": "w"}}}},
        }
    )
    (w,) = _replica_workloads(k8s.render(mounted)).values()
    assert w["spec"]["template"]["spec"]["containers"][0]["args"][2] == "/models"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"deployments": {"d": {"engine": "vllm"}}}, "needs GPUs"),
        ({"deployments": {"d": {"placements": [{"pool": "gpu"}]}}}, "not in node_pools"),
        ({"node_pools": [{"name": "Big_Pool"}]}, "lowercase DNS label"),
        ({"deployments": {"d": {"weights": {"source": "volume"}}}}, "weights.claim"),
    ],
)
def test_bad_kubernetes_section_names_the_problem(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"deployments": [{"name": "d"}], "kubernetes": section})


def test_cli_writes_numbered_files_and_refuses_a_stale_directory(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    runner = CliRunner()
    res = runner.invoke(build_app(), ["render", "k8s", "-c", str(MULTIPOOL), "--out", str(out)])
    assert res.exit_code == 0, res.output
    files = sorted(out.iterdir())
    assert files[0].name == "00-namespace-llm.yaml"
    assert len(files) == len(_objects(MULTIPOOL))
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert [d["kind"] for d in docs] == [o["kind"] for o in _objects(MULTIPOOL)]
    assert not any("&id" in f.read_text() for f in files)
    again = runner.invoke(build_app(), ["render", "k8s", "-c", str(MULTIPOOL), "--out", str(out)])
    assert again.exit_code == 2
    assert "already holds rendered files" in again.output


def test_cli_bad_config_exits_2_with_the_field() -> None:
    res = CliRunner().invoke(build_app(), ["render", "k8s", "-c", "/nonexistent/shipit.yaml"])
    assert res.exit_code == 2
    assert "does not exist" in res.output


def test_gateway_rolls_when_its_config_changes_and_uses_the_mounted_keys() -> None:
    def pod_hash(data: dict[str, Any]) -> str:
        gw = _of(k8s.render(parse_config(data)), "Deployment")["shipit-gateway"]
        return str(gw["spec"]["template"]["metadata"]["annotations"]["shipit.dev/config-sha256"])

    base = {"deployments": [{"name": "a"}]}
    changed = {"deployments": [{"name": "a", "queueing": {"max_queue": 7}}]}
    assert pod_hash(base) == pod_hash(base)
    assert pod_hash(base) != pod_hash(changed)
    laptop = parse_config({**base, "gateway": {"auth": {"keys_file": "/home/me/keys.json"}}})
    text = _of(k8s.render(laptop), "ConfigMap")["shipit-gateway"]["data"]["shipit.yaml"]
    assert parse_config(yaml.safe_load(text)).gateway.auth.keys_file == "/etc/shipit/keys/keys.json"
    open_gw = parse_config({**base, "gateway": {"auth": {"required": False}}})
    objects = k8s.render(open_gw)
    text = _of(objects, "ConfigMap")["shipit-gateway"]["data"]["shipit.yaml"]
    assert parse_config(yaml.safe_load(text)).gateway.auth.keys_file is None
    volumes = _of(objects, "Deployment")["shipit-gateway"]["spec"]["template"]["spec"]["volumes"]
    assert "keys" not in [v["name"] for v in volumes]
    assert (
        "authorization"
        not in _of(objects, "ServiceMonitor")["shipit-gateway"]["spec"]["endpoints"][0]
    )


def test_the_docs_example_section_is_valid() -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    block = text.split("## The `kubernetes:` section", 1)[1].split("```yaml\n", 1)[1]
    section = yaml.safe_load(block.split("```", 1)[0])
    cfg = parse_config({"deployments": [{"name": "llama-70b", "model": "x"}], **section})
    assert sorted(_replica_workloads(k8s.render(cfg))) == [
        "llama-70b-v1-h100-reserved",
        "llama-70b-v1-h100-spot",
        "llama-70b-v2-h100-reserved",
    ]
