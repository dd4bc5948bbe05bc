"""``shipit render k8s`` output under ``kubernetes-validate --strict`` for Kubernetes 1.29 and 1.33.

kubernetes-validate ships the core API's schemas only: for a kind it has no schema for (the
Prometheus Operator's ServiceMonitor and PrometheusRule) it prints a WARN and still exits 0, and
so would it for a core object with a misspelt apiVersion. So the tests assert that exactly those
two CRD kinds were skipped, and check the PrometheusRule's rules with promtool instead (when
installed; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipit.config.gateway import load_config
from shipit.deploy import k8s

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = [
    ROOT / "examples" / "shipit.yaml",
    ROOT / "examples" / "k8s-multipool.yaml",
    ROOT / "examples" / "k8s-backend.yaml",
]
VERSIONS = ["1.29.0", "1.33.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
VALIDATOR = Path(sys.executable).with_name("kubernetes-validate")


def _write(objects: list[dict[str, Any]], directory: Path) -> list[Path]:
    paths = []
    for i, obj in enumerate(objects):
        path = directory / f"{i:02d}-{obj['kind'].lower()}.yaml"
        path.write_text(k8s.to_yaml([obj]))
        paths.append(path)
    return paths


def _validate(version: str, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATOR), "--strict", "-k", version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _skipped_kinds(output: str) -> set[str]:
    return set(re.findall(r"Couldn't find schema for kind (\w+)", output))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_rendered_examples_pass_strict_validation(
    example: Path, version: str, tmp_path: Path
) -> None:
    paths = _write(k8s.render(load_config(example)), tmp_path)
    done = _validate(version, paths)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ERROR" not in done.stdout
    passed = len(re.findall(r"^INFO .* passed for resource", done.stdout, re.M))
    skipped = _skipped_kinds(done.stdout + done.stderr)
    assert skipped == CRD_KINDS, done.stdout
    crds = sum(1 for p in paths if yaml.safe_load(p.read_text())["kind"] in CRD_KINDS)
    assert passed == len(paths) - crds


def test_validation_catches_an_unknown_field(tmp_path: Path) -> None:
    """The check has teeth: a field the schema lacks fails under --strict."""
    objects = k8s.render(load_config(EXAMPLES[1]))
    bad = next(o for o in objects if o["kind"] == "Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["gpuCount"] = 4
    done = _validate("1.29.0", _write([bad], tmp_path))
    assert done.returncode != 0
    assert "gpuCount" in done.stdout + done.stderr


def test_a_misspelt_api_version_is_skipped_not_failed(tmp_path: Path) -> None:
    """Why the tests above pin the skipped kinds: the validator alone would let this pass."""
    obj = k8s.render(load_config(EXAMPLES[0]))[0]
    obj["apiVersion"] = "v2"
    done = _validate("1.29.0", _write([obj], tmp_path))
    assert done.returncode == 0
    assert _skipped_kinds(done.stdout + done.stderr) == {"Namespace"}


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (Debian package prometheus)")
def test_prometheus_rule_groups_pass_promtool(tmp_path: Path) -> None:
    objects = k8s.render(load_config(EXAMPLES[1]))
    (rule,) = (o for o in objects if o["kind"] == "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(
    not (KUBECTL and os.environ.get("KUBECONFIG")),
    reason="opt-in: needs kubectl and KUBECONFIG pointing at a real cluster (kind, k3s)",
)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_a_real_api_server_accepts_the_objects(example: Path, tmp_path: Path) -> None:
    """Server-side dry run: the API server's own validation and admission. Only the namespace
    is created for real (a dry run cannot see a namespace created in the same dry run), and
    deleted after. The Prometheus Operator's kinds are left out unless its CRDs are installed."""
    objects = k8s.render(load_config(example))
    namespace = objects[0]["metadata"]["name"]
    existed = (
        subprocess.run(
            [str(KUBECTL), "get", "namespace", namespace], capture_output=True
        ).returncode
        == 0
    )
    if not existed:
        subprocess.run([str(KUBECTL), "create", "namespace", namespace], check=True)
    crds = subprocess.run(
        [str(KUBECTL), "get", "crd", "servicemonitors.monitoring.coreos.com"],
        capture_output=True,
        check=False,
    )
    if crds.returncode != 0:
        objects = [o for o in objects if o["kind"] not in CRD_KINDS]
    path = tmp_path / "all.yaml"
    path.write_text(k8s.to_yaml(objects[1:]))
    try:
        done = subprocess.run(
            [str(KUBECTL), "apply", "--dry-run=server", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        if not existed:
            subprocess.run([str(KUBECTL), "delete", "namespace", namespace, "--wait=false"])
    assert done.returncode == 0, done.stdout + done.stderr
