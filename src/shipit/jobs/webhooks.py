"""Completion callbacks of single async requests: signed with HMAC-SHA256, retried with
exponential backoff, durable (the store holds what is due, so a restart resumes delivery).

A delivery is ``POST <url>`` with the request's status object (``GET /v1/async/{id}``) as
JSON and the headers ``x-shipit-webhook-id`` (the request id: deliveries are at least once,
deduplicate on it), ``x-shipit-webhook-timestamp`` (unix seconds) and
``x-shipit-signature: v1=<hex>``, the HMAC-SHA256 of ``"<timestamp>.<body>"`` under the
configured secret. A 2xx answer is delivered; anything else is retried after
``backoff_base_s * 2**attempt`` (at most ``backoff_max_s``) until ``max_attempts``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from shipit.config.jobs import WebhookConfig
from shipit.jobs.formats import async_json

if TYPE_CHECKING:
    from shipit.jobs.runner import AsyncJobStore

log = logging.getLogger("shipit.jobs.webhooks")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``x-shipit-signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: bytes, timestamp: int, body: bytes, signature: str) -> bool:
    """What a receiver runs: constant-time comparison of the signature."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def check_url(config: WebhookConfig, url: str, *, secret_set: bool) -> str | None:
    """Why ``url`` cannot be a webhook, or None when it can."""
    if not secret_set:
        return (
            "webhooks are off on this gateway: set jobs.webhook.secret_env to the variable "
            "holding the signing key"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the webhook URL must be http(s)://host/..., got {url!r}"
    if config.allowed_hosts and parts.hostname not in config.allowed_hosts:
        return (
            f"webhook host {parts.hostname!r} is not in jobs.webhook.allowed_hosts "
            f"{config.allowed_hosts}"
        )
    return None


class WebhookSender:
    def __init__(self, config: WebhookConfig, secret: bytes) -> None:
        self.config = config
        self.secret = secret
        self._session: aiohttp.ClientSession | None = None

    def next_at(self, now: float, attempts: int) -> float | None:
        """When to try again after ``attempts`` failed deliveries (None: give up)."""
        if attempts >= self.config.max_attempts:
            return None
        delay = min(self.config.backoff_max_s, self.config.backoff_base_s * 2.0 ** (attempts - 1))
        return now + delay

    async def deliver_due(self, jobs: AsyncJobStore, now: float) -> None:
        store = jobs.store
        for item, attempts in await jobs.call(store.due_webhooks, now, 16):
            item_id, url = item.id, item.webhook_url or ""
            ok = await self.post(url, item_id, json.dumps(async_json(item)).encode(), now)
            next_at = None if ok else self.next_at(now, attempts + 1)
            await jobs.call(store.webhook_result, item_id, ok, next_at, now)
            if not ok and next_at is None:
                log.warning(
                    "webhook for %s to %s failed %d times; giving up", item_id, url, attempts + 1
                )

    async def post(self, url: str, item_id: str, body: bytes, now: float) -> bool:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        ts = int(now)
        headers = {
            "content-type": "application/json",
            "x-shipit-webhook-id": item_id,
            "x-shipit-webhook-timestamp": str(ts),
            "x-shipit-signature": sign(self.secret, ts, body),
        }
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("webhook for %s to %s failed: %s", item_id, url, exc)
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
