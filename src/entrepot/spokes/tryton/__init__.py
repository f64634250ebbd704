"""Tryton 8.2 as an ERP: a seeded template database, a local server and, on top,
the JSON-RPC client and the spoke."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from entrepot.config import TargetSettings
    from entrepot.spokes.protocols import RequestGate
    from entrepot.spokes.tryton.spoke import TrytonSpoke
    from entrepot.store.database import Database


def create_spoke(
    name: str, settings: TargetSettings, gate: RequestGate, database: Database
) -> TrytonSpoke:
    """Build the Tryton spoke of target ``name``."""
    from entrepot.spokes.tryton.spoke import TrytonSpoke

    return TrytonSpoke(name, settings, gate, database)
