"""Shopify REST Admin API simulator, in memory.

It serves the parts of the Admin API that entrepot calls, in Shopify's wire
format: orders, fulfillment orders, fulfillments, locations, products with
variants, and inventory levels. Each shop has its own access token and leaky
bucket (40 requests, draining 2 per second by default), reported in
``X-Shopify-Shop-Api-Call-Limit`` and enforced with 429 and Retry-After.

Requests name their shop by a path prefix: ``/shops/{domain}/admin/api/{version}/...``
goes to that shop, and ``/admin/api/{version}/...`` without the prefix goes to the
first configured shop. The control API under ``/_sim/shops/{domain}/`` loads
orders and products and shows what was recorded; see `control_routes`.
"""

from entrepot.simulators.shopify.app import create_app
from entrepot.simulators.shopify.server import running_in_thread, serve
from entrepot.simulators.shopify.settings import ShopifySimSettings, ShopSettings

__all__ = ["ShopSettings", "ShopifySimSettings", "create_app", "running_in_thread", "serve"]
