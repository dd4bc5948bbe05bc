"""Monitoring objects for ``shipit render k8s``: ServiceMonitors, a PrometheusRule, dashboards.

Owns the Prometheus Operator objects (``monitoring.coreos.com/v1``: one ServiceMonitor for the
gateway, one for the replicas, scraped per pod through their Services; one PrometheusRule
holding exactly the recording and alert rules ``shipit.telemetry.rules`` generates for
``deploy/prometheus``) and a ConfigMap of the Grafana dashboards ``shipit.telemetry.dashboards``
generates, labelled ``grafana_dashboard: "1"`` for Grafana's dashboard sidecar. Pure.
"""

from __future__ import annotations

from typing import Any

from shipit.config.gateway import ShipitConfig
from shipit.deploy.k8s_pods import meta
from shipit.telemetry import dashboards, rules

Obj = dict[str, Any]
METRICS_KEY_SECRET = "shipit-metrics-key"
SCRAPE_INTERVAL = "15s"


def _gateway_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": "shipit-gateway", "app.kubernetes.io/component": "gateway"}


def service_monitors(cfg: ShipitConfig) -> list[Obj]:
    k = cfg.kubernetes
    ns = k.namespace
    gateway_endpoint: Obj = {"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL}
    keys_on = cfg.gateway.auth.required is not False
    if keys_on and cfg.gateway.auth.metrics == "admin":
        # /metrics needs an admin key while keys are on: Prometheus sends one from a Secret.
        gateway_endpoint["authorization"] = {
            "type": "Bearer",
            "credentials": {"name": METRICS_KEY_SECRET, "key": "token"},
        }
    replica_endpoint = {"port": "http", "path": "/metrics", "interval": SCRAPE_INTERVAL}
    out = []
    for name, selector, endpoint in (
        ("shipit-gateway", _gateway_selector(), gateway_endpoint),
        (
            "shipit-replicas",
            {"app.kubernetes.io/name": "shipit-replica", "app.kubernetes.io/part-of": "shipit"},
            replica_endpoint,
        ),
    ):
        out.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": meta(name, ns, dict(k.monitoring.labels)),
                "spec": {
                    "jobLabel": "app.kubernetes.io/name",
                    "namespaceSelector": {"matchNames": [ns]},
                    "selector": {"matchLabels": selector},
                    "endpoints": [endpoint],
                },
            }
        )
    return out


def prometheus_rule(cfg: ShipitConfig) -> Obj:
    targets = rules.RuleTargets()
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta(
            "shipit", cfg.kubernetes.namespace, dict(cfg.kubernetes.monitoring.labels)
        ),
        "spec": {
            "groups": [
                {"name": "shipit-recording", "rules": rules.recording_rules(targets)},
                {"name": "shipit-alerts", "rules": rules.alert_rules(targets)},
            ]
        },
    }


def dashboards_config_map(cfg: ShipitConfig) -> Obj:
    labels = {"grafana_dashboard": "1", **cfg.kubernetes.monitoring.labels}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("shipit-dashboards", cfg.kubernetes.namespace, labels),
        "data": dashboards.render(),
    }


def render(cfg: ShipitConfig) -> list[Obj]:
    m = cfg.kubernetes.monitoring
    out: list[Obj] = []
    if m.service_monitor:
        out += service_monitors(cfg)
    if m.prometheus_rule:
        out.append(prometheus_rule(cfg))
    if m.dashboards:
        out.append(dashboards_config_map(cfg))
    return out
