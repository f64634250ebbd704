"""Bring a database to the newest schema with Alembic."""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from entrepot.store.database import Database

log = logging.getLogger(__name__)

# The key of the PostgreSQL advisory lock that migrating processes take turns on.
# Advisory locks are scoped to one database, so only entrepot's own migrations use it.
MIGRATION_LOCK_KEY = 0x656E747265706F74  # "entrepot" in ASCII


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "entrepot.store:migrations")
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade_to_head(database: Database) -> None:
    """Apply every migration not yet applied, in one transaction.

    Several processes starting at once are safe: the write lock on SQLite, and an
    advisory lock on PostgreSQL, make them wait for each other, and the later ones
    find nothing left to do.
    """
    config = alembic_config(database.url)
    with database.engine.begin() as connection:
        if database.is_postgresql:
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.debug("Database schema is up to date.")
