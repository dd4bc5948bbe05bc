"""The console ships in the wheel: building it (``uv build --wheel``, hatchling) packs every
page, script and stylesheet the console serves, so ``pip install shipit`` needs no build step
and nothing fetched at run time."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from shipit.console.assets import load_assets

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv")


@pytest.mark.skipif(UV is None, reason="uv not on PATH")
def test_the_wheel_holds_every_console_file(tmp_path: Path) -> None:
    assert UV is not None
    out = subprocess.run(
        [UV, "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("shipit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    served = {f"shipit/console/static/{name}" for name in load_assets()}
    assert {"index.html", "vram.html", "recommend.html", "fleet.html"} <= set(load_assets())
    assert served <= names, served - names
