"""The Shopify Admin API simulator in a thread, and its control API, for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from entrepot.simulators.shopify import ShopifySimSettings, ShopSettings, running_in_thread
from tests.harness import SHOP

TOKEN = "shpat_tests"


@dataclass
class ShopSim:
    """One simulated shop: where entrepot reaches it, and what it recorded."""

    url: str
    app: Any
    domain: str = SHOP

    @property
    def admin_url(self) -> str:
        return f"{self.url}/shops/{self.domain}"

    @property
    def location_id(self) -> int:
        location: int = self.app.state.sim.shops[self.domain].primary_location_id
        return location

    def shop_settings(self, **extra: Any) -> dict[str, Any]:
        """The ``[shopify.shops."<domain>"]`` settings that point entrepot here."""
        return {"admin_url": self.admin_url, "access_token": TOKEN, **extra}

    def load(self, what: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.url}/_sim/shops/{self.domain}/{what}", json={what: items})
        assert response.status_code == 201, response.text
        loaded: list[dict[str, Any]] = response.json()[what]
        return loaded

    def update_order(self, order_id: int, **changes: Any) -> dict[str, Any]:
        response = httpx.put(
            f"{self.url}/_sim/shops/{self.domain}/orders/{order_id}", json={"order": changes}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()["order"]
        return body

    def recorded(self, what: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/_sim/shops/{self.domain}/{what}")
        found: list[dict[str, Any]] = response.json()[what]
        return found

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/_sim/shops/{self.domain}/stats").json()
        return result


@contextmanager
def running_shop(domain: str = SHOP) -> Iterator[ShopSim]:
    settings = ShopifySimSettings(shops=(ShopSettings(domain=domain, access_token=TOKEN),))
    with running_in_thread(settings) as (url, app):
        yield ShopSim(url, app, domain)
