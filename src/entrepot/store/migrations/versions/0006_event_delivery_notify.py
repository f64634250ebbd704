"""notify subscribers of the database bus on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:00:00

A trigger that sends a NOTIFY on entrepot_event_deliveries, with the subscriber
as payload, when an event delivery becomes pending: a new one from the fan-out,
or one put back by a retry or a replay. It wakes the subscribers of the database
bus in every process, not only in the process whose relay published the event.
PostgreSQL sends one notification per channel and payload per transaction, so a
fan-out of many events wakes each subscriber once. On SQLite this revision
changes nothing.

The channel name is repeated in entrepot.store.notify, which listens on it.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FUNCTION = "entrepot_notify_event_delivery"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "    PERFORM pg_notify('entrepot_event_deliveries', NEW.subscriber);\n"
        "    RETURN NULL;\n"
        "END\n"
        "$$"
    )
    op.execute(
        f"CREATE TRIGGER {FUNCTION}_insert AFTER INSERT ON event_deliveries FOR EACH ROW "
        f"WHEN (NEW.status = 'pending') EXECUTE FUNCTION {FUNCTION}()"
    )
    op.execute(
        f"CREATE TRIGGER {FUNCTION}_update AFTER UPDATE OF status ON event_deliveries "
        "FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending') "
        f"EXECUTE FUNCTION {FUNCTION}()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER {FUNCTION}_update ON event_deliveries")
    op.execute(f"DROP TRIGGER {FUNCTION}_insert ON event_deliveries")
    op.execute(f"DROP FUNCTION {FUNCTION}()")
