"""Fault injection: throttling, outages, slow requests and timeouts after commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThrottleFault(_FaultSpec):
    """Reject the next ``count`` record requests with 429 REQUEST_LIMIT_EXCEEDED."""

    kind: Literal["throttle"]
    count: int = Field(ge=1)
    retry_after: int | None = Field(default=None, ge=0)


class UnavailableFault(_FaultSpec):
    """Reject every record request with 503 for ``seconds`` seconds."""

    kind: Literal["unavailable"]
    seconds: float = Field(gt=0)
    retry_after: int | None = Field(default=None, ge=0)


class TimeoutAfterCommitFault(_FaultSpec):
    """Commit the next ``count`` writes, then wait ``hang_seconds`` before responding."""

    kind: Literal["timeout_after_commit"]
    count: int = Field(ge=1)
    hang_seconds: float = Field(ge=0)


class SlowFault(_FaultSpec):
    """Delay the work of the next ``count`` record requests by ``seconds`` seconds."""

    kind: Literal["slow"]
    count: int = Field(ge=1)
    seconds: float = Field(ge=0)


AnyFault = ThrottleFault | UnavailableFault | TimeoutAfterCommitFault | SlowFault

# Request body of POST /_sim/faults. Its "kind" field selects the model.
FaultSpec = Annotated[AnyFault, Field(discriminator="kind")]


@dataclass
class _ActiveFault:
    spec: AnyFault
    remaining: int = 0
    until: float = 0.0


class FaultBoard:
    """Active faults, applied in the order they were added.

    Counted faults (all kinds but ``unavailable``) are used up one request at a time.
    An ``unavailable`` window ends by time, on the monotonic clock. Use the board from
    the event loop thread only, because it takes no lock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: list[_ActiveFault] = []

    def add(self, spec: AnyFault) -> None:
        if isinstance(spec, UnavailableFault):
            self._faults.append(_ActiveFault(spec, until=self._clock() + spec.seconds))
        else:
            self._faults.append(_ActiveFault(spec, remaining=spec.count))

    def clear(self) -> None:
        self._faults.clear()

    def outage(self) -> UnavailableFault | None:
        """Return the ``unavailable`` fault whose window is open now, if any."""
        self._drop_expired()
        for fault in self._faults:
            if isinstance(fault.spec, UnavailableFault):
                return fault.spec
        return None

    def take_throttle(self) -> ThrottleFault | None:
        """Use up one request of the oldest ``throttle`` fault and return it, if any."""
        spec = self._take("throttle")
        return spec if isinstance(spec, ThrottleFault) else None

    def take_slow(self) -> SlowFault | None:
        """Use up one request of the oldest ``slow`` fault and return it, if any."""
        spec = self._take("slow")
        return spec if isinstance(spec, SlowFault) else None

    def take_timeout_after_commit(self) -> TimeoutAfterCommitFault | None:
        """Use up one write of the oldest ``timeout_after_commit`` fault and return it."""
        spec = self._take("timeout_after_commit")
        return spec if isinstance(spec, TimeoutAfterCommitFault) else None

    def describe(self) -> list[dict[str, Any]]:
        """List the active faults with the requests or seconds each has left."""
        self._drop_expired()
        described = []
        for fault in self._faults:
            entry = fault.spec.model_dump()
            if isinstance(fault.spec, UnavailableFault):
                entry["seconds_left"] = round(max(0.0, fault.until - self._clock()), 3)
            else:
                entry["remaining"] = fault.remaining
            described.append(entry)
        return described

    def _take(self, kind: str) -> _FaultSpec | None:
        for fault in self._faults:
            if fault.spec.kind != kind:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            return fault.spec
        return None

    def _drop_expired(self) -> None:
        now = self._clock()
        self._faults = [
            fault
            for fault in self._faults
            if not isinstance(fault.spec, UnavailableFault) or fault.until > now
        ]
