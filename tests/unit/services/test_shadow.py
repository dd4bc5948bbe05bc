"""The live shadow mirror with a fake upstream: sampled requests are copied to a warm candidate
replica, the live answer is captured only for them, pairs compare temperature-0 texts, and the
text of every OpenAI answer shape is read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

from shipit.config.gateway import DeploymentConfig
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy.shadow import MirrorConfig
from shipit.services.router import RouterService
from shipit.services.shadow import ShadowMirror, answer_text


def sse(*pieces: str, chat: bool = True) -> bytes:
    out = b""
    if chat:
        out += b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
    for p in pieces:
        ev = {"choices": [{"delta": {"content": p}}]} if chat else {"choices": [{"text": p}]}
        out += b"data: " + json.dumps(ev).encode() + b"\n\n"
    return out + b"data: [DONE]\n\n"


def words(text: str) -> list[str]:
    """Streamed pieces the way a tokenizer streams them: a word with its leading space."""
    parts = text.split(" ")
    return parts[:1] + [" " + p for p in parts[1:]]


def test_answer_text_reads_every_shape() -> None:
    assert answer_text(sse("Par", "is"), True) == "Paris"
    assert answer_text(sse("a", " b", chat=False), True) == "a b"
    assert answer_text(b'{"choices":[{"message":{"content":"Hi"}}]}', False) == "Hi"
    assert answer_text(b'{"choices":[{"text":"yo"}]}', False) == "yo"
    assert answer_text(b"not json", False) is None


class Resp:
    status = 200
    headers: Mapping[str, str] = {}

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self.body.split(b"\n\n"):
            if part:
                yield part + b"\n\n"

    def close(self) -> None: ...

    def release(self) -> None: ...


class Upstream:
    def __init__(self, text: str) -> None:
        self.text = text
        self.opened: list[str] = []

    async def open(
        self, url: str, body: bytes, headers: Mapping[str, str], *, first_byte_timeout_s: float
    ) -> Resp:
        self.opened.append(url)
        return Resp(sse(*words(self.text)))


def run(shadow_text: str, live_text: str, n: int) -> tuple[ShadowMirror, Upstream, RouterService]:
    router = RouterService(DeploymentConfig(name="chat"), clock=FakeClock())
    router.registry.add("v1-0", "http://v1-0", state=ReplicaState.READY)
    router.registry.add("v2-0", "http://v2-0", state=ReplicaState.READY, version="v2")
    router.set_version_weights({"v1": 100, "v2": 0})
    up = Upstream(shadow_text)
    mirror = ShadowMirror(
        router, "v2", MirrorConfig(percent=100.0), upstream=lambda: up, clock=router.clock,
        warm={"v2-0"},
    )  # type: ignore[arg-type]  # fmt: skip

    async def go() -> None:
        for i in range(n):
            view = RequestView(
                request_id=f"r{i}", deployment="chat", model="m", stream=True,
                path="/v1/chat/completions",
            )  # fmt: skip
            body = json.dumps({"temperature": 0, "stream": True}).encode()
            assert mirror.offer(view, body)
            lease = await router.acquire(view)
            assert lease.replica_id == "v1-0"  # users stay on the baseline
            router.captures[view.request_id] += [sse(*words(live_text))]
            await asyncio.sleep(0)
            router.release(lease, outcome="ok")
            router.answered(lease, ttft_s=0.1, tpot_s=0.01, slo_met=True)
            mirror.on_answer(lease, 0.1, 0.01)
        await asyncio.sleep(0.01)

    asyncio.run(go())
    return mirror, up, router


def test_identical_answers_pair_up_as_identical() -> None:
    mirror, up, router = run("the capital is Paris", "the capital is Paris", 12)
    assert up.opened == ["http://v2-0/v1/chat/completions"] * 12
    report = mirror.report()
    assert report.pairs == 12 and report.compared == 12
    assert report.exact_match_rate == 1.0 and report.mean_edit_distance == 0.0
    assert router.captures == {}  # nothing left behind


def test_different_answers_show_in_the_report() -> None:
    mirror, _, _ = run("the capital is Lyon indeed", "the capital is Paris", 6)
    report = mirror.report()
    assert report.exact_match_rate == 0.0
    assert report.mean_edit_distance == 2.0 and report.mean_length_delta == 1.0


def test_nothing_is_mirrored_while_live_requests_wait() -> None:
    router = RouterService(DeploymentConfig(name="chat"), clock=FakeClock())
    router.registry.add("v2-0", "http://v2-0", state=ReplicaState.READY, version="v2")
    mirror = ShadowMirror(
        router, "v2", MirrorConfig(percent=100.0), upstream=lambda: Upstream(""),  # type: ignore[arg-type,return-value]
        clock=router.clock, warm=set(),
    )  # fmt: skip
    view = RequestView(request_id="r0", deployment="chat", model="m")
    assert not mirror.offer(view, b"{}")  # no warm candidate replica
    assert mirror.decisions["candidate_busy"] == 1
