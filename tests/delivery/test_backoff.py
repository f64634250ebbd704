"""Retry delays grow exponentially, carry jitter, stop at the maximum, honour Retry-After."""

from __future__ import annotations

from entrepot.delivery.backoff import Backoff


def test_delay_doubles_with_jitter() -> None:
    backoff = Backoff(initial=1.0, maximum=300.0)
    for attempts, base in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)):
        delays = [backoff.delay(attempts) for _ in range(200)]
        assert min(delays) >= base
        assert max(delays) <= base + 1.0
        assert len(set(delays)) > 100


def test_delay_capped_at_maximum() -> None:
    assert Backoff(initial=1.0, maximum=10.0).delay(20) == 10.0


def test_retry_after_wins_when_longer() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0)
    assert backoff.delay(1, retry_after=30.0) == 30.0
    assert backoff.delay(1, retry_after=0.0) < 0.25
