"""One generation request at the replica: its choices fanned out to the engine, the outputs
merged back into one OpenAI response or one SSE stream.

Owns the request's life after parsing: compile its constraint off the engine thread (a bad
schema is a 400, and a slow one delays only this request), one engine request per choice, the
first output of every choice awaited before answering (so an error is a proper status, not a
broken stream), the merge of the choices' outputs in arrival order, disconnects (every engine
request aborted, its KV blocks freed), and the request's metrics timer. ``Replica`` (in
``replica.app``) owns the engine and the lifecycle it reads; this module holds no state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shipit.core import openai_errors as oe
from shipit.core.errors import ShipitError
from shipit.engine.engine import RequestOutput
from shipit.replica.errors import error_body, error_response, from_exception
from shipit.replica.metrics import RequestTimer
from shipit.replica.openai_format import DONE, ResponseWriter, new_request_id, sse
from shipit.replica.requests import GenerationRequest
from shipit.replica.streaming import SSEResponse, race_disconnect

if TYPE_CHECKING:
    from shipit.replica.app import Replica

log = logging.getLogger("shipit.replica")

Stream = AsyncIterator[RequestOutput]


async def _firsts(streams: Sequence[Stream]) -> list[RequestOutput]:
    """Every choice's first output; if one fails, the others are cancelled (which aborts them)."""
    tasks = [asyncio.ensure_future(anext(s)) for s in streams]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _close(streams: Sequence[Stream]) -> None:
    for s in streams:
        aclose = getattr(s, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def merged(
    firsts: Sequence[RequestOutput], streams: Sequence[Stream]
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(choice index, output) as the choices produce them, until every choice finished."""
    if len(streams) == 1:
        out = firsts[0]
        yield 0, out
        while not out.finished:
            out = await anext(streams[0])
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException]] = asyncio.Queue()

    async def pump(i: int) -> None:
        out = firsts[i]
        try:
            await queue.put((i, out))
            while not out.finished:
                out = await anext(streams[i])
                await queue.put((i, out))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((i, exc))

    tasks = [asyncio.ensure_future(pump(i)) for i in range(len(streams))]
    try:
        remaining = len(streams)
        while remaining:
            i, item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield i, item
            remaining -= item.finished
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def generate(
    replica: Replica, request: Request, req: GenerationRequest, lora_name: str | None
) -> Response:
    """The response to one parsed generation request (the lifecycle tracks it throughout)."""
    assert replica.engine is not None
    engine = replica.engine
    if req.constraint is not None:
        try:
            await asyncio.to_thread(engine.engine.grammars.check, req.constraint)
        except ShipitError as exc:
            return from_exception(exc)
    rid = new_request_id(req.kind)
    writer = ResponseWriter(
        request_id=rid,
        kind=req.kind,
        model=req.model,
        tokenizer=engine.engine.tokenizer,
        include_usage=req.include_usage,
        choices=[(c.prompt_index, c.echo) for c in req.choices],
        tool_names=req.tools.names if req.tools is not None else None,
    )
    streams = [
        engine.generate(
            rid if len(req.choices) == 1 else f"{rid}-{c.index}",
            list(c.prompt_token_ids),
            c.params,
            priority=req.priority,
            lora_name=lora_name,
            cache_salt=req.cache_salt,
        )
        for c in req.choices
    ]
    task: asyncio.Task[Any] | None = asyncio.current_task()
    assert task is not None
    replica.lifecycle.enter(task)
    try:
        return await _respond(replica, request, req, streams, writer, task)
    except BaseException:
        replica.lifecycle.leave(task)
        await _close(streams)
        raise


async def _respond(
    replica: Replica,
    request: Request,
    req: GenerationRequest,
    streams: list[Stream],
    writer: ResponseWriter,
    task: asyncio.Task[Any],
) -> Response:
    timer = replica.metrics.timer()
    try:
        ok, firsts = await race_disconnect(_firsts(streams), request.receive)
    except ShipitError as exc:
        replica.lifecycle.leave(task)
        await _close(streams)
        return from_exception(exc)
    except Exception as exc:  # the engine's step failed: an OpenAI-shaped 500, counted
        await _close(streams)
        return _failed(replica, task, timer, exc)
    if not ok or firsts is None:
        replica.lifecycle.leave(task)
        await _close(streams)
        timer.done("abort")
        return Response(status_code=499)
    timer.tokens(sum(len(f.new_token_ids) for f in firsts))
    outputs = merged(firsts, streams)
    if req.stream:
        events = _sse_events(outputs, streams, writer, timer)
        return SSEResponse(events, on_close=lambda: replica.lifecycle.leave(task))
    try:
        ok, _ = await race_disconnect(_collect(outputs, writer, timer), request.receive)
    except Exception as exc:
        await _close(streams)
        return _failed(replica, task, timer, exc)
    replica.lifecycle.leave(task)
    if not ok:
        await _close(streams)
        timer.done("abort")
        return Response(status_code=499)
    return JSONResponse(writer.body())


def _failed(
    replica: Replica, task: asyncio.Task[Any], timer: RequestTimer, exc: Exception
) -> Response:
    replica.lifecycle.leave(task)
    timer.done("error")
    log.error("generation failed: %s: %s", type(exc).__name__, exc)
    return error_response(oe.INTERNAL_ERROR, f"generation failed: {type(exc).__name__}: {exc}")


async def _collect(
    outputs: AsyncIterator[tuple[int, RequestOutput]], writer: ResponseWriter, timer: RequestTimer
) -> None:
    reason: str | None = None
    seen: set[int] = set()  # each choice's first output was counted already
    async for i, out in outputs:
        if i in seen:
            timer.tokens(len(out.new_token_ids))
        seen.add(i)
        writer.add(out, i)
        reason = out.finish_reason if out.finished else reason
    timer.done(reason)


async def _sse_events(
    outputs: AsyncIterator[tuple[int, RequestOutput]],
    streams: list[Stream],
    writer: ResponseWriter,
    timer: RequestTimer,
) -> AsyncIterator[bytes]:
    finished = False
    seen: set[int] = set()  # each choice's first output was counted already
    reason: str | None = None
    try:
        async for i, out in outputs:
            if i in seen:
                timer.tokens(len(out.new_token_ids))
            seen.add(i)
            chunk = writer.chunk(out, i)
            if chunk:
                yield chunk
            reason = out.finish_reason if out.finished else reason
        finished = True
        timer.done(reason)
        if writer.include_usage:
            yield writer.usage_chunk()
        yield DONE
    except Exception as exc:  # a failed engine step: tell the client in-band
        log.exception("request %s failed mid-stream", writer.request_id)
        yield sse(error_body(f"generation failed: {exc}", oe.INTERNAL_ERROR))
        yield DONE
    finally:
        if not finished:
            timer.done("abort")
        await outputs.aclose()  # type: ignore[attr-defined]
        await _close(streams)
