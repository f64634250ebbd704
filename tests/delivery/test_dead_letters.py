"""Dead letters: refused data, exhausted attempts, and what operators do with them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from entrepot.cli import app
from tests.harness import ErpSim, hub_settings, order_body, running_hub, wait_until


def unknown_sku_order(number: int) -> dict[str, object]:
    body = order_body(number)
    body["line_items"][0]["sku"] = "ACME-NOT-IN-ERP"
    return body


async def test_erp_refusal_dead_letters_at_once(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(unknown_sku_order(9201), webhook_id="w-9201")
        await hub.wait_drained()
        view = await hub.order("9201")

    assert view["state"] == "rejected"
    assert view["deliveries"][0]["attempts"] == 1
    assert view["deliveries"][0]["status"] == "dead"
    [dead_letter] = view["dead_letters"]
    assert dead_letter["stage"] == "delivery"
    assert dead_letter["kind"] == "permanent"
    assert dead_letter["error_code"] == "INVALID_KEY_OR_REF"
    assert "ACME-NOT-IN-ERP" in dead_letter["reason"]
    assert "item.items[0].item" in dead_letter["reason"]
    assert "Create the item in the ERP" in dead_letter["remedy"]


async def test_retry_after_fix_replays_original(tmp_path: Path, erp: ErpSim) -> None:
    body = unknown_sku_order(9202)
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(body, webhook_id="w-9202")
        await hub.wait_drained()
        [dead_letter] = (await hub.client.get("/api/dead-letters")).json()
        shown = (await hub.client.get(f"/api/dead-letters/{dead_letter['id']}")).json()

        erp.add_items("ACME-NOT-IN-ERP")
        retried = await hub.client.post(
            f"/api/dead-letters/{dead_letter['id']}/retry", json={"by": "ops-alice"}
        )
        await wait_until(lambda: _state_is(hub, "9202", "accepted"), message="accepted")
        again = await hub.client.post(
            f"/api/dead-letters/{dead_letter['id']}/retry", json={"by": "ops-bob"}
        )
        view = await hub.order("9202")

    assert json.loads(shown["original_body"]) == body
    assert retried.status_code == 200
    assert retried.json()["status"] == "retried"
    assert retried.json()["resolved_by"] == "ops-alice"
    assert again.status_code == 409
    assert view["erp_id"] is not None
    assert "dead letter 1 retried by ops-alice" in [step["event"] for step in view["history"]]
    [posted] = erp.orders()
    assert posted["lines"][0]["sku"] == "ACME-NOT-IN-ERP"


async def test_attempts_exhausted_then_retried_from_cli(tmp_path: Path, erp: ErpSim) -> None:
    erp.fault(kind="unavailable", seconds=60)
    settings = hub_settings(tmp_path, erp.url, max_attempts=3)
    async with running_hub(settings) as hub:
        await hub.post_webhook(order_body(9203), webhook_id="w-9203")
        await hub.wait_drained()
        dead = await hub.order("9203")

        erp.admin.delete("/_sim/faults").raise_for_status()
        runner = CliRunner()
        data_dir = str(settings.store.data_dir)
        listed = runner.invoke(app, ["dlq", "list", "--json", "--data-dir", data_dir])
        retried = runner.invoke(
            app, ["dlq", "retry", "1", "--data-dir", data_dir, "--by", "ops-carol"]
        )
        await wait_until(lambda: _state_is(hub, "9203", "accepted"), message="accepted")

    assert dead["state"] == "dead_lettered"
    assert dead["deliveries"][0]["attempts"] == 3
    [dead_letter] = dead["dead_letters"]
    assert dead_letter["kind"] == "attempts_exhausted"
    assert "3 attempts failed" in dead_letter["reason"]
    assert "503" in dead_letter["reason"]
    assert listed.exit_code == 0
    assert [item["kind"] for item in json.loads(listed.output)] == ["attempts_exhausted"]
    assert retried.exit_code == 0, retried.output
    assert "Dead letter 1 queued for replay." in retried.output


async def test_discard_keeps_state_and_records_who(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url)
    async with running_hub(settings) as hub:
        await hub.post_webhook(unknown_sku_order(9204), webhook_id="w-9204")
        await hub.wait_drained()
        runner = CliRunner()
        data_dir = str(settings.store.data_dir)
        discarded = runner.invoke(
            app, ["dlq", "discard", "1", "--data-dir", data_dir, "--by", "ops-dan"]
        )
        twice = runner.invoke(app, ["dlq", "discard", "1", "--data-dir", data_dir])
        shown = runner.invoke(app, ["dlq", "show", "1", "--data-dir", data_dir])
        view = await hub.order("9204")

    assert discarded.exit_code == 0, discarded.output
    assert twice.exit_code == 1
    assert "already discarded by ops-dan" in twice.output
    assert json.loads(shown.output)["status"] == "discarded"
    assert view["state"] == "rejected"
    assert view["dead_letters"][0]["resolved_by"] == "ops-dan"


async def _state_is(hub: object, key: str, state: str) -> bool:
    view = await hub.order(key)  # type: ignore[attr-defined]
    return bool(view.get("state") == state)


async def test_order_without_customer_needs_guest(tmp_path: Path, erp: ErpSim) -> None:
    body = order_body(9205)
    del body["customer"]
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(body, webhook_id="w-9205")
        await hub.wait_drained()
        refused = await hub.order("9205")

    assert refused["state"] == "rejected"
    assert refused["dead_letters"][0]["error_code"] == "MISSING_CUSTOMER"
    assert "guest_customer" in refused["dead_letters"][0]["remedy"]
    assert erp.requests() == []


async def test_order_without_customer_posts_to_guest(tmp_path: Path, erp: ErpSim) -> None:
    erp.admin.put(
        "/services/rest/record/v1/customer/eid:guest", json={"companyName": "Web guests"}
    ).raise_for_status()
    body = order_body(9206)
    del body["customer"]
    settings = hub_settings(tmp_path, erp.url, guest_customer="guest")
    async with running_hub(settings) as hub:
        await hub.post_webhook(body, webhook_id="w-9206")
        await hub.wait_drained()
        view = await hub.order("9206")

    assert view["state"] == "accepted"
    assert erp.orders()[0]["entity"]["externalId"] == "guest"


async def test_later_success_resolves_dead_letter(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(unknown_sku_order(9207), webhook_id="w-1")
        await hub.wait_drained()
        fixed = order_body(9207, updated_at="2025-03-03T10:00:00-08:00")
        await hub.post_webhook(fixed, topic="orders/updated", webhook_id="w-2")
        await hub.wait_drained()
        view = await hub.order("9207")
        still_open = (await hub.client.get("/api/dead-letters")).json()

    assert view["state"] == "accepted"
    assert view["dead_letters"][0]["status"] == "resolved"
    assert view["dead_letters"][0]["resolved_by"].startswith("entrepot: delivery 2")
    assert still_open == []


async def test_huge_retry_after_capped(tmp_path: Path, erp: ErpSim) -> None:
    erp.fault(kind="throttle", count=1, retry_after=100000)
    settings = hub_settings(tmp_path, erp.url, backoff_max_seconds=1)
    async with running_hub(settings) as hub:
        await hub.post_webhook(order_body(9208), webhook_id="w-1")
        await hub.wait_drained(within=15)
        view = await hub.order("9208")

    assert view["state"] == "accepted"
