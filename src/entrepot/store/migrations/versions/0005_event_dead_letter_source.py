"""event dead letters kept from a bus

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 09:00:00

On the NATS bus a dead letter first lands in the dead-letter stream, and the
workers copy it into event_dead_letters. ``source_key`` names the message it
came from (stream, subscriber, stream sequence), so that copying it twice keeps
one row. Dead letters of the database bus leave it empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("event_dead_letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_key", sa.String(length=300), nullable=True))
        batch_op.create_index("ux_event_dead_letters_source_key", ["source_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("event_dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ux_event_dead_letters_source_key")
        batch_op.drop_column("source_key")
