"""Writing generated deployment files (Prometheus rules, Grafana dashboards) into ``deploy/``.

One writer and one ``python -m`` entry point shared by every generator, so each generator only
renders text. No rendering here, and nothing runs at import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write ``name -> text`` into ``directory`` (created if missing); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def regenerate_main(
    argv: Sequence[str] | None, module: str, write: Callable[[Path], list[Path]]
) -> int:
    """``python -m <module> DIRECTORY``: regenerate the files there, print each path."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print(f"usage: python -m {module} DIRECTORY", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(f"wrote {path}")
    return 0
