"""Record where a run's time went, and index claims by time for the activity view.

``run_start_time``, ``run_end_time`` and ``output_stored_time`` are the executor's measured moments
of the latest attempt placed on the database clock (see ``state_machine.complete``);
``ix_evaluations_start_time`` lets ``GetActivity`` find the claims of a window without a scan.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = ("run_start_time", "run_end_time", "output_stored_time")


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as table:
        for name in _COLUMNS:
            table.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
    op.create_index("ix_evaluations_start_time", "evaluations", ["start_time"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_start_time", table_name="evaluations")
    with op.batch_alter_table("evaluations") as table:
        for name in reversed(_COLUMNS):
            table.drop_column(name)
