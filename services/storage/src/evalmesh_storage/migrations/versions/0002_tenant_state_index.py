"""Index evaluations by state and tenant, for the per-tenant share checked at claim time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_evaluations_state_tenant", "evaluations", ["state", "tenant"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_state_tenant", table_name="evaluations")
