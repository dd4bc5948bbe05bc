"""``shipit replica`` refuses unsafe or inconsistent security flags before serving, and says
what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipit.cli.main import build_app

SIM = ["replica", "--simulate", "H100:llama-3.1-8b", "--port", "0"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--host", "0.0.0.0", "--allow-unauthenticated-admin"], "loopback"),
        (["--enable-lora-loading"], "--lora-root"),
        (["--lora-root", "/tmp"], "--enable-lora-loading"),
        (["--max-body-bytes", "0"], "--max-body-bytes"),
        (["--admin-token-file", "/nonexistent/token"], "cannot read"),
    ],
)
def test_bad_security_flags_exit_2(
    args: list[str], words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPIT_REPLICA_ADMIN_TOKEN", raising=False)
    res = CliRunner().invoke(build_app(), [*SIM, *args])
    assert res.exit_code == 2, res.output
    assert words in res.output


def test_a_short_token_in_a_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("short\n")
    res = CliRunner().invoke(build_app(), [*SIM, "--admin-token-file", str(token)])
    assert res.exit_code == 2 and "at least 16" in res.output
    assert "short" not in res.output.replace("at least 16", "")
