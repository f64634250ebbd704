"""Business events in a CloudEvents 1.0 envelope, in its structured JSON form.

Beside the required attributes (``specversion``, ``id``, ``source``, ``type``) an
event carries ``subject`` (its aggregate: one order, one item at one location),
``time``, ``datacontenttype`` and ``data``, and four extensions of entrepot's:
``correlationid`` and ``causationid`` (what caused it), ``schemaversion`` (of the
canonical object in ``data``) and ``sourceversion`` (the version of the aggregate
at its source, such as an order's ``updated_at``, by which a consumer tells an
older event from a newer one). Extension names are lower-case letters only, as
CloudEvents requires.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
