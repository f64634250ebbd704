"""The operations API takes a bearer token when one is configured; webhooks do not."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from entrepot.config import ApiSettings
from tests.harness import hub_settings, order_body, running_hub


async def test_token_required_when_configured(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    settings.api = ApiSettings(token=SecretStr("ops-token"))
    async with running_hub(settings, workers=False) as hub:
        webhook = await hub.post_webhook(order_body(9701), webhook_id="w-1")
        anonymous = await hub.client.get("/api/orders")
        wrong = await hub.client.get("/api/orders", headers={"Authorization": "Bearer nope"})
        allowed = await hub.client.get(
            "/api/orders", headers={"Authorization": "Bearer ops-token"}
        )
        retry = await hub.client.post("/api/dead-letters/1/retry", json={"by": "x"})
        health = await hub.client.get("/healthz")

    assert webhook.status_code == 200
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert retry.status_code == 401
    assert health.status_code == 200


async def test_open_without_token(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path, "http://127.0.0.1:9"), workers=False) as hub:
        response = await hub.client.get("/api/summary")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer ops-token", 200),
        ("bearer ops-token", 200),
        ("BEARER ops-token", 200),
        ("Bearer   ops-token", 200),
        ("Basic ops-token", 401),
        ("Bearerops-token", 401),
        ("Bearer", 401),
        ("ops-token", 401),
        ("Bearer ops-token2", 401),
        ("bearer OPS-TOKEN", 401),
    ],
)
async def test_bearer_scheme_case_insensitive(
    tmp_path: Path, authorization: str, status: int
) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    settings.api = ApiSettings(token=SecretStr("ops-token"))
    async with running_hub(settings, workers=False) as hub:
        response = await hub.client.get("/api/orders", headers={"Authorization": authorization})
    assert response.status_code == status
