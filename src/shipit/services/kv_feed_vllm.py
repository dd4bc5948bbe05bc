"""vLLM's KV-event stream into the prefix index: what a vLLM replica stored and evicted.

vLLM (``--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq", ...}'``)
publishes batches of ``BlockStored`` / ``BlockRemoved`` / ``AllBlocksCleared`` on a ZeroMQ PUB
socket, one message ``(topic, sequence number, msgpack payload)`` per batch, and optionally
answers replay requests for missed batches on a ROUTER socket. Its block hashes are its own
(its hash function and seed), so they never equal the hashes the gateway computes for a prompt.
A ``BlockStored`` carries the blocks' token ids and the hash of the block before them, though,
so ``VllmBlockMap`` re-chains each stored block in the engine's scheme
(``engine.block_manager.hash_block``, from ``root_hash(lora_name)`` or the mapped parent):
the result is exactly what the gateway hashes for the same tokens, and it keeps vLLM's hash ->
ours so that a ``BlockRemoved`` evicts the right entry.

Owns: decoding a payload in both encodings vLLM has used (array-like structs, the tag first;
and maps with a ``type`` key), the hash map per replica, and ``ZmqKvFeed``, the subscriber that
applies batches in order, detects gaps by sequence number (replays them when a replay endpoint
is given, else forgets what it knew of the replica, as a truncated HTTP page does) and starts
over when the publisher restarts. Blocks it cannot re-chain (a parent it never saw, multimodal or
salted blocks whose extra keys it cannot reproduce, a block size other than the gateway's, a
medium other than the GPU) are not indexed; their removals are ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec
import zmq
import zmq.asyncio

from shipit.engine.block_manager import hash_block, root_hash

logger = logging.getLogger("shipit.gateway.kv_feed")
END_SEQ = -1  # vLLM's replay ends with this sequence number and an empty payload
REPLAY_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class KvUpdate:
    """One change to a replica's index, in the engine's hashes; applied in order."""

    stored: tuple[int, ...] = ()
    evicted: tuple[int, ...] = ()
    reset: bool = False


class FeedFormatError(ValueError):
    """A payload that is not a vLLM KV-event batch."""


def _events(batch: object) -> list[Any]:
    if isinstance(batch, dict):
        events = batch.get("events")
    elif isinstance(batch, list) and len(batch) >= 2:
        events = batch[1]  # [ts, events, data_parallel_rank?]
    else:
        events = None
    if not isinstance(events, list):
        raise FeedFormatError(f"not a KV-event batch: {type(batch).__name__}")
    return events


_FIELDS = {
    "BlockStored": (
        "block_hashes",
        "parent_block_hash",
        "token_ids",
        "block_size",
        "lora_id",
        "medium",
        "lora_name",
        "extra_keys",
    ),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}


def _event_fields(event: object) -> tuple[str, dict[str, Any]]:
    """(kind, fields) of one event: a map with a ``type`` tag, or an array with the tag first
    and the fields in declaration order (trailing defaults omitted)."""
    if isinstance(event, dict):
        kind = event.get("type")
        return str(kind), event
    if isinstance(event, list) and event and isinstance(event[0], str):
        kind = event[0]
        names = _FIELDS.get(kind, ())
        return kind, dict(zip(names, event[1:], strict=False))
    raise FeedFormatError(f"not a KV event: {event!r:.80}")


def decode_batch(payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The events of one msgpack payload, oldest first, as (kind, fields)."""
    try:
        batch = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise FeedFormatError(f"not msgpack: {exc}") from None
    return [_event_fields(e) for e in _events(batch)]


