"""Files, batches and async requests through the gateway app in-process (scripted replicas):
every line runs once through the request core at the job priority, the output file answers
each line, async requests poll / cancel / call back with a signed webhook."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.gateway.routes_jobs import parse_multipart
from shipit.jobs.webhooks import verify
from shipit.policy.jobs import JobSlotsSnapshot, JobSlotsState, job_slots
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

ANSWER = [b'{"id":"x","object":"chat.completion","choices":[]}']


def make(tmp: Path, replica: FakeReplica, **jobs: Any) -> Gateway:
    cfg = parse_config(
        {
            "deployments": [{"model": "m", "replicas": 0}],
            "jobs": {"store_path": str(tmp / "jobs.sqlite3"), "poll_interval_s": 0.01, **jobs},
        }
    )
    upstream = FakeUpstream({"http://a": replica})
    gw = create_gateway(cfg, clock=FakeClock(), upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    return gw


def multipart(content: bytes, purpose: str = "batch") -> tuple[bytes, dict[str, str]]:
    b = "XyZbOuNdArY"
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{b}--\r\n".encode()
    )
    return body, {"content-type": f"multipart/form-data; boundary={b}"}


def jsonl(n: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


async def wait_for(gw: Gateway, path: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got: dict[str, Any] = (await call(gw, "GET", path)).json()
        if got["status"] in statuses:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never reached {statuses}: {got}")


def test_a_batch_runs_every_line_once_and_writes_the_output_file(tmp_path: Path) -> None:
    replica = FakeReplica(chunks=ANSWER)
    gw = make(tmp_path, replica)

    async def go() -> None:
        async with running(gw):
            body, headers = multipart(jsonl(25))
            up = await call(gw, "POST", "/v1/files", body, headers=headers)
            assert up.status == 200, up.body
            f = up.json()
            assert (f["object"], f["purpose"], f["bytes"]) == ("file", "batch", len(jsonl(25)))
            req = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions"}
            created = await call(gw, "POST", "/v1/batches", {**req, "completion_window": "24h"})
            assert created.status == 200, created.body
            batch = await wait_for(gw, f"/v1/batches/{created.json()['id']}", {"completed"})
            assert batch["request_counts"] == {"total": 25, "completed": 25, "failed": 0}
            out = await call(gw, "GET", f"/v1/files/{batch['output_file_id']}/content")
            lines = [json.loads(x) for x in out.body.splitlines()]
            assert [x["custom_id"] for x in lines] == [f"c{i}" for i in range(25)]
            assert lines[0]["response"]["status_code"] == 200
            assert lines[0]["response"]["body"]["object"] == "chat.completion"
            sent = sorted(json.loads(b)["messages"][0]["content"] for b in replica.bodies)
            assert sent == sorted(f"q{i}" for i in range(25))
            listed = (await call(gw, "GET", "/v1/batches")).json()
            assert [b["id"] for b in listed["data"]] == [batch["id"]]

    asyncio.run(go())


def test_bad_requests_say_what_is_wrong(tmp_path: Path) -> None:
    gw = make(tmp_path, FakeReplica(chunks=ANSWER))

    async def go() -> None:
        async with running(gw):
            body, headers = multipart(b"{}", purpose="fine-tune")
            res = await call(gw, "POST", "/v1/files", body, headers=headers)
            assert res.status == 400
            assert "purpose must be 'batch'" in res.json()["error"]["message"]
            req = {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"}
            res = await call(gw, "POST", "/v1/batches", req)
            assert res.status == 404
            res = await call(gw, "POST", "/v1/batches", {**req, "completion_window": "soon"})
            assert res.status == 400
            assert "'24h'" in res.json()["error"]["message"]
            res = await call(gw, "POST", "/v1/batches", {**req, "endpoint": "/v1/embeddings"})
            assert res.status == 400
            assert res.json()["error"]["param"] == "endpoint"
            res = await call(gw, "GET", "/v1/batches/batch_nope")
            assert res.status == 404
            chat = {"model": "m", "messages": [], "stream": True}
            res = await call(gw, "POST", "/v1/async/chat/completions", chat)
            assert res.status == 400
            assert res.json()["error"]["param"] == "stream"

    asyncio.run(go())


def test_job_requests_wait_behind_interactive_ones_at_the_lowest_priority(
    tmp_path: Path,
) -> None:
    replica = FakeReplica(chunks=ANSWER)
    gw = make(tmp_path, replica)
    seen: list[int] = []
    router = gw.routers["default"]
    place_now = router.place_now

    def spy(request: Any, **kw: Any) -> Any:
        seen.append(request.priority)
        return place_now(request, **kw)

    router.place_now = spy  # type: ignore[method-assign]

    async def go() -> None:
        async with running(gw):
            chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "priority": -5}
            sub = await call(gw, "POST", "/v1/async/chat/completions", chat)
            assert sub.status == 202
            await wait_for(gw, f"/v1/async/{sub.json()['id']}", {"completed"})

    asyncio.run(go())
    assert seen == [1_000_000]  # the body's priority does not lift a job


def test_async_request_result_and_cancel(tmp_path: Path) -> None:
    hold = asyncio.Event()
    replica = FakeReplica(chunks=ANSWER, hold=hold)
    gw = make(tmp_path, replica)

    async def go() -> None:
        async with running(gw):
            chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            first = (await call(gw, "POST", "/v1/async/chat/completions", chat)).json()
            await wait_for(gw, f"/v1/async/{first['id']}", {"in_progress"})
            res = await call(gw, "GET", f"/v1/async/{first['id']}/result")
            assert res.status == 409
            assert "in_progress" in res.json()["error"]["message"]
            hold.set()
            done = await wait_for(gw, f"/v1/async/{first['id']}", {"completed"})
            assert done["response"]["object"] == "chat.completion"
            res = await call(gw, "GET", f"/v1/async/{first['id']}/result")
            assert (res.status, res.json()["id"]) == (200, "x")
            # No replica: the next one stays queued and can be cancelled.
            gw.routers["default"].set_state("a", ReplicaState.UNHEALTHY)
            second = (await call(gw, "POST", "/v1/async/completions", chat)).json()
            await asyncio.sleep(0.1)
            res = await call(gw, "POST", f"/v1/async/{second['id']}/cancel")
            assert res.json()["status"] == "cancelled"
            assert (await call(gw, "GET", "/v1/async/areq_nope")).status == 404

    asyncio.run(go())


def test_webhook_is_signed_and_retried_until_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", "s3cret")
    gw = make(
        tmp_path,
        FakeReplica(chunks=ANSWER),
        webhook={"secret_env": "HOOK_KEY", "backoff_base_s": 0.05, "allowed_hosts": ["127.0.0.1"]},
    )
    got: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response(status=500 if len(got) < 3 else 200)

    async def go() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with running(gw):
                chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
                bad = await call(
                    gw,
                    "POST",
                    "/v1/async/chat/completions",
                    chat,
                    headers={"x-shipit-webhook-url": "http://example.com/hook"},
                )
                assert bad.status == 400
                assert "allowed_hosts" in bad.json()["error"]["message"]
                url = f"http://127.0.0.1:{port}/hook"
                sub = await call(
                    gw,
                    "POST",
                    "/v1/async/chat/completions",
                    chat,
                    headers={"x-shipit-webhook-url": url},
                )
                rid = sub.json()["id"]
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    status = (await call(gw, "GET", f"/v1/async/{rid}")).json()
                    if status["webhook"]["state"] == "delivered":
                        break
                    await asyncio.sleep(0.02)
                assert status["webhook"]["state"] == "delivered"
        finally:
            await runner.cleanup()

    asyncio.run(go())
    assert len(got) == 3
    body, headers = got[-1]
    assert json.loads(body)["status"] == "completed"
    assert headers["x-shipit-webhook-id"] == json.loads(body)["id"]
    ts = int(headers["x-shipit-webhook-timestamp"])
    assert verify(b"s3cret", ts, body, headers["x-shipit-signature"])
    assert not verify(b"wrong", ts, body, headers["x-shipit-signature"])


def test_job_slots_fill_idle_capacity_and_keep_to_the_share_under_load() -> None:
    cfg = parse_config({"jobs": {"max_share": 0.5, "idle_after_s": 5, "ttft_tolerance": None}}).jobs
    state = JobSlotsState()

    def slots(now: float, in_flight: int, queued: int, jobs: int) -> tuple[int, str]:
        nonlocal state
        snap = JobSlotsSnapshot(now, 16, in_flight, queued, jobs)
        d, state = job_slots(cfg, snap, state)
        return d.limit, d.reason_code

    assert slots(0.0, 0, 0, 0) == (16, "idle")  # never any interactive load
    assert slots(1.0, 6, 0, 6) == (16, "idle")  # only jobs run: they may fill every slot
    assert slots(2.0, 7, 0, 6) == (8, "shared")  # one interactive request: back to the share
    assert slots(3.0, 6, 0, 6) == (8, "shared")  # it finished, but not 5 s ago
    assert slots(6.9, 6, 0, 6) == (8, "shared")
    assert slots(7.0, 6, 0, 6) == (16, "idle")  # quiet for idle_after_s
    assert slots(8.0, 0, 3, 0) == (8, "shared")  # requests waiting count as load
    assert job_slots(cfg, JobSlotsSnapshot(9.0, 0, 0, 0, 0), state)[0].limit == 0


def test_idle_share_keeps_slots_free_for_the_next_interactive_request() -> None:
    cfg = parse_config(
        {"jobs": {"idle_share": 0.75, "max_share": 0.25, "ttft_tolerance": None}}
    ).jobs
    idle, _ = job_slots(cfg, JobSlotsSnapshot(0.0, 16, 0, 0, 0), JobSlotsState())
    busy, _ = job_slots(cfg, JobSlotsSnapshot(0.0, 16, 13, 0, 12), JobSlotsState())
    assert (idle.limit, busy.limit) == (12, 4)


@pytest.mark.parametrize(
    "content", [b"a\r\nb\nc\r\n", bytes(range(256)) * 3, b"x\r\n--XyZbOuNdAr\r\n", b""]
)
def test_uploads_keep_their_bytes(content: bytes) -> None:
    body, headers = multipart(content)
    fields = parse_multipart(headers["content-type"], body)
    assert fields["file"] == ("in.jsonl", content)
    assert fields["purpose"][1] == b"batch"


def test_an_async_request_sent_again_with_its_idempotency_key_is_not_queued_twice(
    tmp_path: Path,
) -> None:
    replica = FakeReplica(chunks=ANSWER)
    gw = make(tmp_path, replica)

    async def go() -> None:
        async with running(gw):
            chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            key = {"idempotency-key": "retry-me-1"}
            path = "/v1/async/chat/completions"
            first = await call(gw, "POST", path, chat, headers=key)
            again = await call(gw, "POST", path, chat, headers=key)
            assert (first.status, again.status) == (202, 202)
            assert again.json()["id"] == first.json()["id"]
            await wait_for(gw, f"/v1/async/{first.json()['id']}", {"completed"})
            other = {**chat, "messages": [{"role": "user", "content": "y"}]}
            res = await call(gw, "POST", path, other, headers=key)
            assert res.status == 409
            err = res.json()["error"]
            assert err["param"] == "idempotency-key" and first.json()["id"] in err["message"]
            res = await call(gw, "POST", path, chat, headers={"idempotency-key": "k" * 300})
            assert res.status == 400 and res.json()["error"]["param"] == "idempotency-key"

    asyncio.run(go())
    assert len(replica.bodies) == 1  # one request reached the replica


def test_interactive_streams_feed_the_ttft_guard_marked_clean_only_when_no_job_ran(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        gw = make(tmp_path, FakeReplica())
        clock = gw.clock
        assert isinstance(clock, FakeClock)
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        seen = []
        async with running(gw):
            gw.jobs.open()  # samples are kept once the job worker exists ...
            assert gw.jobs.runner is not None
            gw.jobs.runner.shutdown()  # ... but its decisions are taken by hand below
            await asyncio.sleep(0.05)
            assert (await call(gw, "POST", "/v1/chat/completions", chat)).status == 200
            seen += gw.jobs._samples
            clock.advance(1.0)
            gw.jobs.slots(2)  # two job requests running from now on (takes the samples in)
            assert (await call(gw, "POST", "/v1/chat/completions", chat)).status == 200
            seen += gw.jobs._samples
            clock.advance(1.0)
            gw.jobs.slots(0)  # they finished, and no job line waits
            assert (await call(gw, "POST", "/v1/chat/completions", chat)).status == 200
            seen += gw.jobs._samples
        assert [s.clean for s in seen] == [True, False, True]

    asyncio.run(go())


def test_a_waiting_interactive_request_takes_the_slot_of_the_youngest_job_line(
    tmp_path: Path,
) -> None:
    """Two job lines fill both slots; an interactive stream would wait for one to finish, so
    the younger line gives its slot up, goes back to the queue and still runs exactly once."""
    hold = asyncio.Event()
    replica = FakeReplica(hold=hold)
    cfg = parse_config(
        {
            "deployments": [{"model": "m", "replicas": 0, "queueing": {"max_concurrency": 2}}],
            "jobs": {"store_path": str(tmp_path / "jobs.sqlite3"), "poll_interval_s": 0.01},
        }
    )
    upstream = FakeUpstream({"http://a": replica})
    gw = create_gateway(cfg, upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)

    async def go() -> None:
        async with running(gw):
            ids = []
            for i in range(2):
                chat = {"model": "m", "messages": [{"role": "user", "content": f"job {i}"}]}
                ids.append(
                    (await call(gw, "POST", "/v1/async/chat/completions", chat)).json()["id"]
                )
            deadline = time.monotonic() + 10
            while len(replica.bodies) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert len(replica.bodies) == 2  # both slots held by job lines
            chat = {"model": "m", "messages": [{"role": "user", "content": "now"}], "stream": True}
            interactive = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", chat))
            while len(replica.bodies) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert gw.jobs.yielded == 1
            assert b"now" in replica.bodies[2]  # the slot went to the interactive request
            hold.set()
            assert (await interactive).status == 200
            for job_id in ids:
                await wait_for(gw, f"/v1/async/{job_id}", {"completed"})
        assert sum(b"job 1" in b for b in replica.bodies) == 2  # stopped once, run again
        assert sum(b"job 0" in b for b in replica.bodies) == 1

    asyncio.run(go())


def test_under_interactive_load_jobs_and_the_autoscaler_see_only_what_the_window_needs(
    tmp_path: Path,
) -> None:
    """A 3,000-line batch with a 1 h window whose lines take 0.5 s needs one line at a time to
    finish in half its window: with an interactive stream in flight, one job slot (not the
    share's 8 of 16), and the autoscaler is told one waiting line, not 3,000."""
    from shipit.policy.jobs import Backlog

    hold = asyncio.Event()
    replica = FakeReplica(hold=hold)
    cfg = parse_config(
        {
            "deployments": [{"model": "m", "replicas": 0, "queueing": {"max_concurrency": 16}}],
            "jobs": {"store_path": str(tmp_path / "jobs.sqlite3"), "ttft_tolerance": None},
        }
    )
    upstream = FakeUpstream({"http://a": replica})
    gw = create_gateway(cfg, upstream_factory=lambda: upstream, monitor=False)
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)

    async def go() -> None:
        async with running(gw):
            runner = gw.jobs.open()
            assert runner is not None and gw.jobs.runner is not None
            gw.jobs.runner.shutdown()  # decisions by hand below
            await asyncio.sleep(0.05)
            chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            interactive = asyncio.create_task(call(gw, "POST", "/v1/chat/completions", chat))
            deadline = time.monotonic() + 10
            while not replica.bodies and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            gw.jobs.runner.backlog = (Backlog(3000, 3600.0, 3600.0),)
            gw.jobs.runner.pending = 3000
            assert gw.jobs.slots(0) == 1  # no line measured yet: one measures it
            assert gw.jobs.queued_work() == 1
            gw.jobs.config = gw.jobs.config.model_copy(update={"finish_by": None})
            assert gw.jobs.slots(0) == 8  # no pacing: the share
            assert gw.jobs.queued_work() == 3000
            gw.jobs.config = cfg.jobs
            gw.jobs.line_s = 0.5
            assert gw.jobs.slots(0) == 1
            assert gw.jobs.queued_work() == 1
            jobs = (await call(gw, "GET", "/shipit/status")).json()["jobs"]
            assert (jobs["slots"], jobs["reason_code"], jobs["left"]) == (1, "paced", 3000)
            assert (jobs["line_s"], jobs["autoscaler_demand"]) == (0.5, 1)
            hold.set()
            assert (await interactive).status == 200

    asyncio.run(go())


