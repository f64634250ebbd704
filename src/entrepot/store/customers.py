"""Customers and their addresses, each stored once whatever the race."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.canonical import Address, SalesOrder
from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import Customer, CustomerAddress
from entrepot.store.types import utc_now


@dataclass(frozen=True)
class CustomerLink:
    """Store ids of an order's customer and addresses (None where absent)."""

    customer_id: int | None = None
    shipping_address_id: int | None = None
    billing_address_id: int | None = None


def upsert_order_customer(session: Session, order: SalesOrder) -> CustomerLink:
    """Insert or update the order's customer and its addresses.

    The customer is keyed by the channel's own id, so a renamed customer stays the
    same customer. Addresses are keyed by `Address.match_key`, so "12 Main St" and
    "12 main st " are one address.
    """
    customer = order.customer
    if customer is None:
        return CustomerLink()
    system = f"{order.channel}:{order.channel_account}"
    channel_customer_id = customer.external_id_for(system) or customer.external_ids[0].id

    row = _upsert_customer_row(session, order, channel_customer_id)
    return CustomerLink(
        customer_id=row.id,
        shipping_address_id=_address_id(session, row.id, order.shipping_address),
        billing_address_id=_address_id(session, row.id, order.billing_address),
    )


def _upsert_customer_row(
    session: Session, order: SalesOrder, channel_customer_id: str
) -> Customer:
    assert order.customer is not None
    canonical = order.customer.model_dump(mode="json")
    key = {
        "channel": order.channel,
        "account": order.channel_account,
        "channel_customer_id": channel_customer_id,
    }
    now = utc_now()
    existing = select(Customer).filter_by(**key).with_for_update()
    row = session.scalars(existing).first()
    if row is None:
        # A racing insert of the same customer makes this one do nothing.
        insert_if_absent(
            session,
            Customer.__table__,  # type: ignore[arg-type]
            {**key, "canonical": canonical, "created_at": now, "updated_at": now},
            list(key),
        )
        row = session.scalars(existing).one()
    if row.canonical != canonical:
        row.canonical = canonical
        row.updated_at = now
    return row


def _address_id(session: Session, customer_id: int, address: Address | None) -> int | None:
    if address is None:
        return None
    key = address.match_key()
    existing = select(CustomerAddress.id).filter_by(customer_id=customer_id, match_key=key)
    address_id = session.scalars(existing).first()
    if address_id is not None:
        return address_id
    insert_if_absent(
        session,
        CustomerAddress.__table__,  # type: ignore[arg-type]
        {
            "customer_id": customer_id,
            "match_key": key,
            "address": address.model_dump(mode="json"),
            "created_at": utc_now(),
        },
        ["customer_id", "match_key"],
    )
    return session.scalars(existing).one()
