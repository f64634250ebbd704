"""Readers for fields of JSON request bodies.

Each reader appends an ErrorDetail to ``details`` for a missing or invalid value
instead of raising, so that one 400 response can list every problem of a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from entrepot.simulators.erp.errors import ErrorCode, ErrorDetail, bad_request
from entrepot.simulators.erp.jsonio import render_json


def require_object(body: object) -> dict[str, Any]:
    """Return ``body`` if it is a JSON object, else raise a 400 INVALID_CONTENT error."""
    if isinstance(body, dict):
        return body

    detail = ErrorDetail("The request body must be a JSON object.", ErrorCode.INVALID_CONTENT)
    raise bad_request([detail])


def missing_value(path: str) -> ErrorDetail:
    return ErrorDetail(f"Please enter value(s) for: {path}.", ErrorCode.USER_ERROR, path)


def invalid_value(path: str, expected: str, value: object) -> ErrorDetail:
    return ErrorDetail(
        f"Invalid value {render_json(value).decode()} for {path}: expected {expected}.",
        ErrorCode.INVALID_FLD_VALUE,
        path,
    )


def read_string(
    container: Mapping[str, Any], key: str, path: str, details: list[ErrorDetail]
) -> str | None:
    """Return the string at ``key``, or None when it is missing or null."""
    value = container.get(key)
    if value is None or isinstance(value, str):
        return value

    details.append(invalid_value(path, "a string", value))
    return None


def read_required_string(
    container: Mapping[str, Any], key: str, path: str, details: list[ErrorDetail]
) -> str:
    """Return the non-empty string at ``key``, or "" after reporting why it is not one."""
    value = container.get(key)
    if value is None or value == "":
        details.append(missing_value(path))
        return ""
    if not isinstance(value, str):
        details.append(invalid_value(path, "a string", value))
        return ""
    return value


def read_object(
    container: Mapping[str, Any], key: str, path: str, details: list[ErrorDetail]
) -> dict[str, Any] | None:
    """Return the JSON object at ``key``, or None when it is missing or null."""
    value = container.get(key)
    if value is None or isinstance(value, dict):
        return value

    details.append(invalid_value(path, "a JSON object", value))
    return None


def read_decimal(
    container: Mapping[str, Any], key: str, path: str, details: list[ErrorDetail]
) -> Decimal | None:
    """Return the number at ``key`` as a Decimal, or None when it is missing or null."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)

    details.append(invalid_value(path, "a number", value))
    return None


def read_bool(
    container: Mapping[str, Any], key: str, path: str, details: list[ErrorDetail]
) -> bool | None:
    """Return the boolean at ``key``, or None when it is missing or null."""
    value = container.get(key)
    if value is None or isinstance(value, bool):
        return value

    details.append(invalid_value(path, "true or false", value))
    return None


def read_reference(
    container: Mapping[str, Any],
    key: str,
    field: str,
    path: str,
    details: list[ErrorDetail],
) -> str:
    """Return the key of a referenced record, ``container[key][field]``.

    For example, ``{"entity": {"externalId": "C-1"}}`` with key "entity" and field
    "externalId" gives "C-1". Return "" after reporting a missing or invalid reference.
    """
    reference = read_object(container, key, path, details)
    if reference is None:
        if container.get(key) is None:
            details.append(missing_value(path))
        return ""

    value = reference.get(field)
    if isinstance(value, str) and value:
        return value

    expected = f'an object with a non-empty "{field}" string'
    details.append(invalid_value(path, expected, reference))
    return ""


def check_external_id(
    body: Mapping[str, Any], url_external_id: str, details: list[ErrorDetail]
) -> None:
    """Report an ``externalId`` in the body that differs from the one in the URL."""
    value = body.get("externalId")
    if value is None or value == url_external_id:
        return

    details.append(
        ErrorDetail(
            f"The body's externalId {render_json(value).decode()} differs from the URL's"
            f" '{url_external_id}'."
            " Send the same external ID in both, or leave it out of the body.",
            ErrorCode.INVALID_FLD_VALUE,
            "externalId",
        )
    )
