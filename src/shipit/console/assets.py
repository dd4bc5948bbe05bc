"""The console's static files, read once from the package (``shipit/console/static``).

A fixed table, name to bytes and content type, built at start-up from the files the wheel
ships: serving looks a name up in it and never joins a request path onto a directory, so no
request can reach another file. Files of an unknown kind are not served.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every servable file directly under ``static/``, by file name."""
    out: dict[str, Asset] = {}
    for entry in resources.files("shipit.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in TYPES:
            out[entry.name] = Asset(entry.read_bytes(), TYPES[suffix])
    return out
