"""``Storage``: the one object the servicer calls. Each method is one retried transaction."""

from __future__ import annotations

from collections.abc import Sequence

from evalmesh_storage import (
    activity,
    creation,
    evaluations,
    keys,
    output,
    queue,
    retention,
    state_machine,
)
from evalmesh_storage.creation import NewEvaluation
from evalmesh_storage.db import Database, Tx
from evalmesh_storage.domain import (
    Activity,
    ApiKey,
    Chunk,
    CreatedApiKey,
    Evaluation,
    OutputProgress,
    Page,
    Result,
    Role,
    RunTimings,
    State,
    Stats,
    Stream,
    View,
)
from evalmesh_storage.errors import invalid
from evalmesh_storage.evaluations import ListQuery
from evalmesh_storage.state_machine import Claim
from evalmesh_storage.tokens import PageTokens

__all__ = ["MAX_BATCH", "Storage"]

MAX_BATCH = 1000


class Storage:
    """Evaluations, output and API keys over one :class:`Database`."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    async def ping(self) -> bool:
        """The health probe: True when the database answers ``SELECT 1``."""
        return await self.db.ping()

    async def create_evaluation(self, new: NewEvaluation) -> tuple[Evaluation, bool]:
        """Create (or find the earlier creation of) one evaluation."""
        created = await self.db.write(
            lambda tx: creation.create_evaluations(tx, [new]), "create evaluation"
        )
        return created[0]

    async def batch_create_evaluations(
        self, batch: Sequence[NewEvaluation]
    ) -> list[tuple[Evaluation, bool]]:
        """Create many evaluations in one transaction: all or none."""
        if len(batch) > MAX_BATCH:
            raise invalid("requests", f"at most {MAX_BATCH} per batch")

        names = [f"requests[{index}]." for index in range(len(batch))]
        return await self.db.write(
            lambda tx: creation.create_evaluations(tx, batch, names), "batch create evaluations"
        )

    async def get_evaluation(
        self, evaluation_id: str, tenant: str, view: View, include_queue_position: bool = False
    ) -> Evaluation:
        """Read one evaluation (tenant empty: any tenant)."""
        return await self.db.read(
            lambda tx: evaluations.get_evaluation(
                tx, evaluation_id, tenant, view, include_queue_position
            ),
            "get evaluation",
            point=True,
        )

    async def list_evaluations(self, query: ListQuery) -> Page[Evaluation]:
        """One page of a tenant's evaluations."""
        return await self.db.read(
            lambda tx: evaluations.list_evaluations(tx, query, self.tokens), "list evaluations"
        )

    async def claim(self, evaluation_id: str, claim: Claim) -> Evaluation:
        """QUEUED -> RUNNING for one executor."""
        return await self.db.write(
            lambda tx: state_machine.claim(tx, evaluation_id, claim),
            "claim evaluation",
            durable=False,  # lost to a power cut, the job is simply delivered again
        )

    async def renew_lease(
        self, evaluation_id: str, attempt: int, lease_us: int
    ) -> tuple[int, bool]:
        """Extend a lease; returns (lease end, cancel requested)."""
        return await self.db.write(
            lambda tx: state_machine.renew(tx, evaluation_id, attempt, lease_us),
            "renew lease",
            durable=False,
        )

    async def append_output(
        self, evaluation_id: str, attempt: int, chunks: Sequence[Chunk]
    ) -> OutputProgress:
        """Store output chunks of the running attempt."""
        return await self.db.write(
            lambda tx: output.append_output(tx, evaluation_id, attempt, chunks),
            "append output",
            durable=False,  # the result's durable write flushes it too
        )

    async def read_output(
        self, tenant: str, evaluation_id: str, stream: Stream, offset: int, max_bytes: int
    ) -> tuple[list[Chunk], OutputProgress]:
        """Read stored output from a byte offset."""
        return await self.db.read(
            lambda tx: output.read_output(tx, tenant, evaluation_id, stream, offset, max_bytes),
            "read output",
            point=True,
        )

    async def complete(
        self,
        evaluation_id: str,
        attempt: int,
        state: State,
        result: Result,
        chunks: Sequence[Chunk] = (),
        timings: RunTimings | None = None,
    ) -> Evaluation:
        """Store the attempt's last output chunks and record its terminal result, together."""

        def unit(tx: Tx) -> Evaluation:
            if chunks:
                output.append_output(tx, evaluation_id, attempt, chunks)
            return state_machine.complete(tx, evaluation_id, attempt, state, result, timings)

        return await self.db.write(unit, "complete evaluation")

    async def cancel(
        self, tenant: str, evaluation_id: str, reason: str
    ) -> tuple[Evaluation, State]:
        """Cancel in any state; returns the evaluation and its state before."""
        return await self.db.write(
            lambda tx: state_machine.cancel(tx, tenant, evaluation_id, reason), "cancel evaluation"
        )

    async def requeue(self, evaluation_id: str, attempt: int, reason: str) -> Evaluation:
        """Return a RUNNING evaluation with an expired lease to the queue."""
        return await self.db.write(
            lambda tx: state_machine.requeue(tx, evaluation_id, attempt, reason),
            "requeue evaluation",
            durable=False,  # lost to a power cut, the reaper requeues it again
        )

    async def record_publications(self, ids: Sequence[str]) -> int:
        """Note published jobs; returns how many QUEUED evaluations were updated."""
        return await self.db.write(
            lambda tx: queue.record_publications(tx, ids),
            "record publications",
            durable=False,  # lost to a power cut, the reconciler publishes again
        )

    async def list_unpublished(self, published_before: int | None, limit: int) -> list[Evaluation]:
        """QUEUED evaluations that need publishing, oldest first."""
        return await self.db.read(
            lambda tx: queue.list_unpublished(tx, published_before, limit), "list unpublished"
        )

    async def list_expired_leases(self, limit: int) -> list[Evaluation]:
        """RUNNING evaluations whose lease ended."""
        return await self.db.read(
            lambda tx: queue.list_expired_leases(tx, limit), "list expired leases"
        )

    async def list_queued(
        self, published_before: int, page_size: int, page_token: str
    ) -> tuple[list[Evaluation], str]:
        """One page of published QUEUED evaluations in queue order, and the next page's token."""
        return await self.db.read(
            lambda tx: queue.list_queued(tx, published_before, page_size, page_token, self.tokens),
            "list queued",
        )

    async def list_leases(self, executor_id: str, limit: int) -> list[Evaluation]:
        """The RUNNING evaluations one executor holds."""
        return await self.db.read(
            lambda tx: queue.list_leases(tx, executor_id, limit), "list leases"
        )

    async def stats(self, tenant: str) -> Stats:
        """Counts per state and priority."""
        return await self.db.read(lambda tx: queue.stats(tx, tenant), "stats")

    async def purge(self, end_time_before: int, limit: int) -> int:
        """Delete old terminal evaluations with their output."""
        return await self.db.write(
            lambda tx: retention.purge(tx, end_time_before, limit), "purge evaluations"
        )

    async def activity(self, window_us: int | None, buckets: int) -> Activity:
        """Throughput and queue waits over the last ``window_us`` (default one hour)."""
        window, count = activity.check_window(window_us, buckets)
        return await self.db.read(lambda tx: activity.activity(tx, window, count), "activity")

    async def create_api_key(self, tenant: str, role: Role, display_name: str) -> CreatedApiKey:
        """Create a key; the secret is returned only here."""
        return await self.db.write(
            lambda tx: keys.create_api_key(tx, tenant, role, display_name), "create API key"
        )

    async def list_api_keys(
        self, tenant: str, include_revoked: bool, page_size: int, page_token: str
    ) -> Page[ApiKey]:
        """Page through keys, newest first."""
        return await self.db.read(
            lambda tx: keys.list_api_keys(
                tx, tenant, include_revoked, page_size, page_token, self.tokens
            ),
            "list API keys",
        )

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent)."""
        return await self.db.write(lambda tx: keys.revoke_api_key(tx, key_id), "revoke API key")

    async def authenticate_api_key(self, secret: str) -> ApiKey:
        """The valid key a secret belongs to."""
        return await self.db.read(lambda tx: keys.authenticate(tx, secret), "authenticate")
