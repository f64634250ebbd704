"""Tryton's reference data that orders point at: products, taxes, currencies, countries.

Each is looked up once and kept for the life of the spoke, since orders name the
same few of them again and again. A code Tryton does not know is not kept, so a
product created in Tryton later is found on the next order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from entrepot.spokes.tryton.rpc import TrytonRpc

SHIPPING_CODE = "ENTREPOT-SHIPPING"
DISCOUNT_CODE = "ENTREPOT-DISCOUNT"
ADJUSTMENT_CODE = "ENTREPOT-ADJUSTMENT"
SERVICE_CODES = (SHIPPING_CODE, DISCOUNT_CODE, ADJUSTMENT_CODE)


@dataclass(frozen=True)
class Product:
    """A salable product: its id and the unit it is sold in."""

    id: int
    unit: int


class ReferenceData:
    """Look-ups of Tryton ids by the codes that canonical orders carry."""

    def __init__(self, rpc: TrytonRpc) -> None:
        self._rpc = rpc
        self._products: dict[str, Product] = {}
        self._currencies: dict[str, int] = {}
        self._countries: dict[str, int] = {}
        self._subdivisions: dict[tuple[int, str], int | None] = {}
        self._taxes: dict[Decimal, int] | None = None
        self._categories: dict[str, int | None] = {}
        self._lock = asyncio.Lock()

    async def products(self, codes: Iterable[str]) -> dict[str, Product]:
        """Return the salable products with these codes; unknown codes are left out."""
        wanted = set(codes)
        missing = sorted(wanted - self._products.keys())
        if missing:
            rows = await self._rpc.model(
                "product.product",
                "search_read",
                [["code", "in", missing], ["salable", "=", True]],
                0,
                None,
                None,
                ["code", "sale_uom"],
            )
            for row in rows:
                self._products[row["code"]] = Product(id=row["id"], unit=row["sale_uom"])
        return {code: self._products[code] for code in wanted if code in self._products}

    async def currency(self, code: str) -> int | None:
        if code not in self._currencies:
            ids = await self._rpc.model(
                "currency.currency", "search", [["code", "=", code]], 0, 1, None
            )
            if not ids:
                return None
            self._currencies[code] = ids[0]
        return self._currencies[code]

    async def country(self, code: str) -> int | None:
        code = code.upper()
        if code not in self._countries:
            ids = await self._rpc.model(
                "country.country", "search", [["code", "=", code]], 0, 1, None
            )
            if not ids:
                return None
            self._countries[code] = ids[0]
        return self._countries[code]

    async def subdivision(
        self, country: int, country_code: str, code: str | None, name: str | None
    ) -> int | None:
        """Find a subdivision by its ISO 3166-2 code, else by its name in ``country``.

        The code wins because names drift (a region renamed on the channel but not
        yet in the ERP); a name is tried only when the channel sent no code.
        """
        if code:
            key = (country, f"{country_code.upper()}-{code.upper()}")
            domain: list[Any] = [["code", "=", key[1]], ["country", "=", country]]
        elif name:
            key = (country, f"name:{name.strip().casefold()}")
            domain = [["name", "ilike", name.strip()], ["country", "=", country]]
        else:
            return None
        if key not in self._subdivisions:
            ids = await self._rpc.model("country.subdivision", "search", domain, 0, 1, None)
            self._subdivisions[key] = ids[0] if ids else None
        return self._subdivisions[key]

    async def tax(self, rate: Decimal) -> int | None:
        """Return the customer tax of percentage ``rate`` (0.06 for 6 %)."""
        async with self._lock:
            if self._taxes is None:
                rows = await self._rpc.model(
                    "account.tax",
                    "search_read",
                    [["type", "=", "percentage"], ["parent", "=", None]],
                    0,
                    None,
                    [["id", "ASC"]],
                    ["rate"],
                )
                self._taxes = {}
                for row in rows:
                    self._taxes.setdefault(Decimal(row["rate"]).normalize(), row["id"])
        return self._taxes.get(rate.normalize())

    async def party_category(self, name: str) -> int | None:
        if name not in self._categories:
            ids = await self._rpc.model(
                "party.category", "search", [["name", "=", name]], 0, 1, None
            )
            self._categories[name] = ids[0] if ids else None
        return self._categories[name]
