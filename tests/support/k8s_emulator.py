"""A small, stateful Kubernetes API emulator on aiohttp (127.0.0.1), for tests of the
Kubernetes replica backend through the real client library over HTTP.

It keeps pods, nodes and events in memory with one global resourceVersion counter, and serves
create / get / list (label selectors; field selectors of equality on dotted paths, e.g.
``involvedObject.name=x``) / watch (from a resourceVersion, events in order) / patch (JSON merge)
/ replace / delete. Every request is recorded as the RBAC verb and resource it needs
(``verbs``), so a test can compare them with the gateway's Role. Writes that carry a stale
``metadata.resourceVersion`` get 409 Conflict; a watch from a resourceVersion older than the
last ``compact()`` gets a 410 Gone ``ERROR`` event, as a real API server does. ``outage()``
makes it unreachable (every open connection is dropped and new requests are cut off) until
``restore()``.

It also plays the scheduler, the kubelet and the node lifecycle controller, on command, on
its own clock (``advance``; timestamps start at 2026-01-01T00:00:00Z): ``schedule`` (condition
PodScheduled and a ``Scheduled`` Event), ``pull_image`` (``Pulling``/``Pulled``),
``start_container`` (``Created``/``Started``, the container running), ``make_ready`` (or
``run_to_ready`` for all of them), ``kill`` (container terminated, e.g. OOMKilled, or a crash
with an XID-like message), ``evict`` (the kubelet's node-pressure eviction), ``lose_node`` (the
node goes NotReady with the unreachable taint, its pods' Ready condition turns False, as the
node lifecycle controller does), ``taint_evict`` (the taint manager's DisruptionTarget and
deletionTimestamp) and ``delete_pod``.
With ``autopilot=True`` every new pod is scheduled onto a schedulable node and made ready at
once. This is an emulator, not an API server: only what the backend uses is here.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
KINDS = {"pods": "Pod", "nodes": "Node", "events": "Event"}
NAMESPACED = {"pods", "events"}


@dataclass
class _Watch:
    plural: str
    namespace: str | None
    selector: dict[str, str | None]
    queue: asyncio.Queue[tuple[str, Obj] | None] = field(default_factory=asyncio.Queue)


def parse_selector(text: str | None) -> dict[str, str | None]:
    """``a=b,c`` -> {a: b, c: None} (equality and existence only)."""
    out: dict[str, str | None] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "==" in part:
            k, v = part.split("==", 1)
            out[k.strip()] = v.strip()
        elif "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
        else:
            out[part] = None
    return out


def field_matches(obj: Obj, selector: str | None) -> bool:
    """``a.b=x,c=y``: equality on dotted paths (what the backend asks of Events)."""
    for part in (selector or "").split(","):
        if not part.strip():
            continue
        path, want = part.split("==", 1) if "==" in part else part.split("=", 1)
        value: Any = obj
        for key in path.strip().split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if str(value) != want.strip():
            return False
    return True


def matches(obj: Obj, selector: dict[str, str | None]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(k in labels and (v is None or labels[k] == v) for k, v in selector.items())


def merge(target: Obj, patch: Obj) -> Obj:
    """RFC 7386 JSON merge patch."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target


