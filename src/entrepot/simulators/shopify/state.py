"""The simulator's shops, looked up by domain."""

from __future__ import annotations

import time
from collections.abc import Callable

from entrepot.simulators.shopify.settings import ShopifySimSettings
from entrepot.simulators.shopify.shop import ShopState

# Shop ids are made up but deterministic: the n-th shop gets FIRST_SHOP_ID + n.
FIRST_SHOP_ID = 60_100_000_001


class SimState:
    """All simulated shops. The first one is the default shop."""

    def __init__(
        self, settings: ShopifySimSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.shops = {
            shop.domain: ShopState(shop, FIRST_SHOP_ID + index, clock)
            for index, shop in enumerate(settings.shops)
        }
        self.default_shop = self.shops[settings.shops[0].domain]

    def shop(self, domain: str | None) -> ShopState | None:
        """Return the shop with ``domain``, the default shop for None, or None."""
        if domain is None:
            return self.default_shop
        return self.shops.get(domain.lower())
