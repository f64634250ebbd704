"""Item: a thing that is sold, known by its SKU."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from entrepot.canonical.customer import ExternalId

ITEM_SCHEMA_VERSION = 1


class Item(BaseModel):
    """A sellable item."""

    schema_version: Literal[1] = 1
    sku: str = Field(min_length=1)
    title: str | None = None
    external_ids: list[ExternalId] = Field(default_factory=list)
