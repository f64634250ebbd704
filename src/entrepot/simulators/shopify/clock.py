"""Timestamps and ids of simulated records."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar


def parse_timestamp(value: object) -> datetime | None:
    """Parse an ISO 8601 timestamp with an offset, or return None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` as Shopify does: whole seconds with the UTC offset."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


class Timeline:
    """Source of record timestamps that only move forward, in whole seconds.

    Each timestamp is the wall-clock time, or one second after the latest one handed
    out or seen, whichever is later. So a record updated twice within a second still
    gets a newer ``updated_at``.
    """

    def __init__(self) -> None:
        self._latest = datetime.fromtimestamp(0, UTC)

    def observe(self, moment: datetime) -> None:
        """Note a timestamp that came with loaded data."""
        self._latest = max(self._latest, moment.astimezone(UTC).replace(microsecond=0))

    def next(self) -> datetime:
        """Return a new timestamp later than every earlier one."""
        now = datetime.now(UTC).replace(microsecond=0)
        self._latest = max(now, self._latest + timedelta(seconds=1))
        return self._latest


class IdSequences:
    """Deterministic ids, one increasing sequence per resource.

    Each resource starts at its own base, so that ids of different resources never
    look alike in logs.
    """

    BASES: ClassVar[dict[str, int]] = {
        "order": 5_100_000_001,
        "line_item": 13_100_000_001,
        "fulfillment_order": 6_100_000_001,
        "fulfillment_order_line_item": 14_100_000_001,
        "fulfillment": 4_100_000_001,
        "product": 7_100_000_001,
        "variant": 41_100_000_001,
        "inventory_item": 43_100_000_001,
        "location": 61_100_000_001,
    }

    def __init__(self) -> None:
        self._counters: dict[str, Iterator[int]] = {
            name: itertools.count(base) for name, base in self.BASES.items()
        }

    def next(self, resource: str) -> int:
        """Return the next id of ``resource``."""
        return next(self._counters[resource])
