"""Who may call a replica's admin routes: a bearer token shared with the gateway.

Owns the check of ``Authorization: Bearer <token>`` against the replica's admin token (a
constant-time comparison), and the refusals: 401 (``invalid_api_key``, with
``WWW-Authenticate: Bearer``) for a missing or wrong token, 403 (``permission_denied``) when the
replica has no token configured and was not started with ``--allow-unauthenticated-admin``
(which the settings allow only on a loopback address). The same credential unlocks the
gateway-only request header ``x-shipit-cache-salt``. The token is never logged or echoed. It
must not read the environment or files (the CLI does).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.responses import Response

from shipit.core import openai_errors as oe
from shipit.core.replica_admin import ADMIN_TOKEN_ENV
from shipit.replica.errors import error_response
from shipit.replica.settings import ReplicaSettings


class AdminAuth:
    def __init__(self, settings: ReplicaSettings) -> None:
        self._token = settings.admin_token.strip().encode() if settings.admin_token else None
        self._open = settings.allow_unauthenticated_admin and self._token is None

    def __repr__(self) -> str:
        return f"AdminAuth(token={'set' if self._token else 'none'}, open={self._open})"

    def _presented(self, headers: Mapping[str, str]) -> bytes | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip().encode("utf-8", "replace")

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with these headers may use admin routes and admin headers."""
        if self._token is None:
            return self._open
        presented = self._presented(headers)
        return presented is not None and hmac.compare_digest(presented, self._token)

    def refusal(self, headers: Mapping[str, str], what: str) -> Response | None:
        """``None`` if authorized, else the 401/403 for ``what`` (e.g. ``POST /v1/...``)."""
        if self.authorized(headers):
            return None
        if self._token is None:
            return error_response(
                oe.PERMISSION_DENIED,
                f"{what} is an admin endpoint and this replica has no admin token; start it "
                f"with {ADMIN_TOKEN_ENV} set (or --admin-token-file) and send "
                "'Authorization: Bearer <token>'",
            )
        why = "a wrong" if self._presented(headers) is not None else "no"
        return error_response(
            oe.INVALID_API_KEY,
            f"{what} needs the replica's admin token and the request carried {why} bearer "
            "token; send 'Authorization: Bearer <token>' (the gateway does this for you)",
            headers={"WWW-Authenticate": 'Bearer realm="shipit-replica-admin"'},
        )
