"""The ``jobs:`` block documented in docs/protocols.md is valid and shows the defaults."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shipit.config.gateway import parse_config
from shipit.config.jobs import JobsConfig

DOC = Path(__file__).parents[3] / "docs" / "protocols.md"


def test_documented_jobs_block_is_the_defaults() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    (block,) = [b for b in blocks if b.startswith("jobs:")]
    documented = parse_config(yaml.safe_load(block)).jobs
    assert documented == JobsConfig()
