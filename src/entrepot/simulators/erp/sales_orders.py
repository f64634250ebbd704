"""Wire format of the salesOrder record: validation of request bodies and rendering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pycountry

from entrepot.simulators.erp.errors import ErrorCode, ErrorDetail, bad_request
from entrepot.simulators.erp.payload import (
    invalid_value,
    missing_value,
    read_decimal,
    read_object,
    read_reference,
    read_required_string,
    require_object,
)

PENDING_FULFILLMENT = "pendingFulfillment"
CANCELLED = "cancelled"

# NetSuite's orderStatus ids for the two statuses the simulator models.
_STATUS_BY_ORDER_STATUS_ID = {"B": PENDING_FULFILLMENT, "C": CANCELLED}

# Body-level numbers that are checked to be numbers. Only shippingCost and taxTotal
# enter the computed total.
_ORDER_NUMBERS = ("shippingCost", "taxTotal", "discountTotal", "total")


@dataclass(frozen=True)
class OrderReferences:
    """Stored data about the records that a sales order body references.

    ``address_labels`` is None when the customer does not exist.
    """

    address_labels: frozenset[str] | None
    known_skus: frozenset[str]


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: Decimal
    rate: Decimal | None
    amount: Decimal | None

    @property
    def effective_amount(self) -> Decimal:
        """Return the line amount as sent, or quantity × rate when the line has none."""
        if self.amount is not None:
            return self.amount
        return self.quantity * (self.rate if self.rate is not None else Decimal(0))


@dataclass(frozen=True)
class SalesOrderDraft:
    """Validated sales order. ``fields`` is the request body, stored as sent."""

    external_id: str
    customer_external_id: str
    currency: str
    ship_address_label: str | None
    lines: tuple[OrderLine, ...]
    shipping_cost: Decimal
    tax_total: Decimal
    client_total: Decimal | None
    status: str
    fields: dict[str, Any]

    @property
    def total(self) -> Decimal:
        """Return Σ line amounts + shippingCost + taxTotal, with missing values as 0."""
        lines = sum((line.effective_amount for line in self.lines), Decimal(0))
        return lines + self.shipping_cost + self.tax_total

    def summary(self) -> dict[str, Any]:
        """Return the fields that GET /_sim/orders lists besides the stored columns."""
        return {
            "otherRefNum": self.fields.get("otherRefNum"),
            "currency": self.currency,
            "shipAddressList": self.ship_address_label,
            "lines": [
                {
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "rate": line.rate,
                    "amount": line.effective_amount,
                }
                for line in self.lines
            ],
            "shippingCost": self.shipping_cost,
            "taxTotal": self.tax_total,
        }


@dataclass(frozen=True)
class StoredOrder:
    """Sales order as stored. ``fields`` is the body of the last create or upsert."""

    id: int
    external_id: str
    customer_id: int
    customer_external_id: str
    status: str
    total: Decimal
    client_total: Decimal | None
    fields: dict[str, Any]
    summary: dict[str, Any]
    write_count: int
    created_at: str
    updated_at: str


def order_to_record(order: StoredOrder) -> dict[str, Any]:
    """Render a stored order for GET: its fields plus the values the simulator keeps.

    ``total`` is the simulator's computed total, and ``clientTotal`` the total the
    client sent. ``writeCount`` counts the creates and upserts that wrote the order.
    """
    record = dict(order.fields)
    record.update(
        id=str(order.id),
        externalId=order.external_id,
        entity={"id": str(order.customer_id), "externalId": order.customer_external_id},
        status=order.status,
        total=order.total,
        clientTotal=order.client_total,
        writeCount=order.write_count,
    )
    return record


def order_to_summary(order: StoredOrder) -> dict[str, Any]:
    """Render a stored order for GET /_sim/orders."""
    return {
        "id": str(order.id),
        "externalId": order.external_id,
        "entity": {"id": str(order.customer_id), "externalId": order.customer_external_id},
        **order.summary,
        "total": order.total,
        "clientTotal": order.client_total,
        "status": order.status,
        "writeCount": order.write_count,
        "createdAt": order.created_at,
        "updatedAt": order.updated_at,
    }


def referenced_keys(body: object) -> tuple[str | None, list[str]]:
    """Return the customer external id and the SKUs a body references, without validating.

    These are the keys to look up before `parse_sales_order` runs.
    """
    if not isinstance(body, dict):
        return None, []

    entity = body.get("entity")
    customer = entity.get("externalId") if isinstance(entity, dict) else None
    sublist = body.get("item")
    lines = sublist.get("items") if isinstance(sublist, dict) else None

    skus = []
    for line in lines if isinstance(lines, list) else []:
        item = line.get("item") if isinstance(line, dict) else None
        sku = item.get("externalId") if isinstance(item, dict) else None
        if isinstance(sku, str):
            skus.append(sku)
    return (customer if isinstance(customer, str) else None), skus


def parse_sales_order(
    body: object,
    url_external_id: str | None,
    references: OrderReferences,
    currencies: frozenset[str] | None,
) -> SalesOrderDraft:
    """Validate a create or upsert body, raising one 400 error that lists every problem.

    ``url_external_id`` is the external id of an upsert URL, and None for a create,
    whose body must carry the external id.
    """
    fields = require_object(body)
    details: list[ErrorDetail] = []

    external_id = _read_external_id(fields, url_external_id, details)
    customer = read_reference(fields, "entity", "externalId", "entity", details)
    if customer and references.address_labels is None:
        details.append(_invalid_reference("entity", "customer", customer))
    currency = _read_currency(fields, currencies, details)
    lines = _read_lines(fields, references.known_skus, details)
    label = _read_ship_address(fields, references.address_labels, details)
    numbers = {name: read_decimal(fields, name, name, details) for name in _ORDER_NUMBERS}
    status = _read_status(fields, details)

    if details:
        raise bad_request(details)
    return SalesOrderDraft(
        external_id=external_id,
        customer_external_id=customer,
        currency=currency,
        ship_address_label=label,
        lines=lines,
        shipping_cost=numbers["shippingCost"] or Decimal(0),
        tax_total=numbers["taxTotal"] or Decimal(0),
        client_total=numbers["total"],
        status=status,
        fields={**fields, "externalId": external_id},
    )


def parse_status_patch(body: object) -> str:
    """Validate a PATCH body, which the simulator supports only for cancelling.

    Returns the new status. Raises a 400 error for any other change.
    """
    fields = require_object(body)
    details: list[ErrorDetail] = []

    other_fields = sorted(set(fields) - {"orderStatus"})
    if other_fields:
        details.append(
            ErrorDetail(
                f"The simulator's PATCH changes only orderStatus, not {', '.join(other_fields)}."
                " Send a PUT upsert with the whole order to change other fields.",
                ErrorCode.INVALID_FLD_VALUE,
                other_fields[0],
            )
        )
    status = PENDING_FULFILLMENT
    if "orderStatus" not in fields:
        details.append(missing_value("orderStatus"))
    else:
        status = _read_status(fields, [])
        if status != CANCELLED:
            expected = '{"id": "C"} (cancelled)'
            details.append(invalid_value("orderStatus", expected, fields["orderStatus"]))

    if details:
        raise bad_request(details)
    return status


def _read_external_id(
    fields: Mapping[str, Any], url_external_id: str | None, details: list[ErrorDetail]
) -> str:
    if url_external_id is None:
        return read_required_string(fields, "externalId", "externalId", details)

    sent = fields.get("externalId")
    if sent is not None and sent != url_external_id:
        details.append(invalid_value("externalId", f"'{url_external_id}' as in the URL", sent))
    return url_external_id


def _read_currency(
    fields: Mapping[str, Any], currencies: frozenset[str] | None, details: list[ErrorDetail]
) -> str:
    code = read_reference(fields, "currency", "refName", "currency", details)
    if code and not _is_known_currency(code, currencies):
        details.append(_invalid_reference("currency", "currency", code))
    return code


def _is_known_currency(code: str, currencies: frozenset[str] | None) -> bool:
    if currencies is not None:
        return code in currencies
    return code.isupper() and pycountry.currencies.get(alpha_3=code) is not None


def _read_lines(
    fields: Mapping[str, Any], known_skus: frozenset[str], details: list[ErrorDetail]
) -> tuple[OrderLine, ...]:
    sublist = read_object(fields, "item", "item", details)
    items = sublist.get("items") if sublist is not None else None
    if not isinstance(items, list) or not items:
        details.append(
            ErrorDetail(
                "You must enter at least one line item for this transaction.",
                ErrorCode.USER_ERROR,
                "item",
            )
        )
        return ()

    lines = []
    for index, entry in enumerate(items):
        line = _read_line(entry, f"item.items[{index}]", known_skus, details)
        if line is not None:
            lines.append(line)
    return tuple(lines)


def _read_line(
    entry: object, path: str, known_skus: frozenset[str], details: list[ErrorDetail]
) -> OrderLine | None:
    if not isinstance(entry, dict):
        details.append(invalid_value(path, "a JSON object", entry))
        return None

    sku = read_reference(entry, "item", "externalId", f"{path}.item", details)
    if sku and sku not in known_skus:
        details.append(_invalid_reference(f"{path}.item", "item", sku))

    quantity = read_decimal(entry, "quantity", f"{path}.quantity", details)
    if quantity is None and entry.get("quantity") is None:
        details.append(missing_value(f"{path}.quantity"))
    elif quantity is not None and quantity <= 0:
        details.append(invalid_value(f"{path}.quantity", "a number greater than 0", quantity))

    rate = read_decimal(entry, "rate", f"{path}.rate", details)
    amount = read_decimal(entry, "amount", f"{path}.amount", details)
    read_decimal(entry, "taxAmount", f"{path}.taxAmount", details)

    if not sku or quantity is None:
        return None
    return OrderLine(sku, quantity, rate, amount)


def _read_ship_address(
    fields: Mapping[str, Any], labels: frozenset[str] | None, details: list[ErrorDetail]
) -> str | None:
    if fields.get("shipAddressList") is None:
        return None

    label = read_reference(fields, "shipAddressList", "refName", "shipAddressList", details)
    # An unknown customer is reported on "entity", so its labels are not checked.
    if label and labels is not None and label not in labels:
        details.append(_invalid_reference("shipAddressList", "address book entry", label))
    return label or None


def _read_status(fields: Mapping[str, Any], details: list[ErrorDetail]) -> str:
    order_status = fields.get("orderStatus")
    if order_status is None:
        return PENDING_FULFILLMENT

    status_id = order_status.get("id") if isinstance(order_status, dict) else None
    status = _STATUS_BY_ORDER_STATUS_ID.get(status_id) if isinstance(status_id, str) else None
    if status is None:
        expected = '{"id": "B"} (pending fulfillment) or {"id": "C"} (cancelled)'
        details.append(invalid_value("orderStatus", expected, order_status))
        return PENDING_FULFILLMENT
    return status


def _invalid_reference(path: str, record_name: str, key: str) -> ErrorDetail:
    return ErrorDetail(
        f"Invalid {path} reference key '{key}': no {record_name} with this key exists.",
        ErrorCode.INVALID_KEY_OR_REF,
        path,
    )
