"""Where runtime LoRA loading may read from: a path must resolve inside one of ``--lora-root``.

Owns ``resolve_adapter_path``: a ``lora_path`` from ``POST /v1/load_lora_adapter`` is refused if
it holds a ``..`` component, and is otherwise resolved (symlinks followed, so a link inside a
root that points outside it is refused too) and must land inside a resolved root. The refusal
is the same message whether or not the path exists, so the endpoint cannot be used to probe the
file system outside the roots; nothing is read before the check passes. The engine then reads
the *resolved* path. It must not load adapters (the engine does).
"""

from __future__ import annotations

from pathlib import Path, PurePath

from shipit.core.errors import InvalidRequestError


def resolve_roots(roots: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple(Path(r).expanduser().resolve() for r in roots)


def _outside(path: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"lora_path {path!r} is not under an allowed LoRA root; this replica loads adapters "
        "only from directories given with --lora-root (no '..', no symlinks leading out)",
        field="lora_path",
        code="permission_denied",
    )


def resolve_adapter_path(path: str, roots: tuple[Path, ...]) -> str:
    """The resolved adapter directory, or an ``InvalidRequestError`` (403) that tells nothing
    about what exists outside ``roots``."""
    if not path or "\x00" in path or ".." in PurePath(path).parts:
        raise _outside(path.replace("\x00", "\\0"))
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable component
        raise _outside(path) from None
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise _outside(path)
    return str(resolved)
