"""Schema versions of stored canonical objects, and their upgrade on read.

A stored payload carries ``schema_version``. Reading it runs each registered
upgrade step in turn until the payload reaches the current version, so messages
stored under an older model stay replayable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from entrepot.canonical.errors import InvalidInputError
from entrepot.canonical.order import SALES_ORDER_SCHEMA_VERSION, SalesOrder

Payload = dict[str, Any]
UpgradeStep = Callable[[Payload], Payload]

CURRENT_VERSIONS = {"sales_order": SALES_ORDER_SCHEMA_VERSION}

# (kind, from_version) -> function returning the payload at from_version + 1.
UPGRADE_STEPS: dict[tuple[str, int], UpgradeStep] = {}


def upgrade(kind: str, payload: Payload) -> Payload:
    """Return ``payload`` brought to the current schema version of ``kind``."""
    current = CURRENT_VERSIONS[kind]
    version = payload.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise InvalidInputError.single("schema_version", f"invalid version {version!r}")
    if version > current:
        raise InvalidInputError.single(
            "schema_version",
            f"version {version} is newer than this entrepot reads ({current}); upgrade entrepot",
        )

    while version < current:
        step = UPGRADE_STEPS.get((kind, version))
        if step is None:
            raise InvalidInputError.single(
                "schema_version", f"no upgrade step from {kind} version {version}"
            )
        payload = step(payload)
        version += 1
        payload["schema_version"] = version
    return payload


def load_sales_order(payload: Payload) -> SalesOrder:
    """Read a stored sales order of any known version."""
    return SalesOrder.model_validate(upgrade("sales_order", dict(payload)))
