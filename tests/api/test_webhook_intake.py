"""Webhook intake: under concurrency every acknowledgement is committed and repeats
count, and a body over the size limit or a request missing a header is rejected
before its body is stored."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from entrepot.config import Settings
from entrepot.store.tables import Receipt
from tests.harness import Hub, hub_settings, order_body, running_hub, webhook_headers

NOWHERE = "http://127.0.0.1:9"


async def test_concurrent_webhooks_all_stored(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path, NOWHERE), workers=False) as hub:
        responses = await asyncio.gather(
            *(hub.post_webhook(order_body(n), webhook_id=f"w-{n}") for n in range(60_000, 60_050))
        )
        with hub.runtime.database.read() as session:
            stored = session.scalar(select(func.count()).select_from(Receipt))

    assert [response.status_code for response in responses] == [200] * 50
    assert len({response.json()["correlation_id"] for response in responses}) == 50
    assert stored == 50


async def test_concurrent_repeats_stored_once(tmp_path: Path) -> None:
    body = json.dumps(order_body(60_100)).encode()
    async with running_hub(hub_settings(tmp_path, NOWHERE), workers=False) as hub:
        responses = await asyncio.gather(
            *(hub.post_webhook(body, webhook_id="w-same") for _ in range(50))
        )
        with hub.runtime.database.read() as session:
            receipts = list(session.scalars(select(Receipt)))

    assert [response.status_code for response in responses] == [200] * 50
    assert sorted(response.json()["duplicate"] for response in responses) == [False] + [True] * 49
    assert len({response.json()["correlation_id"] for response in responses}) == 1
    assert len(receipts) == 1
    assert receipts[0].duplicate_count == 49


async def test_failed_commit_acknowledges_nothing(tmp_path: Path) -> None:
    def fail_inserts(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RECEIPTS"):
            raise sqlite3.OperationalError("disk I/O error")

    settings = hub_settings(tmp_path, NOWHERE)
    async with running_hub(settings, workers=False, raise_app_exceptions=False) as hub:
        event.listen(hub.runtime.database.engine, "before_cursor_execute", fail_inserts)
        failed = await hub.post_webhook(order_body(60_200), webhook_id="w-fail")
        event.remove(hub.runtime.database.engine, "before_cursor_execute", fail_inserts)
        retried = await hub.post_webhook(order_body(60_200), webhook_id="w-fail")
        with hub.runtime.database.read() as session:
            stored = session.scalar(select(func.count()).select_from(Receipt))

    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "5"
    assert "nothing was stored" in failed.json()["error"]
    assert retried.status_code == 200
    assert retried.json()["duplicate"] is False
    assert stored == 1


LIMIT = 5_000


def limited_settings(data_dir: Path) -> Settings:
    """Hub settings with a webhook body limit of ``LIMIT`` bytes."""
    settings = hub_settings(data_dir, NOWHERE)
    return settings.model_copy(
        update={"server": settings.server.model_copy(update={"max_body_bytes": LIMIT})}
    )


def padded_order(size: int) -> bytes:
    """Return a valid order body of exactly ``size`` bytes."""
    body = order_body(60_300, note="")
    padding = size - len(json.dumps(body).encode())
    body["note"] = "x" * padding
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


class CountingBody:
    """A request body sent in chunks without a Content-Length; counts the chunks read."""

    def __init__(self, raw: bytes, chunk_size: int) -> None:
        self.chunks = [raw[i : i + chunk_size] for i in range(0, len(raw), chunk_size)]
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


async def stored_receipts(hub: Hub) -> int:
    with hub.runtime.database.read() as session:
        return session.scalar(select(func.count()).select_from(Receipt)) or 0


async def test_body_at_limit_stored(tmp_path: Path) -> None:
    async with running_hub(limited_settings(tmp_path), workers=False) as hub:
        response = await hub.post_webhook(padded_order(LIMIT), webhook_id="w-1")
        stored = await stored_receipts(hub)

    assert response.status_code == 200
    assert stored == 1


async def test_content_length_over_limit_rejected(tmp_path: Path) -> None:
    raw = padded_order(LIMIT + 1)
    async with running_hub(limited_settings(tmp_path), workers=False) as hub:
        response = await hub.post_webhook(raw, webhook_id="w-1")
        stored = await stored_receipts(hub)

    assert response.status_code == 413
    assert response.json() == {"error": f"request body larger than {LIMIT} bytes"}
    assert stored == 0


async def test_streamed_body_over_limit_rejected(tmp_path: Path) -> None:
    raw = padded_order(LIMIT * 20)
    body = CountingBody(raw, 1_000)
    async with running_hub(limited_settings(tmp_path), workers=False) as hub:
        response = await hub.client.post(
            "/webhooks/shopify", content=body, headers=webhook_headers(raw, webhook_id="w-1")
        )
        stored = await stored_receipts(hub)

    assert response.request.headers.get("content-length") is None
    assert response.status_code == 413
    assert response.json() == {"error": f"request body larger than {LIMIT} bytes"}
    # Reading stops at the first chunk past the limit: 6 of 100 chunks.
    assert body.read == LIMIT // 1_000 + 1
    assert stored == 0


async def test_streamed_body_within_limit_stored(tmp_path: Path) -> None:
    raw = padded_order(LIMIT)
    body = CountingBody(raw, 1_000)
    async with running_hub(limited_settings(tmp_path), workers=False) as hub:
        response = await hub.client.post(
            "/webhooks/shopify", content=body, headers=webhook_headers(raw, webhook_id="w-1")
        )
        with hub.runtime.database.read() as session:
            [receipt] = session.scalars(select(Receipt)).all()

    assert response.status_code == 200
    assert body.read == 5
    assert receipt.body == raw


@pytest.mark.parametrize(
    ("header", "status", "error"),
    [
        ("X-Shopify-Topic", 400, "missing X-Shopify-Topic header"),
        ("X-Shopify-Shop-Domain", 401, "missing X-Shopify-Shop-Domain header"),
        ("X-Shopify-Hmac-Sha256", 401, "missing X-Shopify-Hmac-Sha256 header"),
    ],
)
async def test_missing_header_rejected_before_body(
    tmp_path: Path, header: str, status: int, error: str
) -> None:
    raw = padded_order(LIMIT)
    body = CountingBody(raw, 1_000)
    headers = webhook_headers(raw, webhook_id="w-1")
    del headers[header]
    async with running_hub(limited_settings(tmp_path), workers=False) as hub:
        response = await hub.client.post("/webhooks/shopify", content=body, headers=headers)
        stored = await stored_receipts(hub)

    assert response.status_code == status
    assert response.json() == {"error": error}
    assert body.read == 0
    assert stored == 0


async def test_unknown_shop_rejected_before_body(tmp_path: Path) -> None:
    settings = limited_settings(tmp_path)
    settings = settings.model_copy(
        update={"shopify": settings.shopify.model_copy(update={"webhook_secret": None})}
    )
    raw = padded_order(LIMIT)
    body = CountingBody(raw, 1_000)
    async with running_hub(settings, workers=False) as hub:
        response = await hub.client.post(
            "/webhooks/shopify", content=body, headers=webhook_headers(raw, webhook_id="w-1")
        )

    assert response.status_code == 401
    assert response.json() == {
        "error": "no webhook secret is configured for shop 'acme-fasteners.myshopify.com'"
    }
    assert body.read == 0
