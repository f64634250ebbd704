"""Log and counters of the record requests the simulator received."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

# Maximum number of entries kept in the log. Older entries are dropped, but the
# counters in `RequestLog.stats` still count every request.
MAX_LOG_ENTRIES = 100_000


@dataclass(frozen=True)
class RequestEntry:
    """One record request. Times are Unix timestamps in seconds."""

    started_at: float
    finished_at: float
    method: str
    path: str
    status: int
    external_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "externalId": self.external_id,
        }


class RequestLog:
    """Entries and per-status counts of record requests. Use it from the event loop only."""

    def __init__(self) -> None:
        self._entries: deque[RequestEntry] = deque(maxlen=MAX_LOG_ENTRIES)
        self._by_status: Counter[int] = Counter()
        self._total = 0

    def add(self, entry: RequestEntry) -> None:
        self._entries.append(entry)
        self._by_status[entry.status] += 1
        self._total += 1

    def clear(self) -> None:
        self._entries.clear()
        self._by_status.clear()
        self._total = 0

    def entries(self) -> list[dict[str, Any]]:
        """Return the kept entries, oldest first."""
        return [entry.to_json() for entry in self._entries]

    def counts(self) -> dict[str, Any]:
        """Return the total number of requests and the number per HTTP status."""
        by_status = {str(status): count for status, count in sorted(self._by_status.items())}
        return {"requests": self._total, "by_status": by_status}
