"""Jobs behind API keys, in-process: each tenant sees only its own files, batches and async
requests; a batch line may only name a model the tenant may use; uploads may be larger than
the edge's request limit (up to jobs.max_file_bytes); job management needs no JSON body."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from shipit.config.gateway import parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import Gateway, create_gateway, running
from shipit.services.keystore import KeyFile, KeyStore, Tenant, new_key
from shipit.services.upstream_fake import FakeReplica, FakeUpstream
from support.asgi import call

from .test_jobs_gateway import ANSWER, jsonl, multipart


def make(
    tmp: Path, answer: list[bytes] = ANSWER, **acme: Any
) -> tuple[Gateway, dict[str, dict[str, str]]]:
    kf = KeyFile()
    headers: dict[str, dict[str, str]] = {}
    for name, models in (("acme", ("m",)), ("other", ())):
        kf.tenants[name] = Tenant(name=name, models=models, **(acme if name == "acme" else {}))
        kf, key = new_key(kf, name, "user")
        headers[name] = {"authorization": f"Bearer {key}"}
    cfg = parse_config(
        {
            "gateway": {"host": "0.0.0.0", "limits": {"max_body_bytes": 4096}},
            "deployments": [{"model": "m", "replicas": 0}],
            "jobs": {"store_path": str(tmp / "jobs.sqlite3"), "poll_interval_s": 0.01},
        }
    )
    upstream = FakeUpstream({"http://a": FakeReplica(chunks=answer)})
    gw = create_gateway(
        cfg,
        clock=FakeClock(),
        upstream_factory=lambda: upstream,
        monitor=False,
        keys=KeyStore(kf),
    )
    gw.routers["default"].add_replica("a", "http://a", state=ReplicaState.READY)
    return gw, headers


def test_tenants_see_only_their_own_jobs(tmp_path: Path) -> None:
    gw, keys = make(tmp_path)

    async def go() -> None:
        async with running(gw):
            content = jsonl(100)  # over the edge's 4096-byte limit: uploads have their own
            assert len(content) > 4096
            body, form = multipart(content)
            anon = await call(gw, "POST", "/v1/files", body, headers=form)
            assert anon.status == 401
            up = await call(gw, "POST", "/v1/files", body, headers={**form, **keys["acme"]})
            assert up.status == 200, up.body
            fid = up.json()["id"]
            req = {"input_file_id": fid, "endpoint": "/v1/chat/completions"}
            theirs = await call(gw, "POST", "/v1/batches", req, headers=keys["other"])
            assert theirs.status == 404  # another tenant's file does not exist for them
            ours = await call(gw, "POST", "/v1/batches", req, headers=keys["acme"])
            assert ours.status == 200, ours.body
            bid = ours.json()["id"]
            for path in (f"/v1/files/{fid}", f"/v1/files/{fid}/content", f"/v1/batches/{bid}"):
                assert (await call(gw, "GET", path, headers=keys["other"])).status == 404
            listed = await call(gw, "GET", "/v1/batches", headers=keys["other"])
            assert listed.json()["data"] == []
            cancel = await call(gw, "POST", f"/v1/batches/{bid}/cancel", headers=keys["other"])
            assert cancel.status == 404
            done = await _wait(gw, f"/v1/batches/{bid}", keys["acme"])
            assert done["request_counts"]["completed"] == 100
            chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            sub = await call(gw, "POST", "/v1/async/chat/completions", chat, headers=keys["acme"])
            assert sub.status == 202, sub.body
            rid = sub.json()["id"]
            assert (await call(gw, "GET", f"/v1/async/{rid}", headers=keys["other"])).status == 404
            res = await call(gw, "POST", f"/v1/async/{rid}/cancel", headers=keys["acme"])
            assert res.status == 200  # no JSON body needed

    asyncio.run(go())


async def _wait(gw: Gateway, path: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(1000):
        got: dict[str, Any] = (await call(gw, "GET", path, headers=headers)).json()
        if got["status"] in ("completed", "failed"):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never finished {gw.jobs.status()}")


def test_a_batch_line_may_only_name_a_model_the_tenant_may_use(tmp_path: Path) -> None:
    gw, keys = make(tmp_path)
    line = {
        "custom_id": "x",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "not-ours", "messages": []},
    }

    async def go() -> None:
        async with running(gw):
            body, form = multipart(jsonl(2) + json.dumps(line).encode() + b"\n")
            fid = (
                await call(gw, "POST", "/v1/files", body, headers={**form, **keys["acme"]})
            ).json()["id"]
            req = {"input_file_id": fid, "endpoint": "/v1/chat/completions"}
            batch = (await call(gw, "POST", "/v1/batches", req, headers=keys["acme"])).json()
            assert batch["status"] == "failed"
            (err,) = batch["errors"]["data"]
            assert (err["code"], err["line"]) == ("model_not_allowed", 3)
            chat = {"model": "not-ours", "messages": [{"role": "user", "content": "x"}]}
            sub = await call(gw, "POST", "/v1/async/chat/completions", chat, headers=keys["acme"])
            assert sub.status == 403
            # "other" may use any model.
            fid = (
                await call(gw, "POST", "/v1/files", body, headers={**form, **keys["other"]})
            ).json()["id"]
            req = {"input_file_id": fid, "endpoint": "/v1/chat/completions"}
            batch = (await call(gw, "POST", "/v1/batches", req, headers=keys["other"])).json()
            assert batch["status"] == "in_progress"

    asyncio.run(go())


USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
ANSWER_30 = [json.dumps({**json.loads(ANSWER[0]), "usage": USAGE}).encode()]


def test_job_lines_are_charged_to_the_tenants_budget_and_stop_when_it_is_spent(
    tmp_path: Path,
) -> None:
    """Budget 50: a one-line batch spends 30 (its usage), an interactive request 30 more; the
    next batch's lines do not run and are answered insufficient_quota in the error file."""
    gw, keys = make(tmp_path, ANSWER_30, token_budget=50)
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}

    async def batch(n: int) -> dict[str, Any]:
        body, form = multipart(jsonl(n))
        up = await call(gw, "POST", "/v1/files", body, headers={**form, **keys["acme"]})
        req = {"input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions"}
        made = await call(gw, "POST", "/v1/batches", req, headers=keys["acme"])
        return await _wait(gw, f"/v1/batches/{made.json()['id']}", keys["acme"])

    async def go() -> None:
        async with running(gw):
            first = await batch(1)
            assert first["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
            assert gw.security.state("acme").spent_tokens == 30
            ok = await call(gw, "POST", "/v1/chat/completions", chat, headers=keys["acme"])
            assert ok.status == 200  # 30 of 50 spent
            assert gw.security.state("acme").spent_tokens == 60
            clock = gw.clock
            assert isinstance(clock, FakeClock)
            clock.advance(10.0)  # past idle_after_s: no interactive load to share with
            spent = await batch(3)
            assert spent["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
            errors = await call(
                gw, "GET", f"/v1/files/{spent['error_file_id']}/content", headers=keys["acme"]
            )
            lines = [json.loads(x) for x in errors.body.splitlines()]
            assert {x["response"]["status_code"] for x in lines} == {429}
            codes = {x["response"]["body"]["error"]["code"] for x in lines}
            assert codes == {"insufficient_quota"}
            assert gw.security.state("acme").spent_tokens == 60  # nothing ran, nothing charged

    asyncio.run(go())
