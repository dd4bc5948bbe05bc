"""What the gateway serves and whether it can serve it now: ``/v1/models``, ``/v1/models/{id}``
and the readiness endpoint ``/shipit/ready``.

Owns the served names (each deployment's base model under its served name, the adapters
configured under ``routing.lora_affinity`` and those a replica lists), when a deployment
counts as servable (a replica of it is ready, or it scales from zero, where a request starts
one), the model cards (OpenAI's ``Model`` object) and waiting up to a deadline for a ready
replica. Reads the routers' replica records; sends nothing upstream and routes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shipit.config.gateway import DeploymentConfig
from shipit.core.fleet import ReplicaState
from shipit.services.router import RouterService

MAX_WAIT_S = 600.0
_RECHECK_S = 0.5  # an ejection that ends notifies nobody: look again this often


class Catalog:
    def __init__(
        self, deployments: Mapping[str, DeploymentConfig], routers: Mapping[str, RouterService]
    ) -> None:
        self.deployments = deployments
        self.routers = routers
        self.created = int(time.time())

    # ----- names ----------------------------------------------------------------------------
    def adapters(self, name: str) -> set[str]:
        """Adapters of deployment ``name``: configured ones and those its replicas hold."""
        names = set(self.deployments[name].routing.lora_affinity.adapters)
        for r in self.routers[name].registry.records():
            names |= r.adapters
        return names - {self.deployments[name].model_name}

    def replica_adapters(self) -> dict[str, set[str]]:
        """Per deployment, the adapters its replicas hold now (what routing may find)."""
        out: dict[str, set[str]] = {}
        for name, router in self.routers.items():
            out[name] = set().union(*(r.adapters for r in router.registry.records()))
        return out

    def lazy_replica_adapters(self) -> Mapping[str, set[str]]:
        """``replica_adapters()``, computed only if a request's model is not a deployment's
        base model (the common case never looks: it would walk every replica per request)."""
        return _Lazy(self.replica_adapters)

    def deployment_of(self, model: str) -> str | None:
        for name, dep in self.deployments.items():
            if model == dep.model_name or model in self.adapters(name):
                return name
        return None

    def names_known(self) -> bool:
        """Whether every deployment has had a replica ready (so the adapters its replicas
        load at start are listed); until then a single deployment takes unknown names."""
        return all(r.ready_count() > 0 for r in self.routers.values())

    # ----- readiness ------------------------------------------------------------------------
    def servable(self, name: str) -> bool:
        """A request for deployment ``name`` can be served: a replica of it is ready, or it
        scales from zero (the request starts a replica and waits for it)."""
        if self.routers[name].ready_count() > 0:
            return True
        scaling = self.deployments[name].autoscaling
        return scaling is not None and scaling.min_replicas == 0

    def describe(self, name: str) -> str:
        """``NAME: R of N replicas ready (S starting)`` for a readiness refusal."""
        router = self.routers[name]
        records = router.registry.records()
        starting = sum(1 for r in records if r.state is ReplicaState.STARTING)
        return (
            f"{self.deployments[name].model_name}: {router.ready_count()} of {len(records)} "
            f"replica(s) ready ({starting} starting)"
        )

    async def wait_ready(self, names: list[str], wait_s: float) -> bool:
        """True once every deployment in ``names`` has a ready replica; False if one still
        has none after ``wait_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_s, MAX_WAIT_S)
        changed = asyncio.Event()
        listeners = [self.routers[n].registry.listeners for n in names]
        for ls in listeners:
            ls.append(changed.set)
        try:
            while not all(self.routers[n].ready_count() > 0 for n in names):
                left = deadline - loop.time()
                if left <= 0:
                    return False
                changed.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: it can drop a cancel
                    async with asyncio.timeout(min(left, _RECHECK_S)):
                        await changed.wait()
            return True
        finally:
            for ls in listeners:
                ls.remove(changed.set)

    # ----- model cards ----------------------------------------------------------------------
    def card(self, model_id: str, parent: str | None) -> dict[str, Any]:
        """OpenAI's ``Model`` object (``parent``/``root`` as vLLM adds them)."""
        return {
            "id": model_id,
            "object": "model",
            "created": self.created,
            "owned_by": "shipit",
            "root": model_id,
            "parent": parent,
        }

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: what can be served now (a deployment with no ready replica is
        left out, unless it scales from zero)."""
        data: list[dict[str, Any]] = []
        for name, dep in self.deployments.items():
            if not self.servable(name):
                continue
            base = dep.model_name
            data.append(self.card(base, None))
            data += [self.card(a, base) for a in sorted(self.adapters(name))]
        return {"object": "list", "data": data}

    def find(self, model_id: str) -> dict[str, Any] | None:
        """The card of ``model_id`` when it is listed by ``models`` now."""
        for card in self.models()["data"]:
            if card["id"] == model_id:
                return dict(card)
        return None

    def served(self) -> list[str]:
        """Every name configured or held by a replica, ready or not (for messages)."""
        out: list[str] = []
        for name, dep in self.deployments.items():
            out += [dep.model_name, *sorted(self.adapters(name))]
        return out


class _Lazy(Mapping[str, set[str]]):
    """A mapping built by ``build`` on first use."""

    __slots__ = ("_build", "_data")

    def __init__(self, build: Callable[[], dict[str, set[str]]]) -> None:
        self._build = build
        self._data: dict[str, set[str]] | None = None

    def _get(self) -> dict[str, set[str]]:
        if self._data is None:
            self._data = self._build()
        return self._data

    def __getitem__(self, key: str) -> set[str]:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())
