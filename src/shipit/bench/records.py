"""Records the bench passes between its stages: what to send, and what came back.

Owns the frozen dataclasses shared by workloads, the runner, metrics and reports. Holds no
logic beyond trivial derived properties and must not import httpx, numpy or any IO module, so
every stage can be tested on hand-built records.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Turn:
    """One user message of a session and how many tokens we ask for back."""

    prompt: str
    input_tokens: int  # tokens we aimed for when writing the prompt (approximate)
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Session:
    """A unit of work: one request, or several turns sent one after another.

    ``model`` is the base model or a LoRA adapter name (OpenAI-compatible servers such as vLLM
    route adapters by the ``model`` field). Later turns carry the earlier turns and replies.
    """

    model: str
    turns: tuple[Turn, ...]
    prefix_group: int | None = None
    think_time_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Arrival:
    """A session scheduled at ``offset_s`` seconds after the run starts (open loop)."""

    offset_s: float
    session: Session


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request measured. Times are ``time.perf_counter_ns`` values.

    ``content_ns`` holds the arrival time of every chunk that carried content; TTFT, ITL and
    TPOT are derived from it so the hot loop only appends integers.
    """

    session: int
    turn: int
    model: str
    scheduled_ns: int | None  # when the arrival process wanted it sent (open loop only)
    start_ns: int  # request sent
    end_ns: int  # last byte received (or failure seen)
    content_ns: tuple[int, ...]
    input_tokens: int
    output_tokens: int
    tokens_source: str  # "usage" (server reported) or "chunks" (content chunks counted)
    error: str | None = None  # kind, e.g. "http_429", "timeout", "connect", "incomplete"
    error_detail: str | None = None  # the first words of the server's message, for the report

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_ns(self) -> int | None:
        return self.content_ns[0] - self.start_ns if self.content_ns else None

    @property
    def e2e_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def tpot_ns(self) -> float | None:
        """(E2E - TTFT) / (output_tokens - 1); None below 2 tokens."""
        ttft = self.ttft_ns
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e_ns - ttft) / (self.output_tokens - 1)
