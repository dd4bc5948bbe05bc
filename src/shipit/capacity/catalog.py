"""The catalogs as data: GPUs, models, providers and prices, and how a name finds its entry.

Owns loading the YAML package data under ``capacity/data`` (read once per call of
``load_catalog``; callers keep the result), id/alias matching (case-insensitive), close-match
suggestions, and reading a local Hugging Face ``config.json`` file as a model (parsed by
``hf_config``). Must not fetch anything over a network, read clocks or cache in module globals.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import yaml

from shipit.capacity.records import (
    GpuSpec,
    MlaSpec,
    ModelSpec,
    MoeSpec,
    PriceQuote,
    Provider,
    SlidingSpec,
    normalize_id,
)
from shipit.core.errors import InvalidRequestError, ModelLoadError

_Spec = TypeVar("_Spec", GpuSpec, ModelSpec)


@dataclass(frozen=True, slots=True)
class Catalog:
    gpus: tuple[GpuSpec, ...]
    models: tuple[ModelSpec, ...]
    providers: tuple[Provider, ...]
    prices: tuple[PriceQuote, ...]

    def gpu(self, name: str) -> GpuSpec:
        return _lookup(name, self.gpus, kind="GPU", field="gpu")

    def model(self, name: str) -> ModelSpec:
        """A catalog id or alias (a local ``config.json`` is read by ``engine.model_files``)."""
        return _lookup(name, self.models, kind="model", field="model")

    def prices_for(self, gpu_id: str, providers: tuple[str, ...] = ()) -> tuple[PriceQuote, ...]:
        wanted = {p.lower() for p in providers}
        for p in wanted:
            if p not in {prov.id for prov in self.providers}:
                raise InvalidRequestError(
                    f"unknown provider {p!r}; known: {', '.join(x.id for x in self.providers)}",
                    field="providers",
                )
        return tuple(
            q for q in self.prices if q.gpu == gpu_id and (not wanted or q.provider in wanted)
        )

    def provider(self, provider_id: str) -> Provider:
        for p in self.providers:
            if p.id == provider_id.lower():
                return p
        raise InvalidRequestError(
            f"unknown provider {provider_id!r}; known: {', '.join(x.id for x in self.providers)}",
            field="provider",
        )


def _lookup(name: str, items: tuple[_Spec, ...], *, kind: str, field: str) -> _Spec:
    key = normalize_id(name)
    names: dict[str, _Spec] = {}
    for item in items:
        for alias in item.aliases:
            # The name without its Hugging Face organisation is the name a server usually
            # serves it under (``smollm2-135m-instruct``): accepted too, below exact matches.
            names.setdefault(normalize_id(alias.rsplit("/", 1)[-1]), item)
    for item in items:
        names[normalize_id(item.id)] = item
        for alias in item.aliases:
            names[normalize_id(alias)] = item
    if key in names:
        return names[key]
    close = difflib.get_close_matches(key, list(names), n=5, cutoff=0.5)
    ids = list(dict.fromkeys(names[c].id for c in close))  # best match first
    hint = f"did you mean {', '.join(ids)}? " if ids else ""
    valid = ", ".join(i.id for i in items)
    extra = " or a path to a Hugging Face config.json" if kind == "model" else ""
    raise InvalidRequestError(
        f"unknown {kind} {name!r}; {hint}known ids: {valid}{extra}", field=field
    )


def _read_yaml(filename: str) -> dict[str, Any]:
    text = resources.files("shipit.capacity").joinpath("data", filename).read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ModelLoadError(f"capacity data file {filename} is not a mapping")
    return data


def _model_from_entry(e: dict[str, Any]) -> ModelSpec:
    moe = MoeSpec(**e["moe"]) if e.get("moe") else None
    mla = MlaSpec(**e["mla"]) if e.get("mla") else None
    sliding = SlidingSpec(**e["sliding"]) if e.get("sliding") else None
    plain = {k: v for k, v in e.items() if k not in ("moe", "mla", "sliding", "aliases")}
    # YAML 1.1 reads ``8.03e9`` (no sign in the exponent) as a string.
    for key in ("params_published", "extra_params"):
        if key in plain:
            plain[key] = float(plain[key])
    return ModelSpec(
        **plain, aliases=tuple(e.get("aliases", ())), moe=moe, mla=mla, sliding=sliding
    )


def load_catalog() -> Catalog:
    """Read the packaged catalogs. Cheap (milliseconds); call once and pass the result around."""
    gpus = _read_yaml("gpus.yaml")["gpus"]
    models = _read_yaml("models.yaml")["models"]
    prices = _read_yaml("prices.yaml")
    return Catalog(
        gpus=tuple(GpuSpec(**{**g, "aliases": tuple(g.get("aliases", ()))}) for g in gpus),
        models=tuple(_model_from_entry(m) for m in models),
        providers=tuple(Provider(**p) for p in prices["providers"]),
        prices=tuple(PriceQuote(**q) for q in prices["prices"]),
    )
