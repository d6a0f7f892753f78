"""Split a batch submission into BatchCreateEvaluations calls and put the replies back in order."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from evalmesh.client._errors import EvalmeshError, FieldViolation
from evalmesh.client._models import Evaluation
from evalmesh.client._requests import Spec, chunk_requests, create_request
from evalmesh.v1 import evaluation_service_pb2

__all__ = ["BatchPlan"]

_REQUEST_INDEX = re.compile(r"^requests\[(\d+)\]")


@dataclasses.dataclass
class BatchPlan:
    """The requests of a batch (request_ids fixed once, so every retry reuses them), cut into
    chunks, and the evaluations each chunk's call returned."""

    chunks: list[list[evaluation_service_pb2.CreateEvaluationRequest]]
    starts: list[int]
    total: int
    evaluations: list[Evaluation | None]

    @classmethod
    def of(cls, specs: Iterable[Spec | str]) -> BatchPlan:
        """Plan the submission of ``specs`` (a str is code with every default)."""
        requests = [create_request(Spec(item) if isinstance(item, str) else item) for item in specs]
        chunks = list(chunk_requests(requests))
        starts = [0]
        for chunk in chunks[:-1]:
            starts.append(starts[-1] + len(chunk))
        return cls(chunks, starts, len(requests), [None] * len(requests))

    def indexes(self) -> range:
        """The chunk numbers."""
        return range(len(self.chunks))

    def request(self, index: int) -> evaluation_service_pb2.BatchCreateEvaluationsRequest:
        """The call for chunk ``index``."""
        return evaluation_service_pb2.BatchCreateEvaluationsRequest(requests=self.chunks[index])

    def store(
        self, index: int, reply: evaluation_service_pb2.BatchCreateEvaluationsResponse
    ) -> int:
        """Keep chunk ``index``'s evaluations in place; return how many there were."""
        start = self.starts[index]
        for offset, message in enumerate(reply.evaluations):
            self.evaluations[start + offset] = Evaluation.from_proto(message)
        return len(reply.evaluations)

    def locate(self, index: int, error: EvalmeshError) -> EvalmeshError:
        """``error`` with its ``requests[i]`` field paths counted over the whole batch."""
        start = self.starts[index]
        if start == 0 or not error.violations:
            return error
        violations = tuple(
            FieldViolation(
                _REQUEST_INDEX.sub(lambda m: f"requests[{int(m.group(1)) + start}]", v.field),
                v.description,
            )
            for v in error.violations
        )
        return type(error)(
            error.message,
            code=error.code,
            reason=error.reason,
            violations=violations,
            retry_after=error.retry_after,
            metadata=error.metadata,
        )

    def results(self) -> list[Evaluation]:
        """Every evaluation, in the order the specs were given."""
        missing = [i for i, item in enumerate(self.evaluations) if item is None]
        if missing:
            raise EvalmeshError(f"the server returned no evaluation for request {missing[0]}")
        return [item for item in self.evaluations if item is not None]
