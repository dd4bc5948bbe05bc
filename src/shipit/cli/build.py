"""``shipit build``: write container build files and, with ``--build``, build them.

Thin: ``shipit.deploy.dockerfiles`` renders the files (pure); this writes them under ``--out``
and, with ``--build``, runs the first builder found (docker, podman, buildah) from the
repository root, refusing bases whose digest is not pinned in ``shipit.deploy.images``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import typer

BUILDERS = ("docker", "podman", "buildah")


def register(app: typer.Typer) -> None:
    app.command(
        "build",
        help="Write Dockerfiles for the gateway and the replica images (embedded engine on slim "
        "Python, vLLM and SGLang on their official images), uv-locked, non-root, with a "
        "HEALTHCHECK and no weights inside; --build builds them with docker, podman or "
        "buildah.\n\nExamples:\n\n"
        "  shipit build --out build/\n\n"
        "  shipit build --engine embedded --build --tag 0.1.0\n\n"
        "Run --build from the repository root (the build context). Bases are pinned by digest "
        "in shipit/deploy/images.py; an unverified one is refused until it is pinned.",
    )(build)


def find_builder() -> str | None:
    for name in BUILDERS:
        if shutil.which(name):
            return name
    return None


def build(
    out: Path = typer.Option(Path("build"), "--out", "-o", help="Directory for the files."),
    engine: list[str] = typer.Option(
        [], "--engine", "-e", help="embedded, vllm or sglang (repeatable; default: all three)."
    ),
    run_build: bool = typer.Option(False, "--build", help="Build the images too."),
    registry: str = typer.Option("localhost/shipit", "--registry", help="Image name prefix."),
    tag: str = typer.Option("latest", "--tag", help="Image tag."),
    with_demo_model: bool = typer.Option(
        False,
        "--with-demo-model",
        help="Put the packaged default model (SmolLM2-135M) in the embedded image; "
        "otherwise no weights are in any image.",
    ),
) -> None:
    from shipit.config.kubernetes import ENGINES
    from shipit.deploy import dockerfiles

    unknown = [e for e in engine if e not in ENGINES]
    if unknown:
        typer.echo(f"error: --engine {unknown[0]!r} is not one of {', '.join(ENGINES)}", err=True)
        raise typer.Exit(2)
    engines = tuple(e for e in ENGINES if e in engine) if engine else ENGINES
    files = dockerfiles.build_files(engines, with_demo_model=with_demo_model)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        (out / f.name).write_text(f.text)
        (out / f"{f.name}.dockerignore").write_text(dockerfiles.dockerignore(f))
        mark = "" if not f.unpinned else "  (base digest unverified)"
        typer.echo(f"wrote {out / f.name}{mark}")
    if not run_build:
        return
    missing = [n for n in ("pyproject.toml", "uv.lock", "src") if not Path(n).exists()]
    if missing:
        typer.echo(
            f"error: --build runs from the repository root (the build context), but "
            f"{', '.join(missing)} is not in {Path.cwd()}; cd there and run it again",
            err=True,
        )
        raise typer.Exit(2)
    builder = find_builder()
    if builder is None:
        typer.echo(
            f"error: no image builder found ({', '.join(BUILDERS)} are not on PATH); the "
            f"files are in {out}/: build them where one is installed",
            err=True,
        )
        raise typer.Exit(1)
    unpinned = sorted({f"{b.repository}:{b.tag}" for f in files for b in f.unpinned})
    if unpinned:
        typer.echo(
            "error: refusing to build from bases with no verified digest: "
            + ", ".join(unpinned)
            + ". Read each digest where the registry is reachable (docker buildx imagetools "
            "inspect REF, or skopeo inspect docker://REF) and set it in "
            "shipit/deploy/images.py",
            err=True,
        )
        raise typer.Exit(1)
    for f in files:
        ref = f"{registry}/{f.image}:{tag}"
        verb = ["bud"] if builder == "buildah" else ["build"]
        cmd = [builder, *verb, "-f", str(out / f.name), "-t", ref, "."]
        typer.echo("$ " + " ".join(cmd))
        if subprocess.run(cmd, check=False).returncode != 0:
            typer.echo(f"error: {builder} failed building {ref}", err=True)
            raise typer.Exit(1)
