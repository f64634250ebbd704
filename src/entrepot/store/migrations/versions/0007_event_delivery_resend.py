"""event deliveries sent again once their delivery in flight ends, and claim counts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 09:00:00

A replay or a dead-letter retry that finds a delivery of the database bus in
flight cannot put it back while a worker holds it. ``resend_requested`` records
the request instead: when that delivery ends, whatever its outcome, it goes back
to pending with no attempts used, so the subscriber is handed the event again as
it would be on NATS.

Because a replay sets attempts back to 0, they no longer tell one claim of a
delivery from a later one. ``claims`` counts the claims and is never set back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("resend_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("claims", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.drop_column("claims")
        batch_op.drop_column("resend_requested")
