"""Cursor-based pagination with ``page_info`` tokens and a ``Link`` header.

A token is URL-safe base64 of JSON that contains the direction, the sort key of the
row the page starts after (or before) and the filters of the first request. As on
Shopify, a request with ``page_info`` may add only ``limit`` and ``fields``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from entrepot.simulators.shopify.errors import ShopifyError

DEFAULT_LIMIT = 50
MAX_LIMIT = 250
PAGE_PARAMETERS = frozenset({"page_info", "limit", "fields"})

Row = TypeVar("Row")
SortKey = tuple[float, int] | tuple[int]


@dataclass(frozen=True)
class Cursor:
    """Position of a page: after (``next``) or before (``previous``) ``key``."""

    direction: str
    key: list[float | int]
    filters: dict[str, str]


def invalid_parameter(name: str) -> ShopifyError:
    # NOTE: the wording of Shopify's 400 for a malformed query parameter is a guess.
    return ShopifyError(400, {name: "Invalid value."})


def parse_limit(query: Mapping[str, str]) -> int:
    """Read ``limit``: 50 when absent, else a whole number from 1 to 250."""
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise invalid_parameter("limit")
    return int(raw)


def read_cursor(query: Mapping[str, str]) -> Cursor | None:
    """Decode ``page_info``, or return None for a first page.

    Raises ShopifyError 400 for a token that was not issued here, or when other
    filters come with it.
    """
    token = query.get("page_info")
    if token is None:
        return None
    if set(query) - PAGE_PARAMETERS:
        raise invalid_parameter("page_info")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = Cursor(data["d"], list(data["k"]), dict(data["f"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid_parameter("page_info") from None
    if cursor.direction not in ("next", "previous"):
        raise invalid_parameter("page_info")
    return cursor


def filters_of(query: Mapping[str, str], cursor: Cursor | None) -> dict[str, str]:
    """Return the filters in force: the first request's, carried in the cursor."""
    if cursor is not None:
        return cursor.filters
    return {name: value for name, value in query.items() if name not in PAGE_PARAMETERS}


def paginate(
    rows: Sequence[Row],
    key: Callable[[Row], SortKey],
    limit: int,
    cursor: Cursor | None,
) -> tuple[list[Row], SortKey | None, SortKey | None]:
    """Cut one page from ``rows``, which must be sorted by ``key``.

    Returns the page, the key that the next page starts after and the key that the
    previous page ends before. Each key is None when there is no such page.
    """
    if cursor is None:
        page = list(rows[:limit])
    elif cursor.direction == "next":
        after = tuple(cursor.key)
        page = [row for row in rows if key(row) > after][:limit]
    else:
        before = tuple(cursor.key)
        page = [row for row in rows if key(row) < before][-limit:]
    if not page:
        return page, None, None

    first, last = key(page[0]), key(page[-1])
    has_next = any(key(row) > last for row in rows)
    has_previous = any(key(row) < first for row in rows)
    return page, last if has_next else None, first if has_previous else None


def link_header(
    url: str,
    limit: int,
    filters: dict[str, str],
    next_key: SortKey | None,
    previous_key: SortKey | None,
) -> str | None:
    """Build the ``Link`` header for the neighbours of a page, or None if it has none."""
    links = []
    if previous_key is not None:
        links.append(
            _link(url, limit, Cursor("previous", list(previous_key), filters), "previous")
        )
    if next_key is not None:
        links.append(_link(url, limit, Cursor("next", list(next_key), filters), "next"))
    return ", ".join(links) or None


def _link(url: str, limit: int, cursor: Cursor, relation: str) -> str:
    data = {"d": cursor.direction, "k": cursor.key, "f": cursor.filters}
    raw = json.dumps(data, separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    query = urlencode({"limit": limit, "page_info": token})
    return f'<{url}?{query}>; rel="{relation}"'


def select_fields(body: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """Keep only the comma-separated top-level ``fields`` of a body, when given."""
    if not fields:
        return body
    names = {name.strip() for name in fields.split(",") if name.strip()}
    return {name: value for name, value in body.items() if name in names}
