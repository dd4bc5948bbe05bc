"""The root ``shipit`` command: ``--version`` and ``--help`` import no command module (each
call used to pay for numpy, aiohttp, uvicorn and the engine); commands load when they run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from shipit.cli.lazy import COMMANDS, load_command
from shipit.cli.main import build_app

HEAVY = ("numpy", "aiohttp", "uvicorn", "httpx", "pydantic", "shipit.engine", "shipit.gateway")

PROBE = """
import json, sys
sys.argv = ["shipit", *json.loads(sys.argv[1])]
from shipit.cli.main import main
try:
    main()
except SystemExit:
    pass
heavy = {heavy}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy or
      any(m == h or m.startswith(h + ".") for h in heavy))))
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], []])
def test_version_and_help_import_no_heavy_module(args: list[str]) -> None:
    code = PROBE.replace("{heavy}", repr(list(HEAVY)))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
    )
    *printed, loaded = proc.stdout.strip().splitlines()
    assert json.loads(loaded) == [], f"shipit {' '.join(args)} imported {loaded}"
    text = "\n".join(printed) + proc.stderr  # with no arguments, help goes to stderr
    if args == ["--version"]:
        assert text.startswith("shipit ")
    else:
        assert all(name in text for name in COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_listed_help_is_the_command_own_first_line(name: str) -> None:
    command = load_command(name)
    own = " ".join((command.help or "").split("\n\n")[0].split())
    assert own.startswith(COMMANDS[name][1].rstrip(".")), (own, COMMANDS[name][1])


def test_a_command_runs_through_the_root() -> None:
    res = CliRunner().invoke(build_app(), ["plan", "vram", "-m", "smollm2", "--gpu", "L4"])
    assert res.exit_code == 0, res.output
    assert "smollm2-135m" in res.output
