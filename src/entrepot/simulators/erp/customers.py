"""Wire format of the customer record: request bodies in, records out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pycountry

from entrepot.simulators.erp.errors import ErrorDetail, bad_request
from entrepot.simulators.erp.payload import (
    check_external_id,
    invalid_value,
    read_bool,
    read_object,
    read_required_string,
    read_string,
    require_object,
)

CUSTOMER_FIELDS = ("firstName", "lastName", "companyName", "email", "phone")
ADDRESS_FIELDS = ("addressee", "addr1", "addr2", "city", "state", "zip", "country", "addrPhone")


@dataclass(frozen=True)
class AddressDraft:
    """Address book entry of an upsert. None means the request left the value out."""

    label: str
    default_shipping: bool | None
    default_billing: bool | None
    address: dict[str, str | None] | None


@dataclass(frozen=True)
class CustomerDraft:
    """Validated customer upsert. ``fields`` holds only the fields the request sent."""

    external_id: str
    fields: dict[str, str | None]
    addresses: tuple[AddressDraft, ...]


@dataclass(frozen=True)
class StoredAddress:
    id: int
    label: str
    default_shipping: bool
    default_billing: bool
    address: dict[str, str | None]


@dataclass(frozen=True)
class StoredCustomer:
    id: int
    external_id: str
    fields: dict[str, str | None]
    addresses: tuple[StoredAddress, ...]
    write_count: int
    created_at: str
    updated_at: str


def parse_customer(external_id: str, body: object) -> CustomerDraft:
    """Validate an upsert body, raising one 400 error that lists every invalid field."""
    payload = require_object(body)
    details: list[ErrorDetail] = []

    check_external_id(payload, external_id, details)
    fields = _read_strings(payload, CUSTOMER_FIELDS, "", details)
    addresses = _read_address_book(payload, details)

    if details:
        raise bad_request(details)
    return CustomerDraft(external_id, fields, addresses)


def _read_strings(
    container: dict[str, Any], names: tuple[str, ...], prefix: str, details: list[ErrorDetail]
) -> dict[str, str | None]:
    """Return the sent fields among ``names``, with null kept so that it clears a value."""
    values: dict[str, str | None] = {}
    for name in names:
        if name in container:
            values[name] = read_string(container, name, prefix + name, details)
    return values


def _read_address_book(
    payload: dict[str, Any], details: list[ErrorDetail]
) -> tuple[AddressDraft, ...]:
    book = read_object(payload, "addressBook", "addressBook", details)
    if book is None or book.get("items") is None:
        return ()

    items = book["items"]
    if not isinstance(items, list):
        details.append(invalid_value("addressBook.items", "a JSON array", items))
        return ()

    drafts = []
    seen_labels: set[str] = set()
    for index, item in enumerate(items):
        draft = _read_address(item, f"addressBook.items[{index}]", details)
        if draft is None:
            continue
        if draft.label in seen_labels:
            details.append(
                invalid_value(f"addressBook.items[{index}].label", "a unique label", draft.label)
            )
        seen_labels.add(draft.label)
        drafts.append(draft)
    return tuple(drafts)


def _read_address(item: object, path: str, details: list[ErrorDetail]) -> AddressDraft | None:
    if not isinstance(item, dict):
        details.append(invalid_value(path, "a JSON object", item))
        return None

    label = read_required_string(item, "label", f"{path}.label", details)
    shipping = read_bool(item, "defaultShipping", f"{path}.defaultShipping", details)
    billing = read_bool(item, "defaultBilling", f"{path}.defaultBilling", details)

    address_path = f"{path}.addressBookAddress"
    address_object = read_object(item, "addressBookAddress", address_path, details)
    address = None
    if address_object is not None:
        address = _read_strings(address_object, ADDRESS_FIELDS, address_path + ".", details)
        _check_country(address.get("country"), address_path + ".country", details)

    if not label:
        return None
    return AddressDraft(label, shipping, billing, address)


def _check_country(code: str | None, path: str, details: list[ErrorDetail]) -> None:
    if code is None or pycountry.countries.get(alpha_2=code) is not None:
        return
    details.append(invalid_value(path, "an ISO 3166-1 alpha-2 country code such as US", code))


def customer_to_json(customer: StoredCustomer) -> dict[str, Any]:
    """Render a stored customer as NetSuite returns it, leaving out fields never set."""
    record: dict[str, Any] = {"id": str(customer.id), "externalId": customer.external_id}
    record.update(_without_nulls(customer.fields))
    record["addressBook"] = {"items": [_address_to_json(entry) for entry in customer.addresses]}
    return record


def _address_to_json(entry: StoredAddress) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "label": entry.label,
        "defaultShipping": entry.default_shipping,
        "defaultBilling": entry.default_billing,
        "addressBookAddress": _without_nulls(entry.address),
    }


def _without_nulls(values: dict[str, str | None]) -> dict[str, str]:
    return {name: value for name, value in values.items() if value is not None}
