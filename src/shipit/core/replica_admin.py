"""The names shared by a replica and whoever administers it (the gateway, ``shipit up``).

The environment variable a replica reads its admin token from, the request header that sets
a prefix-cache salt (accepted only with that token), and the ``Authorization`` header the
token travels in. Standard library only; no I/O here.
"""

from __future__ import annotations

ADMIN_TOKEN_ENV = "SHIPIT_REPLICA_ADMIN_TOKEN"
CACHE_SALT_HEADER = "x-shipit-cache-salt"


def bearer(token: str) -> dict[str, str]:
    """The header that carries the admin token."""
    return {"Authorization": f"Bearer {token}"}
