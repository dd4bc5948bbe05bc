"""``shipit render k8s``: a ``shipit.yaml`` as Kubernetes objects (plain dicts, in apply order).

Owns the namespace, the gateway (ConfigMap with the gateway's shipit.yaml, ServiceAccount,
Deployment, Service, PodDisruptionBudget and, only where a deployment has ``backend:
kubernetes``, a least-privilege Role/RoleBinding and a ClusterRole for nodes) and the replicas:
one ``apps/v1`` Deployment per deployment x version x node pool, except for ``backend:
kubernetes`` deployments, whose pods the gateway creates itself and finds by label through a
headless Service; one Service and one PodDisruptionBudget per deployment.
Monitoring objects come from ``deploy.k8s_monitoring``, pod specs from ``deploy.k8s_pods``.
Pure: takes the parsed config, returns dicts; the CLI writes them as YAML.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import yaml

from shipit.config.gateway import DEFAULT_MODEL, ConfigError, DeploymentConfig, ShipitConfig
from shipit.config.kubernetes import K8sDeploymentConfig, NodePoolConfig, check_label
from shipit.deploy import k8s_monitoring, k8s_pods
from shipit.deploy.k8s_pods import HTTP_PORT, Workload, common_labels, meta

Obj = dict[str, Any]
GATEWAY = "shipit-gateway"
CONFIG_DIR = "/etc/shipit"
KEYS_DIR = "/etc/shipit/keys"
KEYS_SECRET = "shipit-gateway-keys"
STATE_DIR = "/var/lib/shipit"
# The verbs the replica backend on the Kubernetes API uses, and nothing else: pods created,
# listed and watched (by label), deleted; Events listed (a pod's cold-start phases) and
# created (the one a cordon leaves on its node).
ROLE_RULES: list[Obj] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
]
# get: is a pod's node lost; list: the cordoned share of all nodes; patch: the cordon itself.
NODE_RULES: list[Obj] = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
CORDON_RULES: list[Obj] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}
]


def gateway_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": GATEWAY, "app.kubernetes.io/component": "gateway"}


def placement_for(cfg: ShipitConfig, dep: DeploymentConfig) -> K8sDeploymentConfig:
    return cfg.kubernetes.deployments.get(dep.name) or K8sDeploymentConfig()


def check_names(cfg: ShipitConfig) -> None:
    names = {d.name for d in cfg.deployments}
    for name in cfg.kubernetes.deployments:
        if name not in names:
            raise ConfigError(
                f"kubernetes.deployments names {name!r}, which is not a deployment "
                f"({sorted(names)}); fix the name or remove the entry",
                field=f"kubernetes.deployments.{name}",
            )
    for d in cfg.deployments:
        try:
            check_label(d.name, "deployment name")
        except ValueError as exc:
            raise ConfigError(str(exc), field="deployments.name") from None
        place = placement_for(cfg, d)
        packaged = d.model.strip().lower() == DEFAULT_MODEL or d.simulate
        if place.engine == "embedded" and place.weights.source == "none" and not packaged:
            raise ConfigError(
                f"deployment {d.name!r} runs model {d.model!r} on the embedded engine, which "
                "cannot fetch it in the cluster: set kubernetes.deployments."
                f"{d.name}.weights (source: volume or object_storage)",
                field=f"kubernetes.deployments.{d.name}.weights",
            )


def api_backed(cfg: ShipitConfig) -> list[DeploymentConfig]:
    """Deployments whose replica pods the gateway creates through the Kubernetes API."""
    return [d for d in cfg.deployments if d.backend == "kubernetes"]


def replica_service_name(deployment: str) -> str:
    return f"{deployment}-replicas"


def gateway_shipit_yaml(cfg: ShipitConfig) -> str:
    """The gateway's own shipit.yaml: the user's, with each deployment's replicas reached
    through its replica Service (the pods run as workloads, not as gateway children), keys
    from the mounted Secret and state on a writable volume."""
    data = cfg.model_dump(mode="json", exclude_unset=True)
    if not api_backed(cfg):
        data.pop("kubernetes", None)
    ns = cfg.kubernetes.namespace
    deployments = data.get("deployments") or [{}]
    for d, given in zip(cfg.deployments, deployments, strict=True):
        if d.backend == "kubernetes":
            # The gateway runs, scales and watches these pods itself, with its in-cluster
            # service account (a kubeconfig path from another machine means nothing here).
            given.get("kubernetes_backend", {}).pop("kubeconfig", None)
            continue
        for key in ("replicas", "autoscaling", "simulate", "replica_args"):
            given.pop(key, None)
        given["name"] = d.name
        given["replicas"] = 0
        url = f"http://{replica_service_name(d.name)}.{ns}.svc.cluster.local:{HTTP_PORT}"
        given["replica_urls"] = [*d.replica_urls, url]
    data["deployments"] = deployments
    gw = data.setdefault("gateway", {})
    gw["host"] = "0.0.0.0"
    gw["port"] = HTTP_PORT
    if auth_required(cfg):
        # A keys_file in the file is a path on the machine it was written on: in the cluster
        # the keys come from the mounted Secret. An audit log turned off ("") stays off.
        auth = gw.setdefault("auth", {})
        auth["keys_file"] = f"{KEYS_DIR}/keys.json"
        if auth.get("audit_log") != "":
            auth["audit_log"] = f"{STATE_DIR}/audit.jsonl"
    return str(yaml.safe_dump(data, sort_keys=False))


def auth_required(cfg: ShipitConfig) -> bool:
    return cfg.gateway.auth.required is not False


def namespace(cfg: ShipitConfig) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta(cfg.kubernetes.namespace, None),
    }


def rbac(cfg: ShipitConfig) -> list[Obj]:
    """Service accounts; the gateway's grants only where it uses the API (``backend:
    kubernetes``): without one it never calls the API and gets no token at all."""
    ns = cfg.kubernetes.namespace
    subject = {"kind": "ServiceAccount", "name": GATEWAY, "namespace": ns}
    uses_api = bool(api_backed(cfg))
    out: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(GATEWAY, ns, gateway_labels()),
            "automountServiceAccountToken": uses_api,
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(k8s_pods.REPLICA_SA, ns),
            "automountServiceAccountToken": False,
        },
    ]
    if not uses_api:
        return out
    out += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(GATEWAY, ns),
            "rules": ROLE_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(GATEWAY, ns),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATEWAY},
            "subjects": [subject],
        },
    ]
    # Nodes are cluster-scoped: the one cluster-wide grant, patch only to cordon.
    cluster_name = f"{GATEWAY}-{ns}-nodes"
    out += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(cluster_name, None),
            "rules": CORDON_RULES if cfg.kubernetes.cordon_nodes else NODE_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta(cluster_name, None),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": [subject],
        },
    ]
    return out


def _pdb(name: str, ns: str, selector: dict[str, str], max_unavailable: int) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, ns),
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": selector}},
    }


def _service(name: str, ns: str, labels: dict[str, str], selector: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, ns, labels),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def gateway(cfg: ShipitConfig) -> list[Obj]:
    k = cfg.kubernetes
    ns = k.namespace
    labels = gateway_labels()
    config_map: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(GATEWAY, ns, labels),
        "data": {"shipit.yaml": gateway_shipit_yaml(cfg)},
    }
    config_hash = hashlib.sha256(config_map["data"]["shipit.yaml"].encode()).hexdigest()
    grace = math.ceil(cfg.gateway.graceful_shutdown_s) + k8s_pods.GRACE_MARGIN_S
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": GATEWAY}},
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if auth_required(cfg):
        volumes.append({"name": "keys", "secret": {"secretName": KEYS_SECRET}})
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
    tcp = {"tcpSocket": {"port": "http"}}
    container: Obj = {
        "name": "gateway",
        "image": k.images.ref("gateway"),
        "imagePullPolicy": k.images.pull_policy,
        "args": ["up", "--config", f"{CONFIG_DIR}/shipit.yaml"],
        "env": [{"name": "SHIPIT_HOME", "value": STATE_DIR}],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"memory": "1Gi"},
        },
        # TCP, not /health: the gateway answers 503 there while no replica is ready, which is
        # exactly when it must keep taking requests to hold them through a scale from zero.
        "startupProbe": {**tcp, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**tcp, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**tcp, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "volumeMounts": mounts,
        "securityContext": k8s_pods.container_security(read_only_root=True),
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(GATEWAY, ns, labels),
        "spec": {
            "replicas": k.gateway_replicas,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": {**common_labels(), **labels},
                    # A changed shipit.yaml changes the pod template: kubectl apply rolls the
                    # gateways onto it instead of leaving them on the old file.
                    "annotations": {"shipit.dev/config-sha256": config_hash},
                },
                "spec": {
                    "serviceAccountName": GATEWAY,
                    # A token only for a gateway that creates replica pods itself.
                    "automountServiceAccountToken": bool(api_backed(cfg)),
                    "terminationGracePeriodSeconds": grace,
                    "securityContext": k8s_pods.pod_security(),
                    "topologySpreadConstraints": k8s_pods.spread(labels),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    service = _service(GATEWAY, ns, labels, labels)
    service["spec"]["type"] = k.gateway_service_type
    return [config_map, deployment, service, _pdb(GATEWAY, ns, labels, 1)]


def workloads(cfg: ShipitConfig) -> list[Workload]:
    pools: dict[str, NodePoolConfig] = {p.name: p for p in cfg.kubernetes.node_pools}
    out = []
    for dep in cfg.deployments:
        if dep.backend == "kubernetes":
            continue  # the gateway creates these pods itself
        place = placement_for(cfg, dep)
        for p in place.placements:
            replicas = dep.initial_replicas if p.replicas is None else p.replicas
            out.append(Workload(dep, place, pools[p.pool], p.version, replicas))
    return out


def replicas(cfg: ShipitConfig) -> list[Obj]:
    ns = cfg.kubernetes.namespace
    out: list[Obj] = [k8s_pods.replica_deployment(cfg, w) for w in workloads(cfg)]
    for dep in cfg.deployments:
        selector = k8s_pods.deployment_selector(dep.name)
        labels = {**selector, "app.kubernetes.io/name": "shipit-replica"}
        out.append(_service(replica_service_name(dep.name), ns, labels, selector))
        budget = placement_for(cfg, dep).max_unavailable
        out.append(_pdb(f"{dep.name}-replicas", ns, selector, budget))
    return out + headless_services(cfg)


def headless_services(cfg: ShipitConfig) -> list[Obj]:
    """For ``backend: kubernetes``: the headless Service the gateway's pods join (their
    ``subdomain``), so each pod is ``<pod>.<service>.<namespace>.svc`` in DNS, also before it
    is ready (the gateway probes its start)."""
    out: dict[tuple[str, str], Obj] = {}
    for d in api_backed(cfg):
        own = d.kubernetes_backend
        ns = own.namespace if "namespace" in own.model_fields_set else cfg.kubernetes.namespace
        selector = {
            "app.kubernetes.io/managed-by": "shipit",
            "app.kubernetes.io/component": "replica",
            k8s_pods.OWNER_LABEL: "gateway",
        }
        svc = _service(own.service, ns, {"app.kubernetes.io/name": "shipit-replica"}, selector)
        svc["spec"] |= {"clusterIP": "None", "publishNotReadyAddresses": True}
        svc["spec"]["ports"][0]["port"] = svc["spec"]["ports"][0]["targetPort"] = own.port
        out[(ns, own.service)] = svc
    return list(out.values())


def render(cfg: ShipitConfig) -> list[Obj]:
    """Every object, in the order ``kubectl apply`` should see them."""
    check_names(cfg)
    return [
        namespace(cfg),
        *rbac(cfg),
        *gateway(cfg),
        *replicas(cfg),
        *k8s_monitoring.render(cfg),
    ]


class _NoAliases(yaml.SafeDumper):
    """Shared dicts written out in full: no ``&id001`` anchors in a manifest."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: list[Obj]) -> str:
    return str(yaml.dump_all(objects, Dumper=_NoAliases, sort_keys=False, width=10_000))
