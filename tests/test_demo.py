"""``entrepot demo`` runs its story end to end and reports each order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import example_order, order_body
from tests.tryton.conftest import require_trytond


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrepot", "demo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_demo_story_as_expected() -> None:
    result = run_demo()

    assert result.returncode == 0, result.stderr
    outcomes = {item["order_number"]: item for item in json.loads(result.stdout)}
    assert {number: item["state"] for number, item in outcomes.items()} == {
        "#1001": "accepted",
        "#1002": "accepted",
        "#1003": "rejected",
        "#1004": "accepted",
        "#1005": "accepted",
        "#1006": "cancelled",
        "#1099": "rejected",
    }
    assert outcomes["#1004"]["total"] == "58.45"
    assert outcomes["#1004"]["currency"] == "EUR"
    assert "ACME-DRILL-6" in outcomes["#1003"]["reason"]
    assert outcomes["#1099"]["reason"] == "line_items[0].sku: missing"
    assert all(item["as_expected"] for item in outcomes.values())
    assert outcomes["#1004"]["retries"] >= 1


def test_demo_on_own_orders(tmp_path: Path) -> None:
    for name in ("order-1002", "order-1005"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"order": example_order(name)}))
    result = run_demo("--orders", str(tmp_path))

    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    assert [(item["order_number"], item["state"]) for item in outcomes] == [
        ("#1002", "accepted"),
        ("#1005", "accepted"),
    ]
    assert [item["erp_id"] is not None for item in outcomes] == [True, True]


def test_demo_fails_on_unexpected_outcome(tmp_path: Path) -> None:
    broken = order_body(9501)
    broken["line_items"][0]["quantity"] = 0
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    (tmp_path / "good.json").write_text(json.dumps(order_body(9502)))
    result = run_demo("--orders", str(tmp_path))

    assert result.returncode == 1
    outcomes = {item["channel_order_id"]: item for item in json.loads(result.stdout)}
    assert outcomes["9501"]["state"] == "rejected"
    assert "line_items[0].quantity" in outcomes["9501"]["reason"]
    assert outcomes["9501"]["as_expected"] is False
    assert outcomes["9502"]["state"] == "accepted"


@pytest.mark.slow
def test_demo_on_tryton_ships_an_order_back_to_the_shop() -> None:
    require_trytond()
    result = subprocess.run(
        [sys.executable, "-m", "entrepot", "demo", "--erp", "tryton"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        cells[0]: cells[1]
        for line in result.stdout.splitlines()
        if line.startswith("│ #")
        for cells in [[cell.strip() for cell in line.strip("│").split("│")]]
    }
    assert rows == {
        "#1001": "accepted",
        "#1002": "accepted",
        "#1003": "rejected",
        "#1004": "accepted",
        "#1005": "accepted",
        "#1006": "cancelled",
        "#1099": "rejected",
    }
    assert "unknown SKU 'ACME-DRILL-6'" in result.stdout
    assert "ERP outage: Tryton stopped for 4 s." in result.stdout
    assert "with tracking number 1Z999AA10123456784" in result.stdout
    assert "#1001 is now shipped in entrepot" in result.stdout
