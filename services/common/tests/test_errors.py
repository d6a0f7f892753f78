"""Domain errors cross a real server as status + google.rpc details and decode back typed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2

from evalmesh_common import (
    DOMAIN,
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from evalmesh_common.server import ServiceApp, abort_with, error_from_rpc

StartApp = Callable[..., Awaitable[ServiceApp]]
OpenChannel = Callable[[str], grpc.aio.Channel]
Context = grpc.aio.ServicerContext[Any, Any]


class EvaluationNotFound(NotFound):
    default_reason = "EVALUATION_NOT_FOUND"


async def _call_failing(
    start_app: StartApp, open_channel: OpenChannel, error: Exception
) -> grpc.aio.AioRpcError:
    async def fail(request: bytes, context: Context) -> bytes:
        raise error

    app = await start_app({"Fail": grpc.unary_unary_rpc_method_handler(fail)})
    method = open_channel(app.address).unary_unary(f"/{app.services[0]}/Fail", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(b"", timeout=5)
    return caught.value


async def _collect(call: AsyncIterable[bytes], into: list[bytes]) -> None:
    async for chunk in call:
        into.append(chunk)


async def test_invalid_argument_carries_bad_request_field_violations(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    violations = [
        FieldViolation("limits.timeout", "must be between 1s and 900s"),
        FieldViolation("code", "must be at most 1048576 bytes"),
    ]
    rpc_error = await _call_failing(
        start_app, open_channel, InvalidArgument("request is invalid", violations)
    )

    assert rpc_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error.details() == "request is invalid"
    trailers: Any = rpc_error.trailing_metadata()  # aio Metadata; the stubs say otherwise
    (wire,) = [v for k, v in trailers if k == "grpc-status-details-bin"]
    status = status_pb2.Status.FromString(wire)
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("limits.timeout", "must be between 1s and 900s"),
        ("code", "must be at most 1048576 bytes"),
    ]
    decoded = error_from_rpc(rpc_error)
    assert isinstance(decoded, InvalidArgument)
    assert decoded.violations == tuple(violations)
    assert (decoded.reason, decoded.domain) == ("INVALID_ARGUMENT", DOMAIN)


@pytest.mark.parametrize(
    ("error", "code", "decoded_as"),
    [
        (EvaluationNotFound("no such evaluation", metadata={"id": "ev_1"}), "NOT_FOUND", NotFound),
        (AlreadyExists("exists"), "ALREADY_EXISTS", AlreadyExists),
        (
            FailedPrecondition("terminal", reason="TERMINAL"),
            "FAILED_PRECONDITION",
            FailedPrecondition,
        ),
        (Unavailable("database down"), "UNAVAILABLE", Unavailable),
        (PermissionDenied("no"), "PERMISSION_DENIED", PermissionDenied),
        (Unauthenticated("who are you"), "UNAUTHENTICATED", Unauthenticated),
        (Aborted("lost the claim", reason="CLAIM_LOST"), "ABORTED", Aborted),
        (DeadlineExceeded("too slow"), "DEADLINE_EXCEEDED", DeadlineExceeded),
    ],
)
async def test_each_domain_error_maps_to_its_code_and_decodes_to_the_same_error(
    start_app: StartApp,
    open_channel: OpenChannel,
    error: DomainError,
    code: str,
    decoded_as: type[DomainError],
) -> None:
    rpc_error = await _call_failing(start_app, open_channel, error)

    assert rpc_error.code().name == code
    decoded = error_from_rpc(rpc_error)
    assert type(decoded) is decoded_as
    assert (decoded.message, decoded.reason) == (error.message, error.reason)
    assert (decoded.domain, decoded.metadata) == (DOMAIN, error.metadata)


async def test_resource_exhausted_carries_its_retry_delay(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    error = ResourceExhausted("too many evaluations", retry_after=1.5, reason="RATE_LIMITED")
    rpc_error = await _call_failing(start_app, open_channel, error)

    decoded = error_from_rpc(rpc_error)
    assert isinstance(decoded, ResourceExhausted)
    assert (decoded.retry_after, decoded.reason) == (1.5, "RATE_LIMITED")


async def test_unexpected_exception_becomes_internal_without_leaking_details(
    start_app: StartApp, open_channel: OpenChannel, caplog: pytest.LogCaptureFixture
) -> None:
    leak = RuntimeError("connection to postgresql://u:hunter2@db failed in /srv/app/repo.py")
    with caplog.at_level(logging.ERROR, logger="evalmesh_common.server.interceptor"):
        rpc_error = await _call_failing(start_app, open_channel, leak)

    assert rpc_error.code() == grpc.StatusCode.INTERNAL
    assert rpc_error.details() == "internal error"
    assert "hunter2" not in repr(rpc_error.trailing_metadata())
    decoded = error_from_rpc(rpc_error)
    assert isinstance(decoded, Internal)
    (record,) = caplog.records
    assert record.exc_info is not None
    assert record.exc_info[1] is leak
    assert record.__dict__["incident_id"] == decoded.metadata["incident_id"]


async def test_streaming_handlers_map_domain_errors_after_partial_output(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    async def generator(request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"chunk"
        raise NotFound("evaluation vanished")

    async def writer(request: bytes, context: Context) -> None:
        await context.write(b"chunk")
        raise Unavailable("nats is down")

    app = await start_app(
        {
            "Generate": grpc.unary_stream_rpc_method_handler(generator),
            "Write": grpc.unary_stream_rpc_method_handler(writer),
        }
    )
    channel = open_channel(app.address)
    for method, code in (("Generate", "NOT_FOUND"), ("Write", "UNAVAILABLE")):
        received: list[bytes] = []

        stream = channel.unary_stream(f"/{app.services[0]}/{method}", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(stream(b"", timeout=5), received)
        assert received == [b"chunk"]
        assert caught.value.code().name == code
        assert error_from_rpc(caught.value).reason == code


async def test_abort_with_sends_the_same_details_from_inside_a_handler(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    async def create(request: bytes, context: Context) -> bytes:
        await abort_with(context, AlreadyExists("duplicate", metadata={"request_id": "r1"}))

    app = await start_app({"Create": grpc.unary_unary_rpc_method_handler(create)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await open_channel(app.address).unary_unary(f"/{app.services[0]}/Create", None, None)(
            b"", timeout=5
        )

    decoded = error_from_rpc(caught.value)
    assert isinstance(decoded, AlreadyExists)
    assert decoded.metadata == {"request_id": "r1"}


async def test_a_status_without_details_still_decodes_by_code(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    async def plain(request: bytes, context: Context) -> bytes:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "try later")

    app = await start_app({"Plain": grpc.unary_unary_rpc_method_handler(plain)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await open_channel(app.address).unary_unary(f"/{app.services[0]}/Plain", None, None)(
            b"", timeout=5
        )

    decoded = error_from_rpc(caught.value)
    assert isinstance(decoded, Unavailable)
    assert (decoded.message, decoded.reason, decoded.domain) == ("try later", "UNAVAILABLE", "")


async def test_an_upstream_services_error_reaches_the_client_with_its_code_and_details(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    async def missing(request: bytes, context: Context) -> bytes:
        raise EvaluationNotFound("evaluation ev_1 not found")

    upstream = await start_app({"Get": grpc.unary_unary_rpc_method_handler(missing)})
    upstream_get = open_channel(upstream.address).unary_unary(
        f"/{upstream.services[0]}/Get", None, None
    )

    async def relay(request: bytes, context: Context) -> bytes:
        result: bytes = await upstream_get(request, timeout=5)
        return result

    edge = await start_app({"Relay": grpc.unary_unary_rpc_method_handler(relay)})
    method = open_channel(edge.address).unary_unary(f"/{edge.services[0]}/Relay", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(b"", timeout=5)

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    error = error_from_rpc(caught.value)
    assert isinstance(error, NotFound)
    assert error.reason == "EVALUATION_NOT_FOUND"
