"""Canonical objects as NetSuite REST records (salesOrder, customer).

Amounts stay Decimal; they are written as JSON numbers with their exact digits.
For orders whose prices include tax, line amounts and shipping are sent without
the tax, so that the ERP's own sum (lines + shipping + taxTotal) equals the
channel's total.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from entrepot.canonical import Address, Customer, OrderLine, SalesOrder

# Custom body fields, as NetSuite names fields that an account adds to a record.
VERSION_FIELD = "custbody_entrepot_version"
PAYMENT_STATUS_FIELD = "custbody_payment_status"


def customer_external_id(order: SalesOrder) -> str | None:
    """Return the ERP external id of the order's customer, if it has one."""
    return order.customer_external_id


def address_label(address: Address) -> str:
    """Return the address book label of an address: equal for addresses that differ
    only in case and spacing, so the ERP keeps one entry for them."""
    digest = hashlib.sha256(address.match_key().encode()).hexdigest()
    return f"addr-{digest[:16]}"


def customer_record(order: SalesOrder) -> dict[str, Any]:
    customer = order.customer
    assert customer is not None
    return {
        "externalId": customer_external_id(order),
        "firstName": customer.first_name,
        "lastName": customer.last_name,
        "companyName": customer.company,
        "email": customer.email,
        "phone": customer.phone,
        "addressBook": {"items": _address_book(order, customer)},
    }


def _address_book(order: SalesOrder, customer: Customer) -> list[dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for address, role in (
        (order.shipping_address, "Shipping"),
        (order.billing_address, "Billing"),
    ):
        if address is None:
            continue
        label = address_label(address)
        entry = entries.setdefault(
            label,
            {
                "label": label,
                "defaultShipping": False,
                "defaultBilling": False,
                "addressBookAddress": _address_fields(address),
            },
        )
        entry[f"default{role}"] = True
    return list(entries.values())


def _address_fields(address: Address) -> dict[str, Any]:
    return {
        "addressee": address.name or address.company,
        "addr1": address.line1,
        "addr2": address.line2,
        "city": address.city,
        "state": address.region_code or address.region,
        "zip": address.postal_code,
        "country": address.country_code,
        "addrPhone": address.phone,
    }


def sales_order_record(order: SalesOrder, guest_customer: str | None = None) -> dict[str, Any]:
    """Build the salesOrder record; ``guest_customer`` is the entity of an order
    without a customer."""
    record: dict[str, Any] = {
        "externalId": order.external_id,
        "otherRefNum": order.order_number,
        "tranDate": order.placed_at.date().isoformat(),
        "currency": {"refName": order.currency},
        "memo": f"{order.channel} order {order.order_number or order.channel_order_id}",
        "item": {"items": [_line(line, order.taxes_included) for line in order.lines]},
        "shippingCost": _shipping_cost(order),
        "taxTotal": order.totals.tax.shop_money.amount,
        "discountTotal": -order.totals.discounts.shop_money.amount,
        "total": order.total.amount,
        VERSION_FIELD: order.source_updated_at.isoformat(),
        PAYMENT_STATUS_FIELD: order.payment.financial_status,
    }
    customer_id = customer_external_id(order)
    if customer_id is not None:
        record["entity"] = {"externalId": customer_id}
        if order.shipping_address is not None:
            record["shipAddressList"] = {"refName": address_label(order.shipping_address)}
    elif guest_customer is not None:
        record["entity"] = {"externalId": guest_customer}
    return record


def _line(line: OrderLine, taxes_included: bool) -> dict[str, Any]:
    tax = line.tax_total.amount
    amount = line.net.amount - tax if taxes_included else line.net.amount
    return {
        "item": {"externalId": line.sku},
        "description": line.title,
        "quantity": line.quantity,
        "rate": line.unit_price.shop_money.amount,
        "amount": amount,
        "taxAmount": tax,
    }


def _shipping_cost(order: SalesOrder) -> Decimal:
    total = Decimal("0")
    for charge in order.shipping:
        total += charge.net.amount
        if order.taxes_included:
            total -= charge.tax_total.amount
    return total
