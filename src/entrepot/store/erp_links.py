"""Links from entrepot's objects to their ids in a target, created once whatever the race.

A worker about to create an object in a target first claims its link. The unique
key makes one claim win; the others wait for the id the winner writes. A claim
whose worker died runs out and can be taken over.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import ErpLink
from entrepot.store.types import utc_now


def linked_id(session: Session, target: str, kind: str, key: str) -> str | None:
    """Return the target's id for ``key``, or None if it has none yet."""
    return session.scalars(
        select(ErpLink.erp_id).where(
            ErpLink.target == target, ErpLink.kind == kind, ErpLink.key == key
        )
    ).first()


def claim(session: Session, target: str, kind: str, key: str, owner: str, seconds: float) -> bool:
    """Claim the right to create the object of ``key``; return whether this owner has it.

    The claim is taken when no link exists, when the owner has it already, or when
    another owner's claim has run out without an id.
    """
    now = utc_now()
    until = now + timedelta(seconds=seconds)
    values = {
        "target": target,
        "kind": kind,
        "key": key,
        "claimed_by": owner,
        "claimed_until": until,
        "created_at": now,
        "updated_at": now,
    }
    if insert_if_absent(session, ErpLink.__table__, values, ["target", "kind", "key"]):  # type: ignore[arg-type]
        return True
    taken = session.execute(
        update(ErpLink)
        .where(ErpLink.target == target, ErpLink.kind == kind, ErpLink.key == key)
        .where(ErpLink.erp_id.is_(None))
        .where(or_(ErpLink.claimed_by == owner, ErpLink.claimed_until < now))
        .values(claimed_by=owner, claimed_until=until, updated_at=now)
    )
    return bool(getattr(taken, "rowcount", 0))


def settle(session: Session, target: str, kind: str, key: str, erp_id: str) -> None:
    """Write the target's id for ``key``, creating the link if no claim made it."""
    now = utc_now()
    values = {
        "target": target,
        "kind": kind,
        "key": key,
        "erp_id": erp_id,
        "created_at": now,
        "updated_at": now,
    }
    if insert_if_absent(session, ErpLink.__table__, values, ["target", "kind", "key"]):  # type: ignore[arg-type]
        return
    session.execute(
        update(ErpLink)
        .where(ErpLink.target == target, ErpLink.kind == kind, ErpLink.key == key)
        .values(erp_id=erp_id, claimed_by=None, claimed_until=None, updated_at=now)
    )


def release(session: Session, target: str, kind: str, key: str, owner: str) -> None:
    """Give up this owner's claim on ``key``, if it still has one without an id."""
    session.execute(
        delete(ErpLink)
        .where(ErpLink.target == target, ErpLink.kind == kind, ErpLink.key == key)
        .where(ErpLink.erp_id.is_(None), ErpLink.claimed_by == owner)
    )
