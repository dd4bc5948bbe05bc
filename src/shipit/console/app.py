"""The web console as a raw ASGI app under ``/ui``: static pages and the JSON API.

Routes (pages: GET and HEAD; the API: GET, and POST where said):

- ``/ui`` redirects to ``/ui/``; ``/ui/`` is the start page, ``/ui/vram``, ``/ui/recommend``
  and ``/ui/fleet`` the three pages, ``/ui/static/<file>`` their scripts and styles (the
  packaged ``console/static`` files, read once; no path ever reaches the file system);
- ``/ui/api/catalog``: models, GPUs, precisions and providers for the pickers;
- ``/ui/api/vram`` and ``/ui/api/recommend`` (GET with a query string, or POST with a JSON
  object): the planner's answers (``console.api``), computed off the event loop;
- ``/ui/api/fleet``: the running fleet, from the ``fleet`` callable the gateway passes; a
  console without one (``shipit console``) answers 404 saying where the fleet page works.

Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
only). The gateway mounts this app (its auth runs first); ``shipit console`` serves it alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from shipit import capacity as cap
from shipit.console import api
from shipit.console.assets import Asset, load_assets

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
FleetSource = Callable[[Mapping[str, str]], dict[str, Any]]

PREFIX = "/ui"
API = PREFIX + "/api/"
FLEET_PATH = API + "fleet"
PAGES = {
    "/": "index.html",
    "/vram": "vram.html",
    "/recommend": "recommend.html",
    "/fleet": "fleet.html",
}
MAX_BODY_BYTES = 1 << 20  # a pasted config.json is a few kB
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


def serves(path: str) -> bool:
    """Whether ``path`` is the console's (``/ui`` and below)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def _error(message: str, field: str | None, code: str = "invalid_value") -> bytes:
    kind = "invalid_request_error" if code == "invalid_value" else "not_found_error"
    err = {"message": message, "type": kind, "param": field, "code": code}
    return json.dumps({"error": err}).encode()


class ConsoleApp:
    """``/ui``: pages and API. ``fleet`` gives the fleet page its data (the gateway's state);
    without it the console serves the calculators alone."""

    def __init__(self, fleet: FleetSource | None = None, *, max_parallel: int = 2) -> None:
        self.fleet = fleet
        self.assets: dict[str, Asset] = load_assets()
        self._catalog: cap.Catalog | None = None
        self._max_parallel = max_parallel  # planner calls use whole cores
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @property
    def catalog(self) -> cap.Catalog:
        if self._catalog is None:
            self._catalog = cap.load_catalog()
        return self._catalog

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == PREFIX:
            await _send(send, 308, b"", [(b"location", b"/ui/")])
        elif path.startswith(API):
            await self._api(path[len(API) :], method, scope, receive, send)
        elif method not in ("GET", "HEAD"):
            await _send_json(send, 405, _error(f"{method} is not allowed on {path}; use GET", None))
        else:
            await self._static(path[len(PREFIX) :], send, head=method == "HEAD")

    async def _static(self, rest: str, send: Send, *, head: bool) -> None:
        name = PAGES.get(rest) or (rest[len("/static/") :] if rest.startswith("/static/") else "")
        asset = self.assets.get(name)
        if asset is None:
            pages = ", ".join(PREFIX + p for p in PAGES)
            msg = f"{PREFIX}{rest}: no such console page; the console has {pages}"
            await _send_json(send, 404, _error(msg, None, "not_found"))
            return
        headers = [(b"content-type", asset.content_type.encode())]
        await _send(send, 200, b"" if head else asset.body, headers, length=len(asset.body))

    async def _api(
        self, name: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        allowed = ("GET", "POST") if name in ("vram", "recommend") else ("GET",)
        if name not in ("catalog", "vram", "recommend", "fleet"):
            msg = f"{API}{name}: no such API; the console has {API}catalog, vram, recommend, fleet"
            await _send_json(send, 404, _error(msg, None, "not_found"))
            return
        if method not in allowed:
            msg = f"{method} is not allowed on {API}{name}; use {', '.join(allowed)}"
            await _send_json(
                send, 405, _error(msg, None), [(b"allow", ", ".join(allowed).encode())]
            )
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            payload = await self._answer(name, method, query, receive)
        except api.ConsoleError as exc:
            await _send_json(send, 400, _error(exc.message, exc.field))
            return
        if payload is None:
            msg = (
                "no fleet here: `shipit console` serves the calculators alone; the fleet page "
                "works on a running gateway (`shipit up`, then open /ui/fleet)"
            )
            await _send_json(send, 404, _error(msg, None, "not_found"))
            return
        await _send_json(send, 200, json.dumps(payload).encode())

    async def _answer(
        self, name: str, method: str, query: dict[str, str], receive: Receive
    ) -> dict[str, Any] | None:
        if name == "fleet":
            return self.fleet(query) if self.fleet is not None else None
        if name == "catalog":
            return api.catalog_summary(self.catalog)
        body = api.parse_body(await _read_body(receive)) if method == "POST" else None
        handler = api.vram if name == "vram" else api.recommend
        catalog = self.catalog
        async with self._slots_here():
            return await asyncio.to_thread(handler, catalog, query, body)

    def _slots_here(self) -> asyncio.Semaphore:
        """The semaphore of the running loop (an app may be served again on a new loop)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._max_parallel))
        return self._slots[1]


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise api.ConsoleError(
                f"the body is over {MAX_BODY_BYTES} bytes; a config.json is a few kB", "body"
            )
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    length: int | None = None,
) -> None:
    size = str(len(body) if length is None else length).encode()
    all_headers = [*(headers or []), (b"content-length", size), *_SECURITY]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _send(send, status, body, [(b"content-type", b"application/json"), *(extra or [])])


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
