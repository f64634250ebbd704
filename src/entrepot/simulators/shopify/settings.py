"""Options of the Shopify Admin API simulator."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_SHOP = "acme-fasteners.myshopify.com"
DEFAULT_API_VERSION = "2024-10"

_API_VERSION = re.compile(r"\d{4}-\d{2}|unstable")
_SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")


@dataclass(frozen=True)
class ShopSettings:
    """One simulated shop: its domain, the app's access token and its rate limit.

    ``bucket_size`` and ``leak_rate`` (requests per second) are the REST Admin API's
    leaky bucket for the app on this shop: 40 and 2 on Shopify's standard plans.
    ``retry_after`` is the Retry-After value, in seconds, sent with every 429.
    """

    domain: str = DEFAULT_SHOP
    access_token: str = field(default="shpat_simulator", repr=False)
    bucket_size: int = 40
    leak_rate: float = 2.0
    retry_after: float = 2.0

    def __post_init__(self) -> None:
        if not _SHOP_DOMAIN.fullmatch(self.domain):
            raise ValueError(
                f"shop domain must look like 'name.myshopify.com', got {self.domain!r}"
            )
        if not self.access_token:
            raise ValueError("access_token must not be empty")
        if self.bucket_size < 1:
            raise ValueError(f"bucket_size must be at least 1, got {self.bucket_size}")
        if self.leak_rate <= 0:
            raise ValueError(f"leak_rate must be positive, got {self.leak_rate}")
        if self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {self.retry_after}")


@dataclass(frozen=True)
class ShopifySimSettings:
    """Address, API version and shops of the simulator.

    The first shop in ``shops`` is the default shop, which serves requests to
    ``/admin/api/...`` without a ``/shops/{domain}`` prefix.
    """

    host: str = "127.0.0.1"
    port: int = 8091
    api_version: str = DEFAULT_API_VERSION
    shops: tuple[ShopSettings, ...] = (ShopSettings(),)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if not _API_VERSION.fullmatch(self.api_version):
            raise ValueError(
                f"api_version must look like '2024-10' or be 'unstable', got {self.api_version!r}"
            )
        if not self.shops:
            raise ValueError("shops must name at least one shop")
        domains = [shop.domain for shop in self.shops]
        if len(set(domains)) != len(domains):
            raise ValueError(f"shop domains must be unique, got {domains}")
