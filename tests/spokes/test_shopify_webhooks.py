"""Shopify webhook signatures, checked alone and through the HTTP endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from entrepot.config import ShopifySettings, ShopSettings
from entrepot.spokes.protocols import WebhookRejected
from entrepot.spokes.shopify.webhooks import sign, verify_webhook
from entrepot.store.tables import Receipt
from tests.harness import SECRET, SHOP, example_order, hub_settings, running_hub, webhook_headers

BODY = json.dumps(example_order()).encode()


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def secrets(*values: str) -> object:
    return lambda shop: list(values)


def test_valid_signature_accepted() -> None:
    headers = lower(webhook_headers(BODY, webhook_id="w-1", event_id="e-1"))
    envelope = verify_webhook(headers, BODY, secrets(SECRET))  # type: ignore[arg-type]
    assert envelope.account == SHOP
    assert envelope.topic == "orders/create"
    assert envelope.webhook_id == "w-1"
    assert envelope.event_id == "e-1"
    assert "x-shopify-hmac-sha256" not in envelope.headers


def test_signature_is_base64_hmac_sha256() -> None:
    # From `printf '{}' | openssl dgst -sha256 -hmac secret -binary | base64`.
    assert sign(b"{}", "secret") == "dzJZAsrKgS3CWXM6rNBGtzgXNyx3e42VtAJkdHRRbhM="


def test_tampered_body_rejected() -> None:
    headers = lower(webhook_headers(BODY))
    tampered = BODY.replace(b'"29.00"', b'"2.90"', 1)
    assert tampered != BODY
    with pytest.raises(WebhookRejected, match="invalid X-Shopify-Hmac-Sha256"):
        verify_webhook(headers, tampered, secrets(SECRET))  # type: ignore[arg-type]


def test_wrong_secret_rejected() -> None:
    headers = lower(webhook_headers(BODY, secret="someone-else"))
    with pytest.raises(WebhookRejected) as raised:
        verify_webhook(headers, BODY, secrets(SECRET))  # type: ignore[arg-type]
    assert raised.value.status_code == 401


def test_missing_signature_header_rejected() -> None:
    headers = lower(webhook_headers(BODY))
    del headers["x-shopify-hmac-sha256"]
    with pytest.raises(WebhookRejected, match="missing X-Shopify-Hmac-Sha256"):
        verify_webhook(headers, BODY, secrets(SECRET))  # type: ignore[arg-type]


def test_missing_shop_header_rejected() -> None:
    headers = lower(webhook_headers(BODY))
    del headers["x-shopify-shop-domain"]
    with pytest.raises(WebhookRejected, match="missing X-Shopify-Shop-Domain"):
        verify_webhook(headers, BODY, secrets(SECRET))  # type: ignore[arg-type]


def test_rotated_secret_accepted() -> None:
    old_signature = lower(webhook_headers(BODY, secret="old-secret"))
    new_signature = lower(webhook_headers(BODY, secret="new-secret"))
    both = secrets("new-secret", "old-secret")
    assert verify_webhook(old_signature, BODY, both).account == SHOP  # type: ignore[arg-type]
    assert verify_webhook(new_signature, BODY, both).account == SHOP  # type: ignore[arg-type]


def test_unknown_shop_rejected() -> None:
    headers = lower(webhook_headers(BODY))
    with pytest.raises(WebhookRejected, match="no webhook secret"):
        verify_webhook(headers, BODY, secrets())  # type: ignore[arg-type]


def test_shop_secret_overrides_app_secret() -> None:
    settings = ShopifySettings(
        webhook_secret=SecretStr(SECRET),
        shops={"Own-Shop.myshopify.com": ShopSettings(webhook_secret=SecretStr("shop-secret"))},
    )
    assert settings.secrets_for("own-shop.myshopify.com") == ["shop-secret"]
    assert settings.secrets_for("OWN-SHOP.myshopify.com") == ["shop-secret"]
    assert settings.secrets_for(SHOP) == [SECRET]


@pytest.mark.parametrize(
    ("case", "status"),
    [("tampered", 401), ("wrong_secret", 401), ("missing_header", 401)],
)
async def test_rejected_webhook_stores_nothing(tmp_path: Path, case: str, status: int) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    async with running_hub(settings, workers=False) as hub:
        headers = webhook_headers(BODY, secret="wrong" if case == "wrong_secret" else SECRET)
        body = BODY.replace(b"ACME", b"EVIL") if case == "tampered" else BODY
        if case == "missing_header":
            del headers["X-Shopify-Hmac-Sha256"]
        response = await hub.client.post("/webhooks/shopify", content=body, headers=headers)

        assert response.status_code == status
        with hub.runtime.database.read() as session:
            assert session.scalar(select(func.count()).select_from(Receipt)) == 0


async def test_valid_webhook_stored_with_correlation_id(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    async with running_hub(settings, workers=False) as hub:
        response = await hub.post_webhook(BODY, webhook_id="w-9", event_id="e-9")

        assert response.status_code == 200
        correlation_id = response.json()["correlation_id"]
        assert response.headers["x-correlation-id"] == correlation_id
        with hub.runtime.database.read() as session:
            receipt = session.scalars(select(Receipt)).one()
        assert receipt.correlation_id == correlation_id
        assert receipt.body == BODY
        assert receipt.webhook_id == "w-9"
        assert receipt.headers["x-shopify-topic"] == "orders/create"
