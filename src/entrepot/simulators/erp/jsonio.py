"""JSON that keeps money exact: Decimals in, Decimals out as plain JSON numbers."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.responses import JSONResponse


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid JSON number")


def parse_json(text: bytes | str) -> Any:
    """Parse JSON, reading every number with a fraction or exponent as a Decimal.

    Raises ValueError on invalid JSON and on the non-standard NaN and Infinity literals.
    """
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def render_json(value: Any) -> bytes:
    """Serialize ``value`` as compact UTF-8 JSON, writing each Decimal with all its digits.

    ``json.dumps`` cannot write a Decimal as a number, so this walks dicts, lists and
    tuples itself and leaves every other value to ``json.dumps``.
    """
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode()


def _encode(value: Any, parts: list[str]) -> None:
    if isinstance(value, Decimal):
        parts.append(_decimal_text(value))
    elif isinstance(value, dict):
        _encode_object(value, parts)
    elif isinstance(value, list | tuple):
        _encode_array(value, parts)
    else:
        parts.append(json.dumps(value, ensure_ascii=False, allow_nan=False))


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} cannot be written as a JSON number")

    # str() of a finite Decimal is always a valid JSON number, such as 25.30 or 1E+2.
    return str(value)


def _encode_object(value: dict[Any, Any], parts: list[str]) -> None:
    parts.append("{")
    for index, (key, item) in enumerate(value.items()):
        if index:
            parts.append(",")
        parts.append(json.dumps(str(key), ensure_ascii=False))
        parts.append(":")
        _encode(item, parts)
    parts.append("}")


def _encode_array(value: list[Any] | tuple[Any, ...], parts: list[str]) -> None:
    parts.append("[")
    for index, item in enumerate(value):
        if index:
            parts.append(",")
        _encode(item, parts)
    parts.append("]")


class DecimalJSONResponse(JSONResponse):
    """JSON response whose Decimals are written as exact numbers."""

    def render(self, content: Any) -> bytes:
        return render_json(content)
