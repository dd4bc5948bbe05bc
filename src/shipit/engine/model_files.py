"""Model shapes from where users name them: a catalog id, or a local Hugging Face config.

Owns the one place that turns a ``--model`` value into a ``capacity.ModelSpec``: a path to a
``config.json`` (or the directory holding one) is read here and parsed by the one parser,
``capacity.model_from_hf_config``; anything else is looked up in the catalog. The capacity
package stays free of file IO; this module holds no math.
"""

from __future__ import annotations

import json
from pathlib import Path

from shipit.capacity import Catalog, ModelSpec, model_from_hf_config
from shipit.core.errors import ModelLoadError


def resolve_model(catalog: Catalog, name: str) -> ModelSpec:
    """A catalog id or alias, or a path to a local ``config.json`` (or its directory)."""
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return model_from_hf_config_file(path)
    return catalog.model(name)


def model_from_hf_config_file(path: Path) -> ModelSpec:
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read a config.json ({exc})", field="model") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: config.json is not a JSON object", field="model")
    return model_from_hf_config(raw, source=str(path))
