"""Options of the ERP simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DATABASE_FILE_NAME = "erp-sim.db"


@dataclass(frozen=True)
class ErpSimSettings:
    """Address, storage, account limits and credentials of one simulated ERP account.

    ``rate_limit`` is in requests per second, and 0 disables it. ``latency_ms`` and
    ``latency_jitter_ms`` delay every record request: each one waits ``latency_ms`` plus a
    uniform random share of ``latency_jitter_ms``. ``token``, when set, is the bearer token
    that record requests must send. ``currencies`` lists the accepted ISO 4217 codes, and
    None accepts every code in pycountry's ISO 4217 list.
    """

    host: str = "127.0.0.1"
    port: int = 8090
    data_dir: Path = Path("data")
    concurrency_limit: int = 5
    rate_limit: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    token: str | None = field(default=None, repr=False)
    currencies: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be at least 1, got {self.concurrency_limit}")
        for name in ("rate_limit", "latency_ms", "latency_jitter_ms"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.currencies is not None:
            normalized = frozenset(code.upper() for code in self.currencies)
            object.__setattr__(self, "currencies", normalized)

    @property
    def database_path(self) -> Path:
        """Path of the simulator's SQLite file."""
        return self.data_dir / DATABASE_FILE_NAME
