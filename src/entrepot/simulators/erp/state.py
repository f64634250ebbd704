"""State of one simulated ERP account, shared by the middleware and the routes."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from entrepot.simulators.erp.database import SimDatabase
from entrepot.simulators.erp.faults import FaultBoard
from entrepot.simulators.erp.limits import ConcurrencyGate, TokenBucket
from entrepot.simulators.erp.requestlog import RequestLog
from entrepot.simulators.erp.settings import ErpSimSettings


@dataclass
class SimState:
    """Settings, database, governance counters, faults and request log of the account.

    Everything but the database lives in memory and is read and changed on the event
    loop thread only.
    """

    settings: ErpSimSettings
    database: SimDatabase
    gate: ConcurrencyGate
    bucket: TokenBucket | None
    faults: FaultBoard
    requests: RequestLog

    @classmethod
    def from_settings(cls, settings: ErpSimSettings) -> SimState:
        """Open or create the database and start with empty counters and no faults."""
        bucket = TokenBucket(settings.rate_limit) if settings.rate_limit > 0 else None
        return cls(
            settings=settings,
            database=SimDatabase(settings.database_path),
            gate=ConcurrencyGate(settings.concurrency_limit),
            bucket=bucket,
            faults=FaultBoard(),
            requests=RequestLog(),
        )

    def reset_memory(self) -> None:
        """Clear the faults, request log and counters, and refill the rate limit bucket."""
        self.faults.clear()
        self.requests.clear()
        self.gate.reset_max()
        if self.bucket is not None:
            self.bucket.fill()


def sim_state(request: Request) -> SimState:
    """Return the account state that `create_app` attached to the application."""
    state = request.app.state.sim
    if not isinstance(state, SimState):
        raise TypeError("Internal error: app.state.sim is not a SimState; use create_app().")
    return state
