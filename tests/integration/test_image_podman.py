"""Opt-in: build the embedded-engine image from ``shipit build``'s Dockerfile with podman, run
it, and talk to it over 127.0.0.1.

No registry is reachable where this project is developed, so the two bases the Dockerfile names
are stood in for by local images under the same names: the Python base is a Debian bookworm
root filesystem made with ``mmdebstrap`` (Python 3.11, as in the official slim image) and
imported; the uv base holds this machine's ``uv`` binary (the catalog's version). The Dockerfile
itself is used unchanged. The build still fetches the locked dependencies from PyPI, and
``mmdebstrap`` fetches Debian packages, so the test runs only with ``SHIPIT_CONTAINER_TEST=1``
and ``podman``, ``runc`` and ``mmdebstrap`` installed (Debian packages). podman runs with the
runc runtime and explicit ulimits: in this sandbox its default runtime (crun) cannot set the
default rlimits and does not support the hybrid cgroup layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shipit.cli.main import build_app
from shipit.deploy import images
from support.replica_process import free_port

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("podman", "runc", "mmdebstrap")
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
IMAGE = "localhost/shipit/replica-embedded:podman-test"

pytestmark = pytest.mark.skipif(
    os.environ.get("SHIPIT_CONTAINER_TEST") != "1" or not all(map(shutil.which, TOOLS)),
    reason="opt-in: SHIPIT_CONTAINER_TEST=1 with podman, runc and mmdebstrap installed "
    "(the build fetches Debian packages and the locked dependencies)",
)


def _podman(*args: str, timeout_s: float = 900, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False
    )
    assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0


def _python_base(work: Path) -> None:
    """bookworm + python3 under the slim image's name; with this machine's CA bundle, which
    the build needs to reach PyPI through this sandbox's TLS proxy."""
    ref = images.PYTHON_SLIM.ref
    if _exists(ref):
        return
    tar = work / "rootfs.tar"
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
         "bookworm", str(tar)],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    _podman("import", str(tar), "localhost/shipit-test/bookworm-python:raw")
    lines = ["FROM localhost/shipit-test/bookworm-python:raw"]
    ca = os.environ.get("SSL_CERT_FILE")
    if ca and Path(ca).is_file():
        shutil.copy(ca, work / "ca.crt")
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        lines += [f"COPY ca.crt {bundle}", f"ENV SSL_CERT_FILE={bundle} UV_NATIVE_TLS=1"]
    (work / "Containerfile").write_text("\n".join(lines) + "\n")
    _podman("build", "--pull=never", "-t", ref, str(work))


def _uv_base(work: Path) -> None:
    ref = images.UV.ref
    if _exists(ref):
        return
    found = shutil.which("uv")
    uv = Path(os.path.realpath(found)) if found else None
    if uv is None or uv.read_bytes()[:4] != b"\x7fELF":
        pytest.skip(f"no uv binary to stand in for {ref} (found {found})")
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True)
    if version.stdout.split()[1] != images.UV.tag:
        pytest.skip(f"uv here is {version.stdout.strip()}, the Dockerfile names {ref}")
    shutil.copy(uv, work / "uv")
    (work / "Containerfile").write_text("FROM scratch\nCOPY uv /uv\n")
    _podman("build", "--pull=never", "-t", ref, str(work))


def test_the_embedded_image_builds_runs_and_serves(tmp_path: Path) -> None:
    if images.PYTHON_SLIM.pinned or images.UV.pinned:
        pytest.skip("a pinned base is pulled by digest, which a local stand-in cannot match")
    for name in ("py", "uv", "out", "ctx"):
        (tmp_path / name).mkdir()
    _python_base(tmp_path / "py")
    _uv_base(tmp_path / "uv")
    res = CliRunner().invoke(
        build_app(), ["build", "--out", str(tmp_path / "out"), "-e", "embedded"]
    )
    assert res.exit_code == 0, res.output
    ctx = tmp_path / "ctx"
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, ctx / name)
    shutil.copytree(ROOT / "src", ctx / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dockerfile = tmp_path / "out" / "Dockerfile.replica-embedded"
    _podman("build", *LIMITS, "--network", "host", "--pull=never", "--format", "docker",
            "-f", str(dockerfile), "-t", IMAGE, str(ctx))  # fmt: skip

    port = free_port()
    name = f"shipit-podman-test-{os.getpid()}"
    _podman("run", "-d", "--rm", "--name", name, "--network", "host", *LIMITS, IMAGE,
            "replica", "--host", "127.0.0.1", "--port", str(port),
            "--simulate", "H100:llama-3.1-8b", "--model", "llama-3.1-8b",
            timeout_s=120)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _podman("logs", name)
            time.sleep(0.5)
        body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4}  # fmt: skip
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
        # Non-root, as the Dockerfile says.
        assert _podman("exec", name, "id", "-u").strip() == "10001"
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "5", name], capture_output=True, check=False)