@dataclass
class VllmBlockMap:
    """vLLM's block hash -> the engine's, for one replica; bounded (oldest mapping first out,
    a safety net for removals that never came)."""

    block_size: int
    max_entries: int
    ours: dict[Any, int | None] = field(default_factory=dict)
    skipped: int = 0  # stored blocks that could not be re-chained
    warned: set[str] = field(default_factory=set)

    def apply(self, kind: str, f: dict[str, Any]) -> KvUpdate | None:
        if kind == "AllBlocksCleared":
            self.ours.clear()
            return KvUpdate(reset=True)
        if f.get("medium") not in (None, "GPU", "gpu"):
            return None  # a copy offloaded to another tier, not the replica's GPU cache
        if kind == "BlockRemoved":
            gone = [self.ours.pop(h, None) for h in f.get("block_hashes") or ()]
            evicted = tuple(h for h in gone if h is not None)
            return KvUpdate(evicted=evicted) if evicted else None
        if kind == "BlockStored":
            return self._stored(f)
        return None  # a kind this version does not know: nothing to index

    def _stored(self, f: dict[str, Any]) -> KvUpdate | None:
        hashes: Sequence[Any] = f.get("block_hashes") or ()
        tokens: Sequence[int] = f.get("token_ids") or ()
        size = f.get("block_size")
        parent_v = f.get("parent_block_hash")
        parent: int | None
        if size != self.block_size:
            self._warn(
                "block_size",
                f"the replica's KV blocks are {size} tokens and "
                f"routing.prefix_cache.block_size_tokens is {self.block_size}: its events "
                "cannot match the gateway's hashes; set block_size_tokens to the replica's",
            )
            parent = None
        elif len(tokens) != len(hashes) * self.block_size:
            parent = None
        elif parent_v is None:
            lora = f.get("lora_name")
            parent = root_hash(lora if isinstance(lora, str) else None, None)
        else:
            parent = self.ours.get(parent_v)
        extra = f.get("extra_keys") or ()
        bs = self.block_size
        stored: list[int] = []
        for i, h in enumerate(hashes):
            if parent is not None and i < len(extra) and extra[i]:
                parent = None  # multimodal, salted or embedding blocks: not reproducible here
            if parent is not None:
                parent = hash_block(parent, list(tokens[i * bs : (i + 1) * bs]))
                stored.append(parent)
            else:
                self.skipped += 1
            self.ours[h] = parent
        while len(self.ours) > self.max_entries:
            del self.ours[next(iter(self.ours))]
        return KvUpdate(stored=tuple(stored)) if stored else None

    def _warn(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning("kv events: %s", message)

    def updates(self, events: list[tuple[str, dict[str, Any]]]) -> Iterator[KvUpdate]:
        for kind, f in events:
            update = self.apply(kind, f)
            if update is not None:
                yield update


def endpoint_for(template: str, replica_url: str) -> str:
    """``template`` with ``{host}`` replaced by the replica URL's host."""
    host = urlsplit(replica_url).hostname or "127.0.0.1"
    return template.replace("{host}", f"[{host}]" if ":" in host else host)


class ZmqKvFeed:
    """Subscribes to one replica's vLLM KV-event publisher and hands each batch's updates, in
    order, to ``apply(update)`` (the router's index). ``run`` until cancelled."""

    def __init__(
        self,
        replica_id: str,
        *,
        endpoint: str,
        apply: Callable[[KvUpdate], None],
        block_size: int,
        max_entries: int,
        replay_endpoint: str | None = None,
        topic: str = "",
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.topic = topic.encode("utf-8")
        self.apply = apply
        self.map = VllmBlockMap(block_size, max_entries)
        self.ctx = context or zmq.asyncio.Context.instance()
        self.next_seq: int | None = None  # the sequence number expected next
        self.batches = 0
        self.gaps = 0
        self.bad = 0

    async def run(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, self.topic)
        sub.connect(self.endpoint)
        try:
            while True:
                frames = await sub.recv_multipart()
                if len(frames) != 3:
                    self.bad += 1
                    continue
                await self.receive(int.from_bytes(frames[1], "big", signed=True), frames[2])
        finally:
            sub.close(linger=0)

    async def receive(self, seq: int, payload: bytes) -> None:
        """One published batch: in order, after replaying or forgetting what was missed."""
        expected = self.next_seq
        if expected is not None and seq < expected:
            # Numbers went back: the replica's publisher restarted with an empty cache.
            self._reset(f"sequence went back from {expected} to {seq}")
        elif seq != (expected if expected is not None else 0):
            self.gaps += 1
            start = 0 if expected is None else expected
            if not await self._replay(start, seq):
                self._reset(f"batches {start}..{seq - 1} were missed")
        self._batch(seq, payload)

    def _batch(self, seq: int, payload: bytes) -> None:
        try:
            events = decode_batch(payload)
        except FeedFormatError as exc:
            self.bad += 1
            logger.warning("kv events from %s: batch %d skipped: %s", self.replica_id, seq, exc)
        else:
            for update in self.map.updates(events):
                self.apply(update)
        self.batches += 1
        self.next_seq = seq + 1

    def _reset(self, why: str) -> None:
        logger.info("kv events from %s: index rebuilt from the feed (%s)", self.replica_id, why)
        self.map.ours.clear()
        self.apply(KvUpdate(reset=True))

    async def _replay(self, start: int, upto: int) -> bool:
        """Ask the replay endpoint for batches ``start``.. and apply those before ``upto``;
        False when there is none, it does not answer, or it no longer holds ``start``."""
        if self.replay_endpoint is None:
            return False
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.replay_endpoint)
        got: list[tuple[int, bytes]] = []
        try:
            await sock.send_multipart([b"", start.to_bytes(8, "big", signed=True)])
            while True:
                async with asyncio.timeout(REPLAY_TIMEOUT_S):
                    frames = await sock.recv_multipart()
                if len(frames) != 3:
                    return False
                seq = int.from_bytes(frames[1], "big", signed=True)
                if seq == END_SEQ:
                    break
                if start <= seq < upto:
                    got.append((seq, frames[2]))
        except TimeoutError:
            return False
        finally:
            sock.close(linger=0)
        if [s for s, _ in got] != list(range(start, upto)):
            return False  # the replica's buffer no longer holds them all
        for seq, payload in got:
            self._batch(seq, payload)
        return True
