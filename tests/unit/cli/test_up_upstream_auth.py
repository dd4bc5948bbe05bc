"""``shipit up`` stops before listening when a credential named in ``upstream_auth`` is missing,
and says which variable to set."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipit.cli.main import build_app


def test_up_refuses_to_start_without_the_named_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPIT_TEST_MISSING_KEY", raising=False)
    cfg = tmp_path / "shipit.yaml"
    cfg.write_text(
        "deployments:\n"
        "  - name: default\n"
        "    model: m\n"
        "    replicas: 0\n"
        "    replica_urls: [http://127.0.0.1:9/v1]\n"
        "    upstream_auth: {bearer_token_env: SHIPIT_TEST_MISSING_KEY}\n"
    )
    res = CliRunner().invoke(build_app(), ["up", "--config", str(cfg), "--port", "0"])
    assert res.exit_code == 2
    assert "SHIPIT_TEST_MISSING_KEY" in res.output and "listening" not in res.output
