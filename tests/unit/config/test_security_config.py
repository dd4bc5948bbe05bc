"""``gateway.auth`` / ``limits`` / ``tls``: keys required off loopback unless switched off."""

from __future__ import annotations

import pytest

from shipit.config.gateway import ConfigError, parse_config
from shipit.config.security import AuthConfig, auth_required


@pytest.mark.parametrize(
    ("host", "required"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.8.0.1", False),
        ("0.0.0.0", True),
        ("10.0.0.5", True),
        ("::", True),
        ("gateway.example.com", True),
    ],
)
def test_keys_are_required_off_loopback(host: str, required: bool) -> None:
    assert auth_required(AuthConfig(), host) is required


def test_explicit_settings_win() -> None:
    assert auth_required(AuthConfig(required=False), "0.0.0.0") is False
    assert auth_required(AuthConfig(required=True), "127.0.0.1") is True


def test_bad_security_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="tls needs both cert and key"):
        parse_config({"gateway": {"tls": {"cert": "c.pem"}}})
    with pytest.raises(ConfigError, match=r"gateway\.auth\.metrics"):
        parse_config({"gateway": {"auth": {"metrics": "public"}}})
    with pytest.raises(ConfigError, match=r"gateway\.limits\.max_body_bytes"):
        parse_config({"gateway": {"limits": {"max_body_bytes": 0}}})
