"""The base images shipit's container builds start from, each pinned by tag and digest.

One ``BaseImage`` per base: the repository, the tag it tracks, the digest that tag pointed to
when it was checked, and the day of that check. A digest this project could not read from the
registry is ``UNVERIFIED``: the Dockerfile still names the tag, and ``shipit build --build``
refuses to build from it until the digest is filled in. To fill one in, on a machine that
reaches the registry::

    docker buildx imagetools inspect docker.io/vllm/vllm-openai:v0.33.0   # "Digest: sha256:..."
    # or: skopeo inspect --format '{{.Digest}}' docker://docker.io/vllm/vllm-openai:v0.33.0

then set ``digest`` and ``checked`` below. Pure data: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

UNVERIFIED = "UNVERIFIED"


@dataclass(frozen=True, slots=True)
class BaseImage:
    repository: str
    tag: str
    digest: str  # "sha256:<64 hex>" or UNVERIFIED
    checked: str  # the day the digest was read from the registry, or what was checked instead

    @property
    def pinned(self) -> bool:
        return self.digest.startswith("sha256:") and len(self.digest) == 71

    @property
    def ref(self) -> str:
        """``repo:tag@sha256:...`` when pinned, else ``repo:tag`` (never a made-up digest)."""
        base = f"{self.repository}:{self.tag}"
        return f"{base}@{self.digest}" if self.pinned else base


# The tags are the newest releases on PyPI when this was written (vllm 0.33.0, sglang 0.5.23,
# 2026-11); the registries were out of reach, so no digest was read and the tags themselves
# must be confirmed to exist on the registry before a build.
_NOTE = "2026-12-03: registry unreachable from the build machine; tag and digest unverified"

PYTHON_SLIM = BaseImage("docker.io/library/python", "3.11-slim-bookworm", UNVERIFIED, _NOTE)
UV = BaseImage("ghcr.io/astral-sh/uv", "0.13.9", UNVERIFIED, _NOTE)
VLLM = BaseImage("docker.io/vllm/vllm-openai", "v0.33.0", UNVERIFIED, _NOTE)
SGLANG = BaseImage("docker.io/lmsysorg/sglang", "v0.5.23", UNVERIFIED, _NOTE)
# The init container that copies weights from object storage (rclone speaks S3, GCS, Azure).
RCLONE = BaseImage("docker.io/rclone/rclone", "1.71", UNVERIFIED, _NOTE)

CATALOG: dict[str, BaseImage] = {
    "python-slim": PYTHON_SLIM,
    "uv": UV,
    "vllm": VLLM,
    "sglang": SGLANG,
    "rclone": RCLONE,
}


def unpinned(names: tuple[str, ...] | None = None) -> list[str]:
    """Catalog entries (of ``names``, or all) whose digest is still ``UNVERIFIED``."""
    return [n for n in (names or tuple(CATALOG)) if not CATALOG[n].pinned]
