"""What a request path of callbacks could give, with the gateway's own work in it: a bound.

``gateway_floor_raw.py`` is a proxy of callbacks only, with none of a gateway's duties; the
gateway itself goes through uvicorn, ASGI, a task and the request core's async generators. This
one sits between: the floor's callbacks (httptools and uvloop, the request written upstream in
the callback where its last byte is parsed, the answer relayed in the callback where it is read)
running the gateway's *real* work for a request, from a real ``create_gateway`` object:

- the edge: the request's headers as a dict, ``Security.authenticate`` and ``Security.prepare``
  (the JSON parse, its limits, the model and the tenant's checks);
- a request id and ``parse_request`` (the request's view: model, fields, prompt, prefix hashes);
- ``RouterService.on_request`` and ``place_now`` (admission, the routing policy, the slot, the
  pace book), the decision's metrics, and the upstream request with its ``x-request-id``;
- the answer's head as the gateway writes it (its ``x-shipit-*`` headers, chunked), each read
  framed and written, then tallied (``accounting.Tally``), the router told of the first token,
  and at the end the slot released, the answer finished (metrics) and the request counted.

Left out, so the figure is a bound and not a gateway: the header timeout and size guards, a
request that must wait for a slot (answered 503 here), retries, cold starts, adapters, a client
that leaves, flow control, errors of any kind, the access log and the rollout's offer. Run it
paired: ``benchmarks/gateway_ttft_ab.py --a callback-path --b vllm-router=PATH`` (or ``--b
this``, or ``--b raw-floor``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import gateway_floor  # starts a floor proxy

APP = r"""
import asyncio, gc, os, sys
import httptools, uvloop
from shipit.config.gateway import parse_config
from shipit.core.fleet import ReplicaState
from shipit.gateway.accounting import Tally
from shipit.gateway.app import create_gateway
from shipit.gateway.parse import parse_request

URLS = os.environ["FLOOR_FAKES"].split(",")
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
cfg = parse_config({"deployments": [{"model": "m", "replicas": 0,
                    "queueing": {"max_concurrency": 512, "max_queue": 4096}}]})
gw = create_gateway(cfg, monitor=False)
router = gw.routers["default"]
for i, url in enumerate(URLS):
    router.add_replica(f"r{i}", url, state=ReplicaState.READY)
sec, metrics, clock = gw.security, gw.metrics, gw.clock
dep = gw.deployments["default"]
per_request = metrics.per_request("default")


class Upstream(asyncio.Protocol):
    # One kept-alive connection to a replica; relays the answer of the request it serves.
    def __init__(self, pool):
        self.pool, self.transport = pool, None
        self.parser = httptools.HttpResponseParser(self)
        self.client = self.lease = self.view = self.tally = None
        self.body, self.out, self.done, self.told = [], [], False, False

    def connection_made(self, transport):
        self.transport = transport

    def serve(self, client, view, lease, request):
        self.client, self.view, self.lease = client, view, lease
        self.tally = Tally(arrived_s=view.arrived_s, stream=view.stream)
        self.told = False
        self.transport.write(request)

    def on_headers_complete(self):
        d, view = self.lease.decision, self.view
        self.out.append((
            b"HTTP/1.1 %d OK\r\ncontent-type: text/event-stream\r\nx-shipit-replica: %s\r\n"
            b"x-shipit-route: %s/%s\r\nx-shipit-request-id: %s\r\n"
            b"transfer-encoding: chunked\r\n\r\n") % (
            self.parser.get_status_code(), self.lease.replica_id.encode(), d.policy.encode(),
            d.reason_code.encode(), view.forward_id.encode()))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        self.done = True

    def data_received(self, data):
        # What one read parsed leaves in one write, as the gateway's coalesced writes do: the
        # head when it is in this read, the body framed as one chunk, the end when it came.
        self.parser.feed_data(data)
        out, chunk = self.out, None
        if self.body:
            chunk = b"".join(self.body)
            self.body.clear()
            out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        if self.done:
            out.append(b"0\r\n\r\n")
        if out:
            self.client.write(b"".join(out))
            out.clear()
        if chunk is not None:
            self.account(chunk)
        if self.done:
            self.finish()

    def account(self, chunk):
        at = clock.now()
        self.tally.chunk(chunk, at)
        if not self.told and self.tally.ttft_s is not None:
            self.told = True
            router.first_token(self.lease, at)

    def finish(self):
        self.client = None
        self.done = False
        lease, tally, view = self.lease, self.tally, self.view
        router.release(lease, outcome="ok")
        tally.finish(per_request, now_s=clock.now(), status=200, chat=True, slo=dep.slo)
        router.answered(lease, ttft_s=tally.ttft_s, tpot_s=tally.tpot_s, slo_met=tally.slo_met)
        metrics.request_done(view.deployment, 200, lease.decision.policy)
        self.pool.append(self)


class Client(asyncio.Protocol):
    def __init__(self, pools):
        self.pools = pools
        self.parser = httptools.HttpRequestParser(self)
        self.transport, self.url, self.headers, self.body = None, b"", [], []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        if self.parser.get_method() != b"POST":
            self.transport.write(OK)
            return
        body, raw, path = b"".join(self.body), self.headers, self.url.decode("ascii")
        # The edge.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        scope = {"type": "http", "method": "POST", "path": path, "headers": raw}
        principal = sec.authenticate(scope, headers)
        prepared = sec.prepare(principal, raw, headers, body)
        # The handler.
        view = parse_request(
            request_id=gw.new_request_id(),
            client_request_id=headers.get("x-request-id") or None,
            path=path, headers=prepared.header_dict, body=prepared.body, data=prepared.data,
            deployments=gw.deployments, adapters=gw.catalog.lazy_replica_adapters(),
            now_s=clock.now(), names_known=gw.catalog.names_known,
            tokenizers=gw.prompt_tokenizers)
        router.on_request(view.prompt_tokens_estimate)
        # The request core's first step.
        lease = router.place_now(view)
        if lease is None:
            self.transport.write(BUSY)
            return
        d = lease.decision
        metrics.decision(view.deployment, d.policy, d.reason_code)
        request = (b"POST %s HTTP/1.1\r\nhost: replica\r\ncontent-type: application/json\r\n"
                   b"x-request-id: %s\r\ncontent-length: %d\r\n\r\n%b") % (
            self.url, view.forward_id.encode(), len(prepared.body), prepared.body)
        self.pools[lease.url].pop().serve(self.transport, view, lease, request)


async def main():
    loop = asyncio.get_running_loop()
    pools = {}
    for url in URLS:
        host, port = url.removeprefix("http://").split(":")
        pool = pools[url] = []
        for _ in range(256):
            _, up = await loop.create_connection(lambda: Upstream(pool), host, int(port))
            pool.append(up)
    gc.collect()
    gc.freeze()  # as shipit up does
    server = await loop.create_server(lambda: Client(pools), "127.0.0.1", int(sys.argv[1]),
                                      backlog=2048)
    await server.serve_forever()

uvloop.run(main())
"""


def start_callback_path(urls: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """The callback path in front of ``urls``, pinned to CPU 0, once it answers."""
    return gateway_floor.start_floor(urls, APP)
