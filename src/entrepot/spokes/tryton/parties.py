"""Customers as Tryton parties, and their addresses, each created once.

A party is found by the identifier that entrepot gives it (channel, shop and the
channel's customer id), first through the link kept in entrepot's store, then by
searching Tryton, and only then created. A renamed customer keeps its party. An
address is reused when it matches one of the party's addresses but for case and
spacing, so "12 main st " does not make a second address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from entrepot.canonical import Address, SalesOrder
from entrepot.spokes.failures import RetryLater
from entrepot.spokes.tryton.references import ReferenceData
from entrepot.spokes.tryton.rpc import TrytonRpc
from entrepot.store import erp_links
from entrepot.store.database import Database

log = logging.getLogger(__name__)

PARTY = "party"
ADDRESS = "address"
CLAIM_SECONDS = 60.0
CLAIM_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # seconds between looks at another's claim


@dataclass
class OrderParty:
    """The party of an order and the addresses to invoice and ship to.

    ``notes`` are remarks for operators, such as an address that needs review.
    """

    party: int
    invoice_address: int
    shipment_address: int
    notes: list[str] = field(default_factory=list)


class PartyDirectory:
    """Finds or creates the party and addresses of each order."""

    def __init__(
        self,
        target: str,
        rpc: TrytonRpc,
        references: ReferenceData,
        database: Database,
        owner: str,
    ) -> None:
        self._target = target
        self._rpc = rpc
        self._references = references
        self._database = database
        self._owner = owner
        self._locks: dict[str, asyncio.Lock] = {}
        self._create_lock = asyncio.Lock()

    async def for_order(self, order: SalesOrder, guest_party: int | None) -> OrderParty:
        """Return the order's party and addresses, creating what Tryton lacks."""
        key = order.customer_external_id
        if key is None:
            if guest_party is None:
                raise ValueError("an order without a customer needs a guest party")
            return await self._with_addresses(guest_party, order)
        async with self._locks.setdefault(key, asyncio.Lock()):
            party = await self._party(key, order)
            return await self._with_addresses(party, order)

    async def party_of(self, key: str) -> int | None:
        """Return the party linked to ``key``, if entrepot has linked one."""
        linked = await asyncio.to_thread(self._linked, PARTY, key)
        return int(linked) if linked is not None else None

    async def _party(self, key: str, order: SalesOrder) -> int:
        linked = await self.party_of(key)
        if linked is not None:
            return linked
        for wait in (*CLAIM_WAITS, None):
            if await asyncio.to_thread(self._claim, PARTY, key):
                try:
                    party = await self._find_party(key) or await self._create_party(key, order)
                except BaseException:
                    # Let another worker try at once instead of after the claim runs out.
                    await asyncio.to_thread(self._release, PARTY, key)
                    raise
                await asyncio.to_thread(self._settle, PARTY, key, str(party))
                return party
            if wait is None:
                break
            await asyncio.sleep(wait)
            linked = await self.party_of(key)
            if linked is not None:
                return linked
        raise RetryLater("another worker is creating this customer's party in Tryton")

    async def _find_party(self, key: str) -> int | None:
        rows = await self._rpc.model(
            "party.identifier", "search_read", [["code", "=", key]], 0, 1, None, ["party"]
        )
        return int(rows[0]["party"]) if rows else None

    async def _create_party(self, key: str, order: SalesOrder) -> int:
        customer = order.customer
        assert customer is not None
        values: dict[str, Any] = {
            "name": customer.display_name,
            "identifiers": [["create", [{"code": key}]]],
        }
        contacts = [
            {"type": kind, "value": value}
            for kind, value in (("email", customer.email), ("phone", customer.phone))
            if value
        ]
        if contacts:
            values["contact_mechanisms"] = [["create", contacts]]
        # One party at a time: Tryton numbers parties from a sequence that two
        # concurrent creates can draw the same number from.
        async with self._create_lock:
            (party,) = await self._rpc.model("party.party", "create", [values])
        log.info("Created party %d in %s for a new customer.", party, self._target)
        return int(party)

    async def _with_addresses(self, party: int, order: SalesOrder) -> OrderParty:
        notes: list[str] = []
        shipping = order.shipping_address or order.billing_address
        billing = order.billing_address or order.shipping_address
        if shipping is None or billing is None:
            address = await self._any_address(party)
            return OrderParty(party, address, address, notes)
        shipment_address = await self._address(party, shipping, notes)
        invoice_address = (
            shipment_address
            if _match_key(billing) == _match_key(shipping)
            else await self._address(party, billing, notes)
        )
        return OrderParty(party, invoice_address, shipment_address, notes)

    async def _address(self, party: int, address: Address, notes: list[str]) -> int:
        key = f"{party}:{_digest(_match_key(address))}"
        linked = await asyncio.to_thread(self._linked, ADDRESS, key)
        if linked is not None:
            return int(linked)
        existing = await self._matching_address(party, address)
        found = (
            existing if existing is not None else await self._create_address(party, address, notes)
        )
        await asyncio.to_thread(self._settle, ADDRESS, key, str(found))
        return found

    async def _matching_address(self, party: int, address: Address) -> int | None:
        rows = await self._rpc.model(
            "party.address",
            "search_read",
            [["party", "=", party]],
            0,
            None,
            None,
            ["party_name", "street", "city", "postal_code", "country.code", "subdivision.code"],
        )
        wanted = _match_key(address)
        for row in rows:
            if _match_key(_address_from_row(row)) == wanted:
                return int(row["id"])
        return None

    async def _create_address(self, party: int, address: Address, notes: list[str]) -> int:
        values: dict[str, Any] = {
            "party": party,
            "party_name": address.name or address.company,
            "street": "\n".join(part for part in (address.line1, address.line2) if part),
            "city": address.city,
            "postal_code": address.postal_code,
        }
        country_code = address.country_code
        country = await self._references.country(country_code) if country_code else None
        if country_code and country is None:
            notes.append(f"address needs review: country {country_code!r} is unknown in Tryton")
        if country is not None and country_code:
            values["country"] = country
            subdivision = await self._references.subdivision(
                country, country_code, address.region_code, address.region
            )
            if subdivision is not None:
                values["subdivision"] = subdivision
            elif address.region_code or address.region:
                region = address.region_code or address.region
                notes.append(
                    f"address needs review: region {region!r} of {country_code} "
                    "is unknown in Tryton, so the address has none"
                )
        (created,) = await self._rpc.model("party.address", "create", [values])
        return int(created)

    async def _any_address(self, party: int) -> int:
        ids = await self._rpc.model("party.address", "search", [["party", "=", party]], 0, 1, None)
        if ids:
            return int(ids[0])
        (created,) = await self._rpc.model("party.address", "create", [{"party": party}])
        return int(created)

    def _linked(self, kind: str, key: str) -> str | None:
        with self._database.read() as session:
            return erp_links.linked_id(session, self._target, kind, key)

    def _claim(self, kind: str, key: str) -> bool:
        return self._database.write(
            lambda session: erp_links.claim(
                session, self._target, kind, key, self._owner, CLAIM_SECONDS
            )
        )

    def _release(self, kind: str, key: str) -> None:
        self._database.write(
            lambda session: erp_links.release(session, self._target, kind, key, self._owner)
        )

    def _settle(self, kind: str, key: str, erp_id: str) -> None:
        self._database.write(
            lambda session: erp_links.settle(session, self._target, kind, key, erp_id)
        )


def _address_from_row(row: dict[str, Any]) -> Address:
    """Read a Tryton address back into the fields that make its match key."""
    lines = (row.get("street") or "").split("\n", 1)
    subdivision = row.get("subdivision.") or {}
    country = row.get("country.") or {}
    region_code = subdivision.get("code")
    return Address(
        name=row.get("party_name") or None,
        line1=lines[0] or None,
        line2=lines[1] if len(lines) > 1 else None,
        city=row.get("city"),
        region_code=region_code.split("-", 1)[-1] if region_code else None,
        postal_code=row.get("postal_code"),
        country_code=country.get("code"),
    )


def _match_key(address: Address) -> str:
    """Key addresses by what Tryton keeps of them, ignoring case and spacing.

    The region is left out: Tryton may hold an address without its subdivision when
    it does not know the region's code.
    """
    name = address.name or address.company
    kept = Address(
        name=name,
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )
    return kept.match_key()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
