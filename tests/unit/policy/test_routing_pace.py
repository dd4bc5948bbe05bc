"""The pace book's backlog: what a replica still has to compute, as time passes.

A replica computes the prompts it was sent in turn, from the moment each reaches it; counted
whole until its first token, a long prompt the replica had nearly finished made its replica
look busy for seconds, and the token guard sent follow-up turns away from their cache holder.
Figures: a configured pace of 1 ms a token.
"""

from __future__ import annotations

import pytest

from shipit.policy.routing import PaceBook
from shipit.policy.routing.pace import PACE_MIN_TOKENS


def test_a_prompt_counts_only_its_part_not_yet_computed() -> None:
    book = PaceBook(prefill_s_per_token=0.001)
    book.placed("a", "q1", 1000, now_s=0.0)
    assert book.pending_tokens("a", 0.4) == 600  # 400 ms of 1,000 tokens computed
    book.placed("a", "q2", 500, now_s=0.5)  # waits for q1: starts at 1.0
    assert book.pending_tokens("a", 0.5) == 500 + 500
    assert book.pending_tokens("a", 1.2) == 300  # q1 done by the pace; q2 200 ms in
    assert book.pending_tokens("a", 2.0) == 0


def test_a_first_token_later_than_the_pace_delays_the_next_prompt() -> None:
    book = PaceBook(prefill_s_per_token=0.001)
    book.placed("a", "q1", 1000, now_s=0.0)
    book.placed("a", "q2", 500, now_s=0.5)
    book.prefilled("a", "q1", now_s=1.1)  # q1 took 1.1 s: q2 started then at the earliest
    assert book.pending_tokens("a", 1.2) == 400


def test_the_replicas_measured_pace_replaces_the_configured_one() -> None:
    book = PaceBook(prefill_s_per_token=0.001)
    tokens = PACE_MIN_TOKENS
    book.placed("a", "q1", tokens, now_s=0.0)
    # 2 ms a token: the replica's long prompts compute at half the configured pace.
    book.prefilled("a", "q1", now_s=tokens * 0.002)
    assert book.prefill_s_per_token("a") == pytest.approx(0.002)
    assert book.prefill_s_per_token("b") == 0.001  # not measured yet
    start = tokens * 0.002 + 5.0  # idle meanwhile: idle time is not the pace
    book.placed("a", "q2", 1000, now_s=start)
    assert book.pending_tokens("a", start + 1.0) == 500
    assert book.paces(["a"], now_s=start + 1.0)[0].prefill_s_per_token == pytest.approx(0.002)
    book.forget("a")
    assert book.prefill_s_per_token("a") == 0.001


def test_without_a_pace_a_prompt_counts_whole_until_its_first_token() -> None:
    book = PaceBook()
    book.placed("a", "q1", 1000, now_s=0.0)
    assert book.pending_tokens("a", 100.0) == 1000


def test_the_backlog_matches_the_rule_written_plainly_on_random_histories() -> None:
    """Each prompt starts when it arrived or when the one before it is done, whichever is
    later, takes ``tokens x pace``, and counts min(tokens, round(seconds left / pace)), at
    least 0; the book's loop is written for speed, this is the rule as stated."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        pace = rng.choice([1e-4, 0.001, 0.0025])
        book = PaceBook(prefill_s_per_token=pace)
        placed: list[tuple[int, float]] = []
        t = 0.0
        for i in range(rng.randint(1, 12)):
            t += rng.choice([0.0, 0.05, 0.3, 1.0])
            tokens = rng.randint(1, 3000)
            book.placed("a", f"q{i}", tokens, now_s=t)
            placed.append((tokens, t))
        for now_s in (0.0, t, t + rng.uniform(0, 4), t + 100):
            free_s, want = -float("inf"), 0
            for tokens, at in placed:
                free_s = max(at, free_s) + tokens * pace
                want += min(tokens, max(round((free_s - now_s) / pace), 0))
            assert book.pending_tokens("a", now_s) == want


def test_the_backlog_matches_the_rule_as_prompts_come_and_go_between_questions() -> None:
    """The book keeps each replica's chain of finish times between decisions, extended as
    prompts arrive and rebuilt when one leaves: asked between every change, it must still give
    the rule as stated (a first token frees the replica from that moment)."""
    import random

    rng = random.Random(11)
    for _ in range(300):
        pace = rng.choice([1e-4, 0.001, 0.0025])
        book = PaceBook(prefill_s_per_token=pace)
        backlog: dict[str, tuple[int, float]] = {}
        last_drop = -float("inf")
        t = 0.0
        for i in range(rng.randint(1, 30)):
            t += rng.choice([0.0, 0.01, 0.05, 0.3, 1.0])
            if backlog and rng.random() < 0.4:
                rid = rng.choice(list(backlog))
                del backlog[rid]
                # ``done`` (a slot back) drops it as a first token does, without measuring
                # the pace, so that the configured one holds throughout.
                book.done("a", rid, None, now_s=t)
                last_drop = t
            else:
                tokens = rng.randint(1, 3000)
                book.placed("a", f"q{i}", tokens, now_s=t)
                backlog[f"q{i}"] = (tokens, t)
            for now_s in (t, t + rng.uniform(0, 2)):
                free_s, want = last_drop if backlog else -float("inf"), 0
                for tokens, at in backlog.values():
                    free_s = max(at, free_s) + tokens * pace
                    want += min(tokens, max(round((free_s - now_s) / pace), 0))
                assert book.pending_tokens("a", now_s) == want
