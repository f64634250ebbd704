"""Order lifecycle transitions: the allowed ones and the refused ones."""

from __future__ import annotations

import pytest

from entrepot.hub.lifecycle import OrderState, is_allowed

S = OrderState


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.RECEIVED, S.VALIDATED),
        (S.RECEIVED, S.REJECTED),
        (S.VALIDATED, S.ACCEPTED),
        (S.VALIDATED, S.DEAD_LETTERED),
        (S.ACCEPTED, S.CANCELLED),
        (S.REJECTED, S.VALIDATED),
        (S.DEAD_LETTERED, S.VALIDATED),
    ],
)
def test_allowed(current: OrderState, new: OrderState) -> None:
    assert is_allowed(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.RECEIVED, S.ACCEPTED),
        (S.CANCELLED, S.VALIDATED),
        (S.CANCELLED, S.ACCEPTED),
        (S.ACCEPTED, S.RECEIVED),
        (S.VALIDATED, S.RECEIVED),
    ],
)
def test_refused(current: OrderState, new: OrderState) -> None:
    assert not is_allowed(current, new)


def test_every_state_has_rules() -> None:
    from entrepot.hub.lifecycle import ALLOWED_TRANSITIONS

    assert set(ALLOWED_TRANSITIONS) == set(OrderState)
