"""Tables of the store: receipts, orders and their history, deliveries, dead letters,
links to objects in targets, what was read back from them, and pushes to channels.

Duplicates are stopped by unique keys, never by a look-up before an insert, so two
deliveries racing each other still make one row.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from entrepot.store.types import DecimalText, UtcDateTime, utc_now

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only makes an INTEGER PRIMARY KEY an alias of the rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Receipt(Base):
    """A message as a channel delivered it: raw body and headers, kept unchanged.

    ``status`` runs received → processing → processed, ignored or failed. A
    processing receipt whose lease has expired belongs to a worker that died and
    is claimed again. ``replay`` makes the next processing apply the receipt even
    if the order already carries its version (an operator's retry).
    """

    __tablename__ = "receipts"
    __table_args__ = (
        UniqueConstraint("channel", "account", "webhook_id"),
        UniqueConstraint("channel", "account", "topic", "event_id"),
        Index("ix_receipts_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), unique=True)
    channel: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(80))
    webhook_id: Mapped[str | None] = mapped_column(String(255))
    event_id: Mapped[str | None] = mapped_column(String(255))
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="received")
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    replay: Mapped[bool] = mapped_column(default=False)
    outcome: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Customer(Base):
    """A channel's customer, identified by channel, account and the channel's id."""

    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("channel", "account", "channel_customer_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(255))
    channel_customer_id: Mapped[str] = mapped_column(String(255))
    canonical: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class CustomerAddress(Base):
    """An address of a customer, kept once per match key (case and spacing ignored)."""

    __tablename__ = "customer_addresses"
    __table_args__ = (UniqueConstraint("customer_id", "match_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    match_key: Mapped[str] = mapped_column(Text)
    address: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class Order(Base):
    """The latest applied version of a channel order and its lifecycle state.

    ``receipt_id`` is the receipt whose version is applied (not a foreign key, so
    receipts and orders can be written in either order).
    """

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("channel", "account", "channel_order_id"),
        Index("ix_orders_state", "state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), unique=True)
    channel: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(255))
    channel_order_id: Mapped[str] = mapped_column(String(255))
    order_number: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(30))
    source_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    canonical: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    total: Mapped[Decimal | None] = mapped_column(DecimalText)
    currency: Mapped[str | None] = mapped_column(String(3))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    shipping_address_id: Mapped[int | None] = mapped_column(ForeignKey("customer_addresses.id"))
    billing_address_id: Mapped[int | None] = mapped_column(ForeignKey("customer_addresses.id"))
    receipt_id: Mapped[int | None] = mapped_column(Id)
    target: Mapped[str | None] = mapped_column(String(80))
    erp_id: Mapped[str | None] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class OrderHistory(Base):
    """One step in an order's audit trail; ``refused`` marks an illegal transition."""

    __tablename__ = "order_history"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    from_state: Mapped[str | None] = mapped_column(String(30))
    to_state: Mapped[str] = mapped_column(String(30))
    event: Mapped[str] = mapped_column(String(80))
    detail: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(36))
    refused: Mapped[bool] = mapped_column(default=False)


class Delivery(Base):
    """One message waiting for, or sent to, a target.

    ``status`` runs pending → in_flight → done, nothing_to_do or dead. At most one
    pending delivery exists per target, order and action, so later versions of an
    order fold into the one still waiting.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index(
            "uq_deliveries_pending",
            "target",
            "order_id",
            "action",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_deliveries_due", "target", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    target: Mapped[str] = mapped_column(String(80))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ambiguous: Mapped[bool] = mapped_column(default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeadLetter(Base):
    """A message that cannot go on without an operator, with the original input.

    ``receipt_id`` points at the receipt as the channel sent it, so a retry after a
    mapping fix replays it exactly.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_status", "status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(30))
    target: Mapped[str | None] = mapped_column(String(80))
    receipt_id: Mapped[int] = mapped_column(ForeignKey("receipts.id"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    reason: Mapped[str] = mapped_column(Text)
    remedy: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20), default="open")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(120))


