"""The database schema as SQLAlchemy Core tables; Alembic migrations must match it.

Times are BIGINT microseconds since the Unix epoch (UTC), taken from the database clock: the
same type and the same exact comparisons on SQLite (which has no timestamp type) and
PostgreSQL, and keyset pagination without time-zone or precision surprises.
Output bytes live in ``output_chunks`` so large outputs never bloat ``evaluations``; the
gapless stored prefix of each stream (bytes, next sequence, truncated) is kept on the
evaluation row so progress is one row read.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

__all__ = ["api_keys", "evaluation_labels", "evaluations", "metadata", "output_chunks"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _us(name: str, *, nullable: bool = True) -> Column[int]:
    return Column(name, BigInteger, nullable=nullable)


def _zero(name: str, kind: type[BigInteger] | type[Integer] | type[SmallInteger]) -> Column[int]:
    return Column(name, kind, nullable=False, server_default=text("0"))


def _flag(name: str) -> Column[bool]:
    return Column(name, Boolean, nullable=False, server_default=false())


evaluations = Table(
    "evaluations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("spec_fingerprint", String(64), nullable=False),
    # UTF-8 bytes, not TEXT: PostgreSQL text cannot hold NUL, which a string may contain.
    Column("code", LargeBinary, nullable=False),
    Column("stdin", LargeBinary, nullable=False),
    Column("language", String(32), nullable=False),
    Column("runtime", String(64), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    _us("limit_wall_timeout_us"),
    Column("limit_memory_bytes", BigInteger),
    Column("limit_max_processes", Integer),
    Column("limit_max_output_bytes", BigInteger),
    Column("limit_cpu_millicores", Integer),
    Column("state", SmallInteger, nullable=False),
    _zero("attempt", Integer),
    Column("executor_id", String(256), nullable=False, server_default=""),
    _us("lease_expires_at"),
    _flag("cancel_requested"),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("runtime_digest", String(256), nullable=False, server_default=""),
    _us("applied_wall_timeout_us"),
    Column("applied_memory_bytes", BigInteger),
    Column("applied_max_processes", Integer),
    Column("applied_max_output_bytes", BigInteger),
    Column("applied_cpu_millicores", Integer),
    Column("applied_scratch_bytes", BigInteger),
    _zero("result_cause", SmallInteger),
    _zero("result_fault", SmallInteger),
    Column("result_exit_code", Integer),
    Column("result_signal", Integer),
    Column("result_detail", Text, nullable=False, server_default=""),
    _us("result_wall_time_us"),
    _us("result_cpu_time_us"),
    _zero("result_peak_memory_bytes", BigInteger),
    _zero("stdout_bytes", BigInteger),
    _zero("stderr_bytes", BigInteger),
    _zero("stdout_next_seq", BigInteger),
    _zero("stderr_next_seq", BigInteger),
    _flag("stdout_truncated"),
    _flag("stderr_truncated"),
    _us("create_time", nullable=False),
    _us("start_time"),
    _us("end_time"),
    # The latest attempt's run as its executor measured it, placed after start_time (0003).
    _us("run_start_time"),
    _us("run_end_time"),
    _us("output_stored_time"),
    _us("publish_time"),
    _zero("publish_count", Integer),
    UniqueConstraint("tenant", "request_id"),
    Index("ix_evaluations_listing", "tenant", "create_time", "id"),
    Index("ix_evaluations_queue", "state", "priority", "create_time", "id"),
    Index("ix_evaluations_lease", "state", "lease_expires_at"),
    Index("ix_evaluations_end_time", "end_time"),
    Index("ix_evaluations_state_tenant", "state", "tenant"),
    Index("ix_evaluations_start_time", "start_time"),
)

evaluation_labels = Table(
    "evaluation_labels",
    metadata,
    Column(
        "evaluation_id",
        String(40),
        ForeignKey("evaluations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
    Index("ix_evaluation_labels_pair", "key", "value", "evaluation_id"),
)

output_chunks = Table(
    "output_chunks",
    metadata,
    Column(
        "evaluation_id",
        String(40),
        ForeignKey("evaluations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("stream", SmallInteger, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("byte_offset", BigInteger, nullable=False),
    Column("length", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("role", SmallInteger, nullable=False),
    Column("display_name", String(128), nullable=False, server_default=""),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    _us("create_time", nullable=False),
    _us("revoke_time"),
    Index("ix_api_keys_listing", "tenant", "create_time", "id"),
    Index("ix_api_keys_created", "create_time", "id"),
)
