"""Customer, with addresses and its id in each system."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CUSTOMER_SCHEMA_VERSION = 1

_SPACES = re.compile(r"\s+")


class ExternalId(BaseModel):
    """The id of an object in one system, such as ``shopify:acme.myshopify.com``."""

    model_config = ConfigDict(frozen=True)

    system: str = Field(min_length=1)
    id: str = Field(min_length=1)


class Address(BaseModel):
    """A postal address. ``country_code`` is ISO 3166-1 alpha-2 and ``region_code`` the
    subdivision part of ISO 3166-2 where the channel sends it."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    company: str | None = None
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    region_code: str | None = None
    postal_code: str | None = None
    country_code: str | None = Field(default=None, min_length=2, max_length=2)
    phone: str | None = None

    def match_key(self) -> str:
        """Return a key equal for addresses that differ only in case and spacing.

        "12 Main St" and "12 main st " give the same key, so a known customer's
        address is reused instead of being stored again.
        """
        parts = (
            self.name,
            self.company,
            self.line1,
            self.line2,
            self.city,
            self.region_code or self.region,
            self.postal_code,
            self.country_code,
        )
        return "|".join(_normalise(part) for part in parts)


def _normalise(text: str | None) -> str:
    return _SPACES.sub(" ", text or "").strip().casefold()


class Customer(BaseModel):
    """A buyer. Personal fields stay out of logs."""

    schema_version: Literal[1] = 1
    external_ids: list[ExternalId] = Field(min_length=1)
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    phone: str | None = None
    tax_exempt: bool = False
    addresses: list[Address] = Field(default_factory=list)

    def external_id_for(self, system: str) -> str | None:
        for external_id in self.external_ids:
            if external_id.system == system:
                return external_id.id
        return None

    @property
    def display_name(self) -> str:
        names = [name for name in (self.first_name, self.last_name) if name]
        return " ".join(names) or self.company or self.email or self.external_ids[0].id
