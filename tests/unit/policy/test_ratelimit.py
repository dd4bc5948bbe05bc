"""Token buckets per tenant: burst to the per-minute limit, refill with time, token debt, budget."""

from __future__ import annotations

from shipit.policy.ratelimit import RateLimits, RateState, charge_tokens, decide, decide_tokens


def test_requests_burst_to_the_limit_then_refuse_with_the_wait_for_one_token() -> None:
    limits = RateLimits(requests_per_min=3)
    state = RateState()
    allowed = []
    for _ in range(4):
        d, state = decide(limits, 100.0, state)
        allowed.append(d.allowed)
    assert allowed == [True, True, True, False]
    assert d.reason_code == "requests"
    assert d.remaining_requests == 0
    assert d.retry_after_s == 20.0  # 3 per minute: one every 20 s


def test_requests_refill_with_time_passed_in() -> None:
    limits = RateLimits(requests_per_min=60)
    state = RateState()
    for _ in range(60):
        d, state = decide(limits, 0.0, state)
        assert d.allowed
    d, state = decide(limits, 0.5, state)
    assert not d.allowed
    d, state = decide(limits, 1.0, state)  # one second refills one request
    assert d.allowed and d.remaining_requests == 0


def test_remaining_counts_down_and_reset_says_when_full() -> None:
    limits = RateLimits(requests_per_min=10)
    d, state = decide(limits, 0.0, RateState())
    assert d.remaining_requests == 9
    assert d.reset_requests_s == 6.0
    d, _ = decide(limits, 0.0, state)
    assert d.remaining_requests == 8


def test_tokens_are_charged_after_the_answer_and_a_debt_refuses_until_refilled() -> None:
    limits = RateLimits(tokens_per_min=600)  # 10 tokens per second
    d, state = decide(limits, 0.0, RateState())
    assert d.allowed and d.remaining_tokens == 600
    state = charge_tokens(limits, state, 700, 0.0)  # the answer was larger than the bucket
    d, state = decide(limits, 5.0, state)  # -100 + 50
    assert not d.allowed and d.reason_code == "tokens"
    assert d.retry_after_s == 5.1  # until the level reaches 1 token
    d, state = decide(limits, 10.2, state)
    assert d.allowed


def test_budget_never_refills() -> None:
    limits = RateLimits(token_budget=100)
    d, state = decide(limits, 0.0, RateState())
    state = charge_tokens(limits, state, 100, 0.0)
    d, state = decide(limits, 3600.0, state)
    assert not d.allowed and d.reason_code == "budget"
    assert state.spent_tokens == 100


def test_no_limits_admit_everything() -> None:
    state = RateState()
    for _ in range(1000):
        d, state = decide(RateLimits(), 0.0, state)
        assert d.allowed and d.remaining_requests is None


def test_decide_tokens_gates_job_lines_on_budget_and_tokens_without_taking_a_request() -> None:
    limits = RateLimits(requests_per_min=1, tokens_per_min=60, token_budget=100)
    ok, s = decide_tokens(limits, 0.0, RateState())
    assert ok.allowed and s.requests == 1.0  # the request bucket is untouched
    s = charge_tokens(limits, s, 90, 0.0)  # the bucket is at -30
    wait, s = decide_tokens(limits, 0.0, s)
    assert (wait.allowed, wait.reason_code, wait.retry_after_s) == (False, "tokens", 31.0)
    s = charge_tokens(limits, s, 10, 60.0)  # 100 of 100 spent
    spent, _ = decide_tokens(limits, 600.0, s)
    assert (spent.allowed, spent.reason_code) == (False, "budget")
