"""notify workers on PostgreSQL

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:00:00

Triggers that send a NOTIFY when there is new work: a receipt to process, a
delivery or a channel push to send, an outbox event to publish. The notification
goes out when the writing transaction commits, and never if it rolls back.
PostgreSQL delivers one notification per channel and payload per transaction,
however many rows the transaction wrote. SQLite has no NOTIFY, so on SQLite this
revision changes nothing and workers find new work by polling.

The channel names are repeated in entrepot.store.notify, which listens on them.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (table, trigger function, channel, payload, status that makes a row work again)
_TRIGGERS = (
    ("receipts", "entrepot_notify_receipt", "entrepot_receipts", "''", "received"),
    ("deliveries", "entrepot_notify_delivery", "entrepot_deliveries", "NEW.target", "pending"),
    ("channel_pushes", "entrepot_notify_push", "entrepot_pushes", "''", "pending"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, function, channel, payload, status in _TRIGGERS:
        _create_function(function, channel, payload)
        # A new row that is waiting, and a row that goes back to waiting: a replayed
        # receipt, a delivery put back or rescheduled.
        op.execute(
            f"CREATE TRIGGER {function}_insert AFTER INSERT ON {table} FOR EACH ROW "
            f"WHEN (NEW.status = '{status}') EXECUTE FUNCTION {function}()"
        )
        op.execute(
            f"CREATE TRIGGER {function}_update AFTER UPDATE OF status ON {table} FOR EACH ROW "
            f"WHEN (NEW.status = '{status}' AND OLD.status <> '{status}') "
            f"EXECUTE FUNCTION {function}()"
        )
    _create_function("entrepot_notify_outbox", "entrepot_outbox", "''")
    op.execute(
        "CREATE TRIGGER entrepot_notify_outbox_insert AFTER INSERT ON outbox_events "
        "FOR EACH ROW EXECUTE FUNCTION entrepot_notify_outbox()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER entrepot_notify_outbox_insert ON outbox_events")
    op.execute("DROP FUNCTION entrepot_notify_outbox()")
    for table, function, _channel, _payload, _status in reversed(_TRIGGERS):
        op.execute(f"DROP TRIGGER {function}_update ON {table}")
        op.execute(f"DROP TRIGGER {function}_insert ON {table}")
        op.execute(f"DROP FUNCTION {function}()")


def _create_function(name: str, channel: str, payload: str) -> None:
    op.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n"
        f"    PERFORM pg_notify('{channel}', {payload});\n"
        f"    RETURN NULL;\n"
        f"END\n"
        f"$$"
    )
