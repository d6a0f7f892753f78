"""Initial schema: evaluations, their labels and output chunks, and API keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _zero(name: str, kind: sa.types.TypeEngine[int]) -> sa.Column[Any]:
    return sa.Column(name, kind, nullable=False, server_default=sa.text("0"))


def _flag(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def _evaluation_columns() -> list[sa.Column[Any]]:
    big, small, integer = sa.BigInteger(), sa.SmallInteger(), sa.Integer()
    columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("spec_fingerprint", sa.String(64), nullable=False),
        sa.Column("code", sa.LargeBinary(), nullable=False),
        sa.Column("stdin", sa.LargeBinary(), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("runtime", sa.String(64), nullable=False),
        sa.Column("priority", small, nullable=False),
        sa.Column("limit_wall_timeout_us", big),
        sa.Column("limit_memory_bytes", big),
        sa.Column("limit_max_processes", integer),
        sa.Column("limit_max_output_bytes", big),
        sa.Column("limit_cpu_millicores", integer),
        sa.Column("state", small, nullable=False),
        _zero("attempt", integer),
        sa.Column("executor_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("lease_expires_at", big),
        _flag("cancel_requested"),
        sa.Column("cancel_reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("runtime_digest", sa.String(256), nullable=False, server_default=""),
        sa.Column("applied_wall_timeout_us", big),
        sa.Column("applied_memory_bytes", big),
        sa.Column("applied_max_processes", integer),
        sa.Column("applied_max_output_bytes", big),
        sa.Column("applied_cpu_millicores", integer),
        sa.Column("applied_scratch_bytes", big),
        _zero("result_cause", small),
        _zero("result_fault", small),
        sa.Column("result_exit_code", integer),
        sa.Column("result_signal", integer),
        sa.Column("result_detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("result_wall_time_us", big),
        sa.Column("result_cpu_time_us", big),
        _zero("result_peak_memory_bytes", big),
        _zero("stdout_bytes", big),
        _zero("stderr_bytes", big),
        _zero("stdout_next_seq", big),
        _zero("stderr_next_seq", big),
        _flag("stdout_truncated"),
        _flag("stderr_truncated"),
        sa.Column("create_time", big, nullable=False),
        sa.Column("start_time", big),
        sa.Column("end_time", big),
        sa.Column("publish_time", big),
        _zero("publish_count", integer),
    ]
    return columns


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "evaluations",
        *_evaluation_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
        sa.UniqueConstraint("tenant", "request_id", name="uq_evaluations_tenant_request_id"),
    )
    op.create_index("ix_evaluations_listing", "evaluations", ["tenant", "create_time", "id"])
    op.create_index(
        "ix_evaluations_queue", "evaluations", ["state", "priority", "create_time", "id"]
    )
    op.create_index("ix_evaluations_lease", "evaluations", ["state", "lease_expires_at"])
    op.create_index("ix_evaluations_end_time", "evaluations", ["end_time"])
    op.create_table(
        "evaluation_labels",
        sa.Column("evaluation_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluations.id"],
            name="fk_evaluation_labels_evaluation_id_evaluations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("evaluation_id", "key", name="pk_evaluation_labels"),
    )
    op.create_index(
        "ix_evaluation_labels_pair", "evaluation_labels", ["key", "value", "evaluation_id"]
    )
    op.create_table(
        "output_chunks",
        sa.Column("evaluation_id", sa.String(40), nullable=False),
        sa.Column("stream", sa.SmallInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_id"],
            ["evaluations.id"],
            name="fk_output_chunks_evaluation_id_evaluations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("evaluation_id", "stream", "seq", name="pk_output_chunks"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("role", sa.SmallInteger(), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("revoke_time", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
    )
    op.create_index("ix_api_keys_listing", "api_keys", ["tenant", "create_time", "id"])
    op.create_index("ix_api_keys_created", "api_keys", ["create_time", "id"])


def downgrade() -> None:
    """Drop everything this revision created."""
    op.drop_table("api_keys")
    op.drop_table("output_chunks")
    op.drop_table("evaluation_labels")
    op.drop_table("evaluations")