def test_answered_lines_measure_how_long_a_line_holds_a_slot(tmp_path: Path) -> None:
    async def go() -> None:
        gw = make(tmp_path, FakeReplica())
        assert gw.jobs.line_s is None
        async with running(gw):
            chat = {"model": "m", "messages": [{"role": "user", "content": "job"}]}
            job_id = (await call(gw, "POST", "/v1/async/chat/completions", chat)).json()["id"]
            await wait_for(gw, f"/v1/async/{job_id}", {"completed"})
        assert gw.jobs.line_s is not None

    asyncio.run(go())


def test_a_job_worker_that_starts_in_a_lull_does_not_take_the_fleet_for_idle() -> None:
    """The worker's first decision comes between two interactive requests (none in flight):
    the last one finished 1 s ago, so jobs keep to the share, not every slot."""
    cfg = parse_config({"jobs": {"max_share": 0.5, "idle_after_s": 5, "ttft_tolerance": None}}).jobs
    lull = JobSlotsSnapshot(100.0, 16, 0, 0, 0, interactive_seen_s=99.0)
    assert job_slots(cfg, lull, JobSlotsState())[0].limit == 8
    quiet = JobSlotsSnapshot(100.0, 16, 0, 0, 0, interactive_seen_s=94.0)
    assert job_slots(cfg, quiet, JobSlotsState())[0].limit == 16
