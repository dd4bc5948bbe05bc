"""vLLM's KV-event stream into the prefix index: payloads in both encodings vLLM has used,
re-chained into the gateway's hashes, and a real ZeroMQ publisher (PUB + replay ROUTER, the
wire format vLLM's ``ZmqEventPublisher`` documents) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio

from shipit.config.gateway import ConfigError, parse_config
from shipit.core.clock import FakeClock
from shipit.core.fleet import ReplicaState
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.services.kv_feed_vllm import (
    FeedFormatError,
    KvUpdate,
    VllmBlockMap,
    ZmqKvFeed,
    decode_batch,
)
from shipit.services.monitor import ReplicaMonitor
from shipit.services.router import RouterService
from shipit.services.upstream_fake import FakeReplica, FakeUpstream

BS = 16
TOKENS = list(range(1000, 1000 + 3 * BS))  # three full blocks


# The event types as vLLM declares them: newer releases encode structs as maps with a
# ``type`` tag, older ones as arrays with the tag first. Field order matters for the latter.
class MapStored(msgspec.Struct, tag="BlockStored", omit_defaults=True):
    block_hashes: list[Any]
    parent_block_hash: Any
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[Any] | None = None


class MapRemoved(msgspec.Struct, tag="BlockRemoved", omit_defaults=True):
    block_hashes: list[Any]
    medium: str | None


class MapCleared(msgspec.Struct, tag="AllBlocksCleared"):
    pass


class MapBatch(msgspec.Struct, omit_defaults=True):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


class ArrStored(msgspec.Struct, tag="BlockStored", array_like=True):
    block_hashes: list[Any]
    parent_block_hash: Any
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None


class ArrRemoved(msgspec.Struct, tag="BlockRemoved", array_like=True):
    block_hashes: list[Any]
    medium: str | None


class ArrBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[Any]


def stored(style: str, hashes: list[Any], parent: Any, tokens: list[int], **kw: Any) -> Any:
    cls = MapStored if style == "map" else ArrStored
    kw.setdefault("medium", "GPU")
    if style == "map":
        kw.setdefault("lora_name", None)
    else:
        kw.pop("lora_name", None)
        kw.pop("extra_keys", None)
    return cls(hashes, parent, tokens, kw.pop("block_size", BS), None, **kw)


def removed(style: str, hashes: list[Any]) -> Any:
    return (MapRemoved if style == "map" else ArrRemoved)(hashes, "GPU")


def payload(style: str, *events: Any) -> bytes:
    batch = MapBatch(1.0, list(events), 0) if style == "map" else ArrBatch(1.0, list(events))
    return msgspec.msgpack.encode(batch)


def run_map(data: bytes, m: VllmBlockMap | None = None) -> tuple[VllmBlockMap, list[KvUpdate]]:
    m = m or VllmBlockMap(BS, max_entries=1000)
    return m, list(m.updates(decode_batch(data)))


@pytest.mark.parametrize("style", ["map", "array"])
def test_a_chain_stored_in_two_batches_gets_the_gateways_hashes(style: str) -> None:
    # vLLM's own hashes (bytes in newer releases) never equal ours; the token ids do.
    first = payload(style, stored(style, [b"v1", b"v2"], None, TOKENS[: 2 * BS]))
    m, ups = run_map(first)
    second = payload(style, stored(style, [b"v3"], b"v2", TOKENS[2 * BS :]))
    _, ups2 = run_map(second, m)
    got = [h for u in ups + ups2 for h in u.stored]
    assert got == hash_prompt_blocks(TOKENS, BS)  # what the gateway hashes for this prompt
    _, gone = run_map(payload(style, removed(style, [b"v3", b"unknown"])), m)
    assert gone == [KvUpdate(evicted=(got[2],))]
    assert list(m.ours) == [b"v1", b"v2"]


def test_lora_blocks_chain_from_the_adapters_root() -> None:
    data = payload("map", stored("map", [1, 2], None, TOKENS[: 2 * BS], lora_name="sql"))
    _, ups = run_map(data)
    assert list(ups[0].stored) == hash_prompt_blocks(TOKENS[: 2 * BS], BS, lora_name="sql")
    assert list(ups[0].stored) != hash_prompt_blocks(TOKENS[: 2 * BS], BS)


def test_blocks_that_cannot_be_rechained_are_not_indexed(caplog: pytest.LogCaptureFixture) -> None:
    m = VllmBlockMap(BS, max_entries=1000)
    # A parent never seen (stored before the gateway subscribed): nothing indexed ...
    _, ups = run_map(payload("map", stored("map", [7], 99, TOKENS[:BS])), m)
    assert ups == [] and m.skipped == 1
    # ... nor are its children, nor multimodal / salted blocks (extra keys), nor other tiers.
    _, ups = run_map(payload("map", stored("map", [8], 7, TOKENS[BS : 2 * BS])), m)
    extra = stored("map", [9, 10], None, TOKENS[: 2 * BS], extra_keys=[None, ("img",)])
    _, ups2 = run_map(payload("map", extra), m)
    cpu = stored("map", [11], None, TOKENS[:BS], medium="CPU")
    _, ups3 = run_map(payload("map", cpu), m)
    assert ups == [] and ups3 == []
    assert ups2 == [KvUpdate(stored=(hash_prompt_blocks(TOKENS[:BS], BS)[0],))]
    # A replica whose blocks are another size: said once, nothing indexed.
    with caplog.at_level(logging.WARNING, logger="shipit.gateway.kv_feed"):
        for _ in range(2):
            run_map(payload("map", stored("map", [12], None, TOKENS[:32], block_size=32)), m)
    assert [r.message for r in caplog.records].count(
        "kv events: the replica's KV blocks are 32 tokens and "
        "routing.prefix_cache.block_size_tokens is 16: its events cannot match the gateway's "
        "hashes; set block_size_tokens to the replica's"
    ) == 1


def test_cleared_resets_and_the_map_is_bounded() -> None:
    m = VllmBlockMap(BS, max_entries=2)
    _, ups = run_map(payload("map", stored("map", [1, 2, 3], None, TOKENS)), m)
    assert len(ups[0].stored) == 3 and list(m.ours) == [2, 3]  # the oldest mapping out
    _, ups = run_map(payload("map", MapCleared()), m)
    assert ups == [KvUpdate(reset=True)] and not m.ours


def test_a_payload_that_is_not_a_batch_says_so() -> None:
    with pytest.raises(FeedFormatError, match="not msgpack"):
        decode_batch(b"\xc1")
    with pytest.raises(FeedFormatError, match="not a KV-event batch"):
        decode_batch(msgspec.msgpack.encode({"ts": 1.0}))


class Publisher:
    """A vLLM-style publisher: PUB frames (topic, 8-byte big-endian sequence, msgpack) and a
    ROUTER that answers (empty, start sequence) with every buffered batch from there, then
    sequence -1 and an empty payload."""

    def __init__(self, ctx: zmq.asyncio.Context, topic: bytes = b"kv") -> None:
        self.pub = ctx.socket(zmq.PUB)
        self.port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.router = ctx.socket(zmq.ROUTER)
        self.replay_port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.topic = topic
        self.buffer: list[tuple[int, bytes]] = []
        self.replays = 0

    async def publish(self, seq: int, data: bytes, *, send: bool = True) -> None:
        self.buffer.append((seq, data))
        if send:
            await self.pub.send_multipart([self.topic, seq.to_bytes(8, "big"), data])

    async def serve_replay(self) -> None:
        while True:
            ident, _, start = await self.router.recv_multipart()
            self.replays += 1
            for seq, data in self.buffer:
                if seq >= int.from_bytes(start, "big"):
                    await self.router.send_multipart([ident, b"", seq.to_bytes(8, "big"), data])
            end = (-1).to_bytes(8, "big", signed=True)
            await self.router.send_multipart([ident, b"", end, b""])

    def close(self) -> None:
        self.pub.close(linger=0)
        self.router.close(linger=0)


async def until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


def test_a_feed_over_zeromq_replays_what_it_missed() -> None:
    updates: list[KvUpdate] = []
    block = hash_prompt_blocks(TOKENS, BS)

    async def go() -> None:
        ctx = zmq.asyncio.Context()
        pub = Publisher(ctx)
        replay = asyncio.create_task(pub.serve_replay())
        feed = ZmqKvFeed(
            "r0",
            endpoint=f"tcp://127.0.0.1:{pub.port}",
            replay_endpoint=f"tcp://127.0.0.1:{pub.replay_port}",
            topic="kv",
            apply=updates.append,
            block_size=BS,
            max_entries=100,
            context=ctx,
        )
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.sleep(0.2)  # the subscription reaches the publisher
            await pub.publish(0, payload("map", stored("map", [1], None, TOKENS[:BS])))
            # Batch 1 never reaches the subscriber (a dropped message): the feed sees 2 next.
            await pub.publish(1, payload("map", stored("map", [2], 1, TOKENS[BS:32])), send=False)
            await pub.publish(2, payload("map", stored("map", [3], 2, TOKENS[32:48])))
            await until(lambda: feed.batches == 3)
            assert (feed.gaps, pub.replays) == (1, 1)
            assert [u.stored for u in updates] == [(block[0],), (block[1],), (block[2],)]
            # The publisher restarts (numbers start again): the replica's index starts over.
            await pub.publish(0, payload("map", removed("map", [3])))
            await until(lambda: feed.batches == 4)
            assert updates[3:] == [KvUpdate(reset=True)]  # its mapping went with the reset
        finally:
            task.cancel()
            replay.cancel()
            await asyncio.gather(task, replay, return_exceptions=True)
            pub.close()
            ctx.term()

    asyncio.run(go())


def test_without_a_replay_endpoint_a_gap_rebuilds_the_index() -> None:
    updates: list[KvUpdate] = []
    feed = ZmqKvFeed(
        "r0", endpoint="tcp://127.0.0.1:1", apply=updates.append, block_size=BS, max_entries=100
    )
    data = payload("array", stored("array", [1], None, TOKENS[:BS]))
    asyncio.run(feed.receive(5, data))  # joined late: batches 0-4 were never seen
    assert updates == [KvUpdate(reset=True), KvUpdate(stored=(hash_prompt_blocks(TOKENS, BS)[0],))]
    assert feed.next_seq == 6


def test_the_monitor_subscribes_to_ready_vllm_replicas_and_stops_with_them() -> None:
    async def go() -> None:
        ctx = zmq.asyncio.Context.instance()
        pub = Publisher(ctx, topic=b"")
        d = parse_config(
            {
                "deployments": [
                    {
                        "replicas": 0,
                        "routing": {
                            "policy": "prefix_cache",
                            "prefix_cache": {
                                "source": "kv_events",
                                "kv_events_feed": "zmq",
                                "kv_events_endpoint": f"tcp://{{host}}:{pub.port}",
                            },
                        },
                    }
                ]
            }
        ).deployments[0]
        router = RouterService(d, clock=FakeClock())
        router.add_replica("a", "http://127.0.0.1:8100", state=ReplicaState.READY)
        monitor = ReplicaMonitor(router, FakeUpstream({"http://127.0.0.1:8100": FakeReplica()}))
        try:
            await monitor.tick()
            feed, task = monitor.feeds["a"]
            assert feed.endpoint == f"tcp://127.0.0.1:{pub.port}"
            await asyncio.sleep(0.2)
            await pub.publish(0, payload("map", stored("map", [1, 2], None, TOKENS[:32])))
            index = router.policy("prefix_cache").index
            hashes = hash_prompt_blocks(TOKENS, BS)
            await until(lambda: index.match_blocks("a", hashes) == 2)
            await monitor.tick()
            assert monitor.feeds["a"][1] is task  # one subscriber per replica
            router.remove_replica("a")
            await monitor.tick()
            await asyncio.sleep(0)
            assert "a" not in monitor.feeds and task.cancelled()
        finally:
            await monitor.stop_feeds()
            pub.close()

    asyncio.run(go())


def test_an_endpoint_that_is_not_zeromq_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'http://x:5557' is not a ZeroMQ address"):
        parse_config(
            {
                "deployments": [
                    {
                        "routing": {
                            "policy": "prefix_cache",
                            "prefix_cache": {"kv_events_endpoint": "http://x:5557"},
                        }
                    }
                ]
            }
        )