class K8sEmulator:
    def __init__(self, *, autopilot: bool = False) -> None:
        self.autopilot = autopilot
        self.objects: dict[tuple[str, str | None, str], Obj] = {}
        self.rv = 100
        self.min_rv = 0  # watches from below this get 410 Gone
        self.log: list[tuple[int, str, str, Obj]] = []  # (rv, plural, type, object)
        self.watches: list[_Watch] = []
        self.down = False
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request served
        self.verbs: set[tuple[str, str]] = set()  # (resource, RBAC verb) of every request
        self.now_s = 0.0  # the cluster's clock, seconds after EPOCH
        self.on_get: dict[tuple[str, str], int] = {}  # interfere: modify after N gets
        self.uid = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    # ----- server ---------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        for plural in KINDS:
            base = "/api/v1/namespaces/{ns}/" if plural in NAMESPACED else "/api/v1/"
            app.router.add_route("GET", base + plural, self._list)
            app.router.add_route("POST", base + plural, self._create)
            app.router.add_route("GET", base + plural + "/{name}", self._get)
            app.router.add_route("PATCH", base + plural + "/{name}", self._patch)
            app.router.add_route("PUT", base + plural + "/{name}", self._replace)
            app.router.add_route("DELETE", base + plural + "/{name}", self._delete)
        # A client that goes away cancels its watch; shutdown does not wait on open watches.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        for w in self.watches:
            w.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, namespace: str = "default") -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
            "users": [{"name": "emu", "user": {}}],
            "contexts": [
                {
                    "name": "emu",
                    "context": {"cluster": "emu", "user": "emu", "namespace": namespace},
                }
            ],
            "current-context": "emu",
        }

    def outage(self) -> None:
        """Unreachable: open watches are cut, new requests are dropped without a response."""
        self.down = True
        for w in self.watches:
            w.queue.put_nowait(None)

    def restore(self) -> None:
        self.down = False

    def advance(self, seconds: float) -> None:
        """Time passes in the cluster (timestamps on conditions and Events)."""
        self.now_s += seconds

    def stamp(self, *, micro: bool = False) -> str:
        """Now, as the API server writes it: seconds (``Time``) or microseconds (``MicroTime``)."""
        at = EPOCH + dt.timedelta(seconds=self.now_s)
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")

    def compact(self) -> None:
        """Forget history: a watch from any resourceVersion up to now gets 410 Gone."""
        self.min_rv = self.rv  # a list now returns this version, from which a watch is fine
        self.log.clear()

    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if self.down:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable()
        self.requests.append((request.method, request.path_qs))
        self.verbs.add((self._plural(request), _verb(request)))
        resp: web.StreamResponse = await handler(request)
        return resp

    # ----- storage ----------------------------------------------------------------------------
    def _key(self, plural: str, ns: str | None, name: str) -> tuple[str, str | None, str]:
        return (plural, ns if plural in NAMESPACED else None, name)

    def _emit(self, plural: str, kind: str, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        snap = copy.deepcopy(obj)
        self.log.append((self.rv, plural, kind, snap))
        ns = obj["metadata"].get("namespace")
        for w in self.watches:
            if w.plural == plural and (w.namespace in (None, ns)) and matches(snap, w.selector):
                w.queue.put_nowait((kind, snap))

    def put(self, plural: str, obj: Obj) -> Obj:
        """Create (or overwrite) an object directly, as another controller would."""
        meta = obj.setdefault("metadata", {})
        if plural in NAMESPACED:
            meta.setdefault("namespace", "default")
        self.uid += 1
        meta.setdefault("uid", f"uid-{self.uid}")
        meta.setdefault("labels", {})
        meta.setdefault("creationTimestamp", self.stamp())
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", KINDS[plural])
        key = self._key(plural, meta.get("namespace"), meta["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        self._emit(plural, kind, obj)
        return obj

    def update(self, plural: str, ns: str | None, name: str, fn: Callable[[Obj], None]) -> Obj:
        obj = self.objects[self._key(plural, ns, name)]
        fn(obj)
        self._emit(plural, "MODIFIED", obj)
        return obj

    def remove(self, plural: str, ns: str | None, name: str) -> Obj | None:
        obj = self.objects.pop(self._key(plural, ns, name), None)
        if obj is not None:
            self._emit(plural, "DELETED", obj)
        return obj

    def items(
        self,
        plural: str,
        ns: str | None = None,
        selector: str | None = None,
        fields: str | None = None,
    ) -> list[Obj]:
        sel = parse_selector(selector)
        return [
            o
            for (p, n, _), o in sorted(self.objects.items(), key=lambda kv: kv[0][2])
            if p == plural
            and (ns is None or n in (None, ns))
            and matches(o, sel)
            and field_matches(o, fields)
        ]

    def pod(self, name: str, ns: str = "default") -> Obj:
        return self.objects[("pods", ns, name)]

    def pods(self, ns: str = "default") -> list[Obj]:
        return self.items("pods", ns)

    def events(self, reason: str | None = None) -> list[Obj]:
        return [e for e in self.items("events") if reason is None or e.get("reason") == reason]

    def record(self, pod: str, reason: str, message: str, ns: str = "default") -> Obj:
        """An Event on a pod, as the scheduler or the kubelet writes it."""
        self.uid += 1
        component = "default-scheduler" if reason == "Scheduled" else "kubelet"
        involved: Obj = {"kind": "Pod", "name": pod, "namespace": ns, "apiVersion": "v1"}
        if reason != "Scheduled":
            involved["fieldPath"] = "spec.containers{replica}"
        return self.put(
            "events",
            {
                "metadata": {"name": f"{pod}.{self.uid:x}", "namespace": ns},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "type": "Normal",
                "source": {"component": component},
                "firstTimestamp": self.stamp(),
                "lastTimestamp": self.stamp(),
                "count": 1,
            },
        )

    # ----- HTTP handlers ----------------------------------------------------------------------
    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
        body |= {"code": code, "reason": reason, "message": message, "metadata": {}}
        return _json(body, status=code)

    def _plural(self, request: web.Request) -> str:
        return request.path.rstrip("/").split("/")[-1 if "name" not in request.match_info else -2]

    async def _list(self, request: web.Request) -> web.StreamResponse:
        plural = self._plural(request)
        ns = request.match_info.get("ns")
        selector = request.query.get("labelSelector")
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, plural, ns, selector)
        items = self.items(plural, ns, selector, request.query.get("fieldSelector"))
        body = {
            "kind": KINDS[plural] + "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }
        return _json(body)

    async def _watch(
        self, request: web.Request, plural: str, ns: str | None, selector: str | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        since = request.query.get("resourceVersion")
        w = _Watch(plural, ns, parse_selector(selector))

        async def send(kind: str, obj: Obj) -> None:
            line = json.dumps({"type": kind, "object": obj}) + "\n"
            await resp.write(line.encode())

        if since and int(since) < self.min_rv:
            gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410}
            gone |= {"reason": "Expired", "message": f"too old resource version: {since}"}
            await send("ERROR", gone)
            return resp
        if since:
            backlog = [
                (k, o)
                for rv, p, k, o in self.log
                if rv > int(since) and p == plural and matches(o, w.selector)
            ]
        else:
            backlog = [("ADDED", copy.deepcopy(o)) for o in self.items(plural, ns, selector)]
        self.watches.append(w)
        try:
            for kind, obj in backlog:
                await send(kind, obj)
            while True:
                item = await w.queue.get()
                if item is None or self.down:
                    break
                await send(*item)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(w)
        if self.down and request.transport is not None:
            request.transport.close()  # cut, not a clean end: the client sees a broken stream
        return resp

    def _lookup(self, request: web.Request) -> tuple[str, str | None, str]:
        return self._key(
            self._plural(request), request.match_info.get("ns"), request.match_info["name"]
        )

    async def _get(self, request: web.Request) -> web.Response:
        key = self._lookup(request)
        obj = self.objects.get(key)
        if obj is None:
            return self._status(404, "NotFound", f"{key[0]} {key[2]!r} not found")
        body = copy.deepcopy(obj)
        left = self.on_get.get((key[0], key[2]))
        if (
            left
        ):  # another writer changes it right after this read: the reader's next write is stale
            self.on_get[(key[0], key[2])] = left - 1
            self.update(key[0], key[1], key[2], _annotate_interference)
        return _json(body)

    async def _create(self, request: web.Request) -> web.Response:
        plural = self._plural(request)
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        if "generateName" in meta and "name" not in meta:
            self.uid += 1
            meta["name"] = f"{meta['generateName']}{self.uid:05x}"
        if plural in NAMESPACED:
            meta["namespace"] = request.match_info["ns"]
        if self._key(plural, meta.get("namespace"), meta["name"]) in self.objects:
            return self._status(409, "AlreadyExists", f"{plural} {meta['name']!r} already exists")
        meta.pop("resourceVersion", None)
        if plural == "pods":
            obj.setdefault("status", {"phase": "Pending"})
        self.put(plural, obj)
        if plural == "pods" and self.autopilot:
            asyncio.get_running_loop().call_soon(self._autopilot, meta["namespace"], meta["name"])
        return _json(copy.deepcopy(obj), status=201)

    def _stale(self, current: Obj, incoming: Obj) -> bool:
        want = (incoming.get("metadata") or {}).get("resourceVersion")
        return want is not None and want != current["metadata"]["resourceVersion"]

    async def _patch(self, request: web.Request) -> web.Response:
        key = self._lookup(request)
        obj = self.objects.get(key)
        if obj is None:
            return self._status(404, "NotFound", f"{key[0]} {key[2]!r} not found")
        patch = await request.json()
        if self._stale(obj, patch):
            return self._status(409, "Conflict", "the object has been modified; re-read it")
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        merge(obj, patch)
        self._emit(key[0], "MODIFIED", obj)
        return _json(copy.deepcopy(obj))

    async def _replace(self, request: web.Request) -> web.Response:
        key = self._lookup(request)
        obj = self.objects.get(key)
        if obj is None:
            return self._status(404, "NotFound", f"{key[0]} {key[2]!r} not found")
        new = await request.json()
        if self._stale(obj, new):
            return self._status(409, "Conflict", "the object has been modified; re-read it")
        self.objects[key] = new
        self._emit(key[0], "MODIFIED", new)
        return _json(copy.deepcopy(new))

    async def _delete(self, request: web.Request) -> web.Response:
        key = self._lookup(request)
        obj = self.remove(*key)
        if obj is None:
            return self._status(404, "NotFound", f"{key[0]} {key[2]!r} not found")
        return _json(copy.deepcopy(obj))

    # ----- scheduler and kubelet --------------------------------------------------------------
    def add_node(self, name: str, labels: dict[str, str] | None = None, gpus: int = 8) -> Obj:
        return self.put(
            "nodes",
            {
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {},
                "status": {
                    "capacity": {"nvidia.com/gpu": str(gpus)},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
        )

    def node(self, name: str) -> Obj:
        return self.objects[("nodes", None, name)]

    def _fits(self, node: Obj, pod: Obj) -> bool:
        if node.get("spec", {}).get("unschedulable"):
            return False
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        if not ready or ready[0]["status"] != "True":
            return False
        sel = pod.get("spec", {}).get("nodeSelector") or {}
        labels = node["metadata"].get("labels") or {}
        return all(labels.get(k) == v for k, v in sel.items())

    def schedule(self, pod: str, node: str | None = None, ns: str = "default") -> str | None:
        """Bind the pod to ``node`` (or the schedulable node with the fewest pods)."""
        p = self.pod(pod, ns)
        if node is None:
            fits = [n for n in self.items("nodes") if self._fits(n, p)]
            if not fits:
                return None
            load = {n["metadata"]["name"]: 0 for n in fits}
            for other in self.pods(ns):
                on = other.get("spec", {}).get("nodeName")
                if on in load and other.get("status", {}).get("phase") in ("Pending", "Running"):
                    load[on] += 1
            node = min(load, key=lambda n: (load[n], n))

        def bind(o: Obj) -> None:
            o["spec"]["nodeName"] = node
            st = o.setdefault("status", {})
            st["phase"] = "Pending"
            st["conditions"] = [self._cond("PodScheduled", "True")]
            st["containerStatuses"] = [_container(waiting="ContainerCreating")]

        self.update("pods", ns, pod, bind)
        self.record(pod, "Scheduled", f"Successfully assigned {ns}/{pod} to {node}", ns)
        return node

    def _cond(self, kind: str, status: str, reason: str | None = None) -> Obj:
        c: Obj = {"type": kind, "status": status, "lastTransitionTime": self.stamp()}
        if reason is not None:
            c["reason"] = reason
        return c

    def _set_cond(self, o: Obj, kind: str, status: str, reason: str | None = None) -> None:
        conds = o.setdefault("status", {}).setdefault("conditions", [])
        for c in conds:
            if c["type"] == kind:
                if c["status"] != status:
                    c.update(self._cond(kind, status, reason))
                return
        conds.append(self._cond(kind, status, reason))

    def pull_image(self, pod: str, ns: str = "default") -> None:
        image = self.pod(pod, ns)["spec"]["containers"][0].get("image", "")
        self.record(pod, "Pulling", f'Pulling image "{image}"', ns)
        self.record(pod, "Pulled", f'Successfully pulled image "{image}"', ns)

    def start_container(self, pod: str, ns: str = "default") -> None:
        """The container is created and started (its image pulled first, if it was not)."""
        pulled = [e for e in self.events("Pulled") if e["involvedObject"]["name"] == pod]
        if not pulled:
            self.pull_image(pod, ns)

        def run(o: Obj) -> None:
            st = o["status"]
            st["phase"] = "Running"
            st["podIP"] = f"10.0.0.{self.uid % 250 + 1}"
            for kind, status in (
                ("Initialized", "True"),
                ("ContainersReady", "False"),
                ("Ready", "False"),
            ):
                self._set_cond(o, kind, status)
            st["containerStatuses"] = [_container(running=self.stamp())]

        self.record(pod, "Created", "Created container replica", ns)
        self.update("pods", ns, pod, run)
        self.record(pod, "Started", "Started container replica", ns)

    def make_ready(self, pod: str, ns: str = "default") -> None:
        def ready(o: Obj) -> None:
            for kind in ("ContainersReady", "Ready"):
                self._set_cond(o, kind, "True")
            started = o["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            o["status"]["containerStatuses"] = [_container(running=started, ready=True)]

        self.update("pods", ns, pod, ready)

    def run_to_ready(self, pod: str, node: str | None = None, ns: str = "default") -> str | None:
        bound = self.schedule(pod, node, ns)
        if bound is not None:
            self.start_container(pod, ns)
            self.make_ready(pod, ns)
        return bound

    def _autopilot(self, ns: str, name: str) -> None:
        if ("pods", ns, name) in self.objects:
            self.run_to_ready(name, ns=ns)

    def kill(
        self, pod: str, reason: str = "OOMKilled", message: str = "", ns: str = "default"
    ) -> None:
        """The container is terminated (OOMKilled, Error ...); restartPolicy Never: it fails."""

        def die(o: Obj) -> None:
            st = o["status"]
            st["phase"] = "Failed"
            for kind in ("Ready", "ContainersReady"):
                self._set_cond(o, kind, "False", "PodFailed")
            st["containerStatuses"] = [
                _container(terminated={"reason": reason, "exitCode": 137, "message": message})
            ]

        self.update("pods", ns, pod, die)

    def evict(self, pod: str, ns: str = "default") -> None:
        """The kubelet's node-pressure eviction: the pod fails with reason Evicted."""

        def out(o: Obj) -> None:
            o["status"]["phase"] = "Failed"
            o["status"]["reason"] = "Evicted"
            o["status"]["message"] = "The node was low on resource: memory."
            self._set_cond(o, "DisruptionTarget", "True", "TerminationByKubelet")

        self.update("pods", ns, pod, out)

    def fail_readiness(self, pod: str, ns: str = "default") -> None:
        """The readiness probe fails (e.g. the replica drains): Ready False, nothing else."""

        def unready(o: Obj) -> None:
            for kind in ("ContainersReady", "Ready"):
                self._set_cond(o, kind, "False")

        self.update("pods", ns, pod, unready)

    def lose_node(self, node: str) -> None:
        """The node stops reporting, as the node lifecycle controller sees it: Ready Unknown,
        the unreachable taint, and the Ready condition of each of its pods set to False (the
        pods themselves say nothing else until the taint manager evicts them)."""

        def lost(o: Obj) -> None:
            o["status"]["conditions"] = [self._cond("Ready", "Unknown", "NodeStatusUnknown")]
            o["spec"]["taints"] = [
                {"key": "node.kubernetes.io/unreachable", "effect": effect}
                for effect in ("NoSchedule", "NoExecute")
            ]

        self.update("nodes", None, node, lost)
        for p in self.items("pods"):
            if p.get("spec", {}).get("nodeName") == node:

                def unready(o: Obj) -> None:
                    self._set_cond(o, "Ready", "False")

                self.update("pods", p["metadata"]["namespace"], p["metadata"]["name"], unready)

    def taint_evict(
        self, pod: str, reason: str = "DeletionByTaintManager", ns: str = "default"
    ) -> None:
        """A controller deletes the pod (DisruptionTarget, then a deletionTimestamp); a pod
        on a lost node stays terminating, since no kubelet confirms it."""

        def mark(o: Obj) -> None:
            self._set_cond(o, "DisruptionTarget", "True", reason)
            o["metadata"]["deletionTimestamp"] = self.stamp()

        self.update("pods", ns, pod, mark)

    def delete_pod(self, pod: str, ns: str = "default") -> None:
        self.remove("pods", ns, pod)


EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _verb(request: web.Request) -> str:
    """The RBAC verb a request needs."""
    named = "name" in request.match_info
    if request.method == "GET":
        if named:
            return "get"
        return "watch" if request.query.get("watch") in ("true", "1") else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[request.method]


def _json(body: Obj, status: int = 200) -> web.Response:
    # Exactly ``application/json``, as the API server sends it (clients compare the header).
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


def _annotate_interference(o: Obj) -> None:
    o["metadata"].setdefault("annotations", {})["emulator/touched"] = str(
        o["metadata"]["resourceVersion"]
    )


def _container(
    *,
    waiting: str | None = None,
    running: str | None = None,  # startedAt
    ready: bool = False,
    terminated: Obj | None = None,
) -> Obj:
    state: Obj = {}
    if waiting:
        state["waiting"] = {"reason": waiting}
    if running:
        state["running"] = {"startedAt": running}
    if terminated:
        state["terminated"] = terminated
    return {
        "name": "replica",
        "image": "shipit",
        "imageID": "" if waiting else "shipit@sha256:0",
        "ready": ready,
        "restartCount": 0,
        "started": running is not None,
        "state": state,
    }
