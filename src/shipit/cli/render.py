"""``shipit render k8s``: write the Kubernetes objects for a ``shipit.yaml``.

Thin: load the config, call ``shipit.deploy.k8s.render`` (pure), write each object as YAML,
one numbered file per object so ``kubectl apply -f DIR`` creates them in order (namespace and
RBAC before the workloads), or every object to stdout as one multi-document stream.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

render_app = typer.Typer(
    name="render",
    help="Render deployment files from a shipit.yaml (Kubernetes manifests).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(render_app, name="render")


def _file_name(index: int, obj: dict[str, object]) -> str:
    meta = obj.get("metadata")
    name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
    kind = str(obj.get("kind", "object")).lower()
    return f"{index:02d}-{kind}-{re.sub(r'[^a-z0-9.-]', '-', name.lower())}.yaml"


@render_app.command(
    "k8s",
    help="Kubernetes objects for a shipit.yaml: namespace, gateway (Deployment, Service, "
    "ConfigMap, ServiceAccount, Role, RoleBinding, PodDisruptionBudget), replica workloads per "
    "deployment x version x node pool with GPU requests and probes, ServiceMonitors, a "
    "PrometheusRule and Grafana dashboards. Placement comes from the file's `kubernetes:` "
    "section (docs/kubernetes.md).\n\nExamples:\n\n"
    "  shipit render k8s --config shipit.yaml --out k8s/ && kubectl apply -f k8s/\n\n"
    "  shipit render k8s --config shipit.yaml | kubectl apply --dry-run=server -f -",
)
def k8s(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="shipit.yaml to render (default: the built-in defaults)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Directory for one YAML file per object (default: stdout)."
    ),
) -> None:
    from shipit.config.gateway import ConfigError, load_config
    from shipit.deploy import k8s as render_k8s

    try:
        objects = render_k8s.render(load_config(config))
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    if out is None:
        typer.echo(render_k8s.to_yaml(objects), nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob("[0-9][0-9]-*.yaml"))
    if stale:
        typer.echo(
            f"error: {out} already holds rendered files ({stale[0].name}, ...); "
            "remove them or pick an empty --out, so no object from an older render lingers",
            err=True,
        )
        raise typer.Exit(2)
    for i, obj in enumerate(objects):
        (out / _file_name(i, obj)).write_text(render_k8s.to_yaml([obj]))
    typer.echo(f"wrote {len(objects)} objects to {out}/ (kubectl apply -f {out}/)")
