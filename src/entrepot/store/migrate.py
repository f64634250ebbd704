"""Bring a database to the newest schema with Alembic."""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config

from entrepot.store.database import Database

log = logging.getLogger(__name__)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "entrepot.store:migrations")
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade_to_head(database: Database) -> None:
    """Apply every migration not yet applied, in one transaction.

    Several processes starting at once are safe: on SQLite the write lock makes
    them wait for each other, and the later ones find nothing left to do.
    """
    config = alembic_config(database.url)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    log.debug("Database schema is up to date.")
