"""Serve the HTTP API with uvicorn, with the workers in the same process."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from entrepot.api.app import create_app
from entrepot.config import Settings
from entrepot.runtime import Runtime

log = logging.getLogger(__name__)


async def serve(runtime: Runtime, *, with_workers: bool = True) -> None:
    """Serve until the process gets SIGINT or SIGTERM; the app's lifespan stops the
    workers first."""
    settings = runtime.settings
    warn_about_exposure(settings)
    config = uvicorn.Config(
        create_app(runtime, run_workers=with_workers),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
    )
    await uvicorn.Server(config).serve()


def warn_about_exposure(settings: Settings) -> None:
    """Log the settings that leave webhooks or the operations API unusable or open."""
    shopify = settings.shopify
    if shopify.webhook_secret is None and not shopify.shops:
        log.warning(
            "No Shopify webhook secret is configured, so every Shopify webhook "
            "will be rejected with 401; set [shopify] webhook_secret."
        )
    if settings.api.token is None and not _is_loopback(settings.server.host):
        log.warning(
            "The operations API on %s has no token, so anyone who reaches it can "
            "read orders and retry dead letters; set [api] token.",
            settings.server.host,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
