"""Business events in a CloudEvents 1.0 envelope, in its structured JSON form.

Beside the required attributes (``specversion``, ``id``, ``source``, ``type``) an
event carries ``subject`` (its aggregate: one order, one item at one location),
``time``, ``datacontenttype`` and ``data``, and four extensions of entrepot's:
``correlationid`` and ``causationid`` (what caused it), ``schemaversion`` (of the
canonical object in ``data``) and ``sourceversion`` (the version of the aggregate
at its source, such as an order's ``updated_at``, by which a consumer tells an
older event from a newer one). Extension names are lower-case letters only, as
CloudEvents requires.

Each event type has a current schema version of its ``data``. Reading an event
of an older version, from the outbox, the bus or a dead letter, upgrades its
data step by step to the current one. So events stored before an upgrade of
entrepot reach subscribers in today's form, on replay too. An event of a newer
version than this entrepot reads is left as it is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from entrepot.store.types import utc_now

HUB_SOURCE = "/entrepot/hub"

ORDER_RECEIVED = "order.received"
ORDER_VALIDATED = "order.validated"
ORDER_ACCEPTED = "order.accepted"
ORDER_REJECTED = "order.rejected"
ORDER_CANCELLED = "order.cancelled"
SHIPMENT_CONFIRMED = "shipment.confirmed"
INVOICE_POSTED = "invoice.posted"
INVENTORY_CHANGED = "inventory.changed"
RETURN_RECEIVED = "return.received"
EVENT_TYPES = frozenset(
    {
        ORDER_RECEIVED,
        ORDER_VALIDATED,
        ORDER_ACCEPTED,
        ORDER_REJECTED,
        ORDER_CANCELLED,
        SHIPMENT_CONFIRMED,
        INVOICE_POSTED,
        INVENTORY_CHANGED,
        RETURN_RECEIVED,
    }
)


# The types whose data is an order as stored, with what happened to it.
ORDER_DATA_TYPES = EVENT_TYPES - {INVENTORY_CHANGED}

Data = dict[str, Any]
UpgradeStep = Callable[[Data], Data]


def _order_total_on_top(data: Data) -> Data:
    """Order data, version 1 to 2: the order's total, as a money set, beside it."""
    order = data.get("order") or {}
    return {**data, "total": (order.get("totals") or {}).get("total")}


# The current schema version of each event type's data. Types not listed are at 1.
CURRENT_SCHEMA_VERSIONS: dict[str, int] = {event_type: 2 for event_type in ORDER_DATA_TYPES}

# (event type, from version) -> function returning the data at from version + 1.
UPGRADE_STEPS: dict[tuple[str, int], UpgradeStep] = {
    (event_type, 1): _order_total_on_top for event_type in ORDER_DATA_TYPES
}


def current_schema_version(event_type: str) -> int:
    """Return the schema version that events of ``event_type`` are written in."""
    return CURRENT_SCHEMA_VERSIONS.get(event_type, 1)


def upgraded_data(event_type: str, version: int, data: Data) -> tuple[int, Data]:
    """Return ``data`` of ``version`` brought to the current version, with that version."""
    current = current_schema_version(event_type)
    while version < current:
        step = UPGRADE_STEPS.get((event_type, version))
        if step is None:
            break
        data = step(data)
        version += 1
    return version, data


class Event(BaseModel):
    """One business event. ``data`` contains a canonical object of ``schemaversion``."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    source: str = Field(default=HUB_SOURCE, min_length=1)
    type: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    time: datetime = Field(default_factory=utc_now)
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]
    correlationid: str | None = None
    causationid: str | None = None
    schemaversion: int = Field(default=1, ge=1)
    sourceversion: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade_data(cls, values: Any) -> Any:
        """Write a new event in the current version of its type, and upgrade an old one."""
        if not isinstance(values, dict) or not isinstance(values.get("type"), str):
            return values
        event_type = values["type"]
        version = values.get("schemaversion")
        if version is None:
            return {**values, "schemaversion": current_schema_version(event_type)}
        data = values.get("data")
        if isinstance(version, int) and isinstance(data, dict):
            new_version, new_data = upgraded_data(event_type, version, data)
            if new_version != version:
                return {**values, "schemaversion": new_version, "data": new_data}
        return values

    def to_json(self) -> bytes:
        """Encode the event in CloudEvents' structured JSON form."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True)).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> Event:
        return cls.model_validate_json(body)


def order_subject(channel: str, account: str, channel_order_id: str) -> str:
    """Return the aggregate key of an order's events."""
    return f"order/{channel}/{account}/{channel_order_id}"


def inventory_subject(target: str, sku: str, location: str) -> str:
    """Return the aggregate key of the events of one item at one location of a target."""
    return f"inventory/{target}/{location}/{sku}"
