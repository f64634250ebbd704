"""Outcomes of one delivery attempt, before they are recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from entrepot.spokes.failures import DeliveryFailure
from entrepot.spokes.protocols import SubmitResult


@dataclass(frozen=True)
class Sent:
    """The target accepted the request."""

    result: SubmitResult


@dataclass(frozen=True)
class Failed:
    """The spoke reported one of the three failure kinds."""

    failure: DeliveryFailure


@dataclass(frozen=True)
class Waiting:
    """Nothing was sent: the target was closed (maintenance, pause, open circuit).

    Waiting uses up no attempt.
    """

    until: datetime
    reason: str


Outcome = Sent | Failed | Waiting
