"""NetSuite: sales orders and customers over the REST record web services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from entrepot.spokes.netsuite.client import NetSuiteSpoke

if TYPE_CHECKING:
    from entrepot.config import TargetSettings
    from entrepot.spokes.protocols import RequestGate
    from entrepot.store.database import Database


def create_spoke(
    name: str, settings: TargetSettings, gate: RequestGate, database: Database
) -> NetSuiteSpoke:
    """Build the spoke; NetSuite keeps its own links by external id, so ``database``
    is not used."""
    return NetSuiteSpoke(name, settings, gate)


__all__ = ["NetSuiteSpoke", "create_spoke"]
