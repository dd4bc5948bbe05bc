"""Shadow traffic, live: mirror a share of one deployment's requests to a candidate version's
replicas, off the user's path, and pair each mirrored answer with the answer the user got.

``offer`` runs on the request path and only decides (``policy.shadow.mirror``: a stable
sample, dropped when live requests wait, when ``max_in_flight`` mirrored requests run, or when
no warm candidate replica has a free slot); a chosen request's copy is sent by a task of its
own, beside the live request, so the user's answer never waits for it. The live answer's bytes
are captured by the request core (``RouterService.captures``) only for mirrored requests; the
pair is made when both are done and the diff report (``policy.shadow.diff_report``) reads the
last pairs. Pairs are formed from requests the live version answered (2xx); the live side's
own errors are in the deployment's metrics. TTFT is measured from when each side's request was
sent. It must not import a web framework; the only HTTP is the mirrored request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, deque
from collections.abc import Callable

from shipit.core.clock import Clock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy.shadow import (
    Answer,
    MirrorConfig,
    MirrorSnapshot,
    Pair,
    ShadowReport,
    diff_report,
    mirror,
)
from shipit.services.router import Lease, RouterService
from shipit.services.upstream import Upstream

log = logging.getLogger("shipit.shadow")
MAX_PAIRS = 5000
MAX_PENDING = 2000


def answer_text(body: bytes, stream: bool) -> str | None:
    """The text of an OpenAI answer (chat or completion, streamed or not); None if unreadable."""
    try:
        if not stream:
            choice = json.loads(body)["choices"][0]
            message = choice.get("message")
            text = message.get("content") if message else choice.get("text")
            return text if isinstance(text, str) else None
        parts: list[str] = []
        for line in body.split(b"\n"):
            if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
                continue
            event = json.loads(line[5:])
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content") if "delta" in choice else choice.get("text")
                if isinstance(piece, str):
                    parts.append(piece)
        return "".join(parts)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _temperature_zero(body: bytes) -> bool:
    try:
        value = json.loads(body).get("temperature", 1.0)
    except (ValueError, AttributeError):
        return False
    return isinstance(value, int | float) and value == 0


class ShadowMirror:
    def __init__(
        self,
        router: RouterService,
        version: str,
        config: MirrorConfig,
        *,
        upstream: Callable[[], Upstream],
        clock: Clock,
        warm: set[str],
    ) -> None:
        self.router = router
        self.version = version
        self.config = config
        self._upstream = upstream
        self.clock = clock
        self.warm = warm  # the candidate replicas warmed up (the controller's set)
        self.in_flight = 0
        self._busy: Counter[str] = Counter()
        self._live: dict[str, Answer] = {}
        self._shadow: dict[str, Answer] = {}
        self._pending: deque[str] = deque()
        self._temp0: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.pairs: deque[Pair] = deque(maxlen=MAX_PAIRS)
        self.decisions: Counter[str] = Counter()

    # ----- the request path -----------------------------------------------------------------
    def _target(self) -> tuple[str, str, int] | None:
        best: tuple[str, str, int] | None = None
        for r in self.router.registry.records():
            if r.version != self.version or r.replica_id not in self.warm:
                continue
            if r.state is not ReplicaState.READY:
                continue
            free = r.max_concurrency - self._busy[r.replica_id]
            if best is None or free > best[2]:
                best = (r.replica_id, r.url, free)
        return best

    def offer(self, view: RequestView, body: bytes) -> bool:
        """Mirror ``view`` if the policy says so; never waits."""
        target = self._target()
        free = target[2] if target is not None else 0
        snapshot = MirrorSnapshot(view.request_id, self.router.queued(), self.in_flight, free)
        decision = mirror(self.config, snapshot)
        self.decisions[decision.reason_code] += 1
        if not decision.mirror or target is None:
            return False
        rid = view.request_id
        self.router.captures[rid] = []
        if _temperature_zero(body):  # parsed for mirrored requests only
            self._temp0.add(rid)
        self._pending.append(rid)
        while len(self._pending) > MAX_PENDING:
            self._forget(self._pending.popleft())
        self.in_flight += 1
        self._busy[target[0]] += 1
        task = asyncio.get_running_loop().create_task(self._send(view, body, target[0], target[1]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send(self, view: RequestView, body: bytes, replica_id: str, url: str) -> None:
        rid = view.request_id
        temp0 = rid in self._temp0
        sent = self.clock.now()
        first: float | None = None
        events = 0
        chunks: list[bytes] = []
        ok = False
        try:
            resp = await self._upstream().open(
                url + view.path, body, {"content-type": "application/json"},
                first_byte_timeout_s=self.router.deployment.retries.response_timeout_s(
                    stream=view.stream
                ),
            )  # fmt: skip
            try:
                async for chunk in resp.chunks():
                    if first is None and not (b'"role"' in chunk and chunk.count(b"data:") == 1):
                        first = self.clock.now()
                    events += chunk.count(b"data:")
                    chunks.append(chunk)
                resp.release()
            except BaseException:
                resp.close()
                raise
            ok = 200 <= resp.status < 300
        except Exception as exc:
            log.debug("mirrored request %s failed: %s", rid, exc)
        finally:
            self.in_flight -= 1
            self._busy[replica_id] -= 1
        end = self.clock.now()
        text = answer_text(b"".join(chunks), view.stream) if ok and temp0 else None
        ttft = tpot = None
        if ok and view.stream and first is not None:
            ttft = first - sent
            tokens = events - 1 - (1 if view.path.endswith("chat/completions") else 0)
            tpot = (end - first) / (tokens - 1) if tokens > 1 else None
        self._shadow[rid] = Answer(ok, ttft, tpot, text)
        self._pair(rid)

    # ----- the live side (the router's answer listener) ------------------------------------
    def on_answer(self, lease: Lease, ttft_s: float | None, tpot_s: float | None) -> None:
        rid = lease.request.request_id
        captured = self.router.captures.pop(rid, None)
        if captured is None:
            return
        text = None
        if rid in self._temp0:
            text = answer_text(b"".join(captured), lease.request.stream)
        self._live[rid] = Answer(True, ttft_s, tpot_s, text)
        self._pair(rid)

    def _pair(self, rid: str) -> None:
        live, shadow = self._live.get(rid), self._shadow.get(rid)
        if live is None or shadow is None:
            return
        temp0 = rid in self._temp0
        if temp0 and live.text is None and shadow.ok:
            temp0 = False  # the live text could not be read
        self.pairs.append(Pair(live, shadow, temp0))
        self._forget(rid)

    def _forget(self, rid: str) -> None:
        self._live.pop(rid, None)
        self._shadow.pop(rid, None)
        self._temp0.discard(rid)
        self.router.captures.pop(rid, None)

    def report(self) -> ShadowReport:
        return diff_report(list(self.pairs))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for rid in list(self._pending):
            self.router.captures.pop(rid, None)