class ErpLink(Base):
    """The id in a target of one of entrepot's objects: a customer's party, an address.

    ``key`` is entrepot's own key of the object (the channel's customer id, or the
    party and an address match key), so a renamed customer still finds its party. A
    row without ``erp_id`` is a claim: one worker is creating the object, and its
    claim runs out at ``claimed_until`` if that worker dies.
    """

    __tablename__ = "erp_links"
    __table_args__ = (UniqueConstraint("target", "kind", "key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    target: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(400))
    erp_id: Mapped[str | None] = mapped_column(String(255))
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class PollCursor(Base):
    """How far a poller has read a source that has no webhooks, such as an ERP."""

    __tablename__ = "poll_cursors"

    source: Mapped[str] = mapped_column(String(160), primary_key=True)
    position: Mapped[str] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class ErpEvent(Base):
    """A fact read back from a target (a shipment done, an invoice posted), kept once.

    The unique key on ``target``, ``kind`` and ``erp_key`` makes a poll that reads
    the same record twice record it once.
    """

    __tablename__ = "erp_events"
    __table_args__ = (UniqueConstraint("target", "kind", "erp_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    target: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(40))
    erp_key: Mapped[str] = mapped_column(String(255))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class InventoryPosition(Base):
    """The stock of one item at one location of a target, as last read."""

    __tablename__ = "inventory_positions"
    __table_args__ = (UniqueConstraint("target", "sku", "location"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    target: Mapped[str] = mapped_column(String(80))
    sku: Mapped[str] = mapped_column(String(255))
    location: Mapped[str] = mapped_column(String(80))
    on_hand: Mapped[Decimal] = mapped_column(DecimalText)
    forecast: Mapped[Decimal] = mapped_column(DecimalText)
    observed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class ChannelPush(Base):
    """A change to send back to a channel: a fulfillment, an inventory level.

    ``status`` runs pending → in_flight → done or dead, with leases as deliveries
    have. At most one push per channel, account, kind and key is pending, so a newer
    inventory level folds into the one still waiting instead of queueing behind it.
    """

    __tablename__ = "channel_pushes"
    __table_args__ = (
        Index(
            "uq_channel_pushes_pending",
            "channel",
            "account",
            "kind",
            "key",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_channel_pushes_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxEvent(Base):
    """A business event, written in the transaction of the change that caused it.

    ``subject_seq`` numbers the events of one subject (aggregate) from 1, so their
    order is kept whatever the bus. ``published_at`` is set once the relay has
    handed the event to the bus; until then the relay sends it again.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("event_id"),
        UniqueConstraint("subject", "subject_seq"),
        Index("ix_outbox_events_unpublished", "published_at", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(400))
    subject_seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(80), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, index=True)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EventSubscription(Base):
    """A durable subscriber of the database bus and the event types it takes."""

    __tablename__ = "event_subscriptions"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    types: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class EventDelivery(Base):
    """One event on its way to one subscriber of the database bus, with leases as
    deliveries to targets have."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber", "outbox_id"),
        Index("ix_event_deliveries_due", "subscriber", "status", "next_attempt_at"),
        Index("ix_event_deliveries_subject", "subscriber", "subject", "status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(120))
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    subject: Mapped[str] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # How many times a worker claimed it; unlike attempts, never set back.
    claims: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set by a replay or a retry that found the delivery in flight: once it ends, the
    # event goes to the subscriber again.
    resend_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class InboxEntry(Base):
    """An event a subscriber has handled, kept so that a second delivery does nothing."""

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("subscriber", "event_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(120))
    event_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(400))
    outcome: Mapped[str] = mapped_column(String(40))
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class SubjectPosition(Base):
    """The newest source version of a subject that a subscriber has applied."""

    __tablename__ = "subject_positions"

    subscriber: Mapped[str] = mapped_column(String(120), primary_key=True)
    subject: Mapped[str] = mapped_column(String(400), primary_key=True)
    source_version: Mapped[str] = mapped_column(String(80))
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class EventDeadLetter(Base):
    """An event a subscriber could not handle, with the reason and the event itself.

    ``status`` runs open → retried or discarded, with who did it. ``source_key``
    names the bus message a dead letter was copied from, on buses that keep dead
    letters of their own (NATS), so that copying it again keeps one row.
    """

    __tablename__ = "event_dead_letters"
    __table_args__ = (
        Index("ix_event_dead_letters_status", "status"),
        Index("ux_event_dead_letters_source_key", "source_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(120))
    event_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(400))
    type: Mapped[str] = mapped_column(String(80))
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="open")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(120))
    source_key: Mapped[str | None] = mapped_column(String(300))
