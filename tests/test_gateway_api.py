"""The public API through the real gateway: keys, tenants, validation and its protections."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh.v1 import (
    api_key_pb2,
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_common import InvalidArgument
from evalmesh_common.server import error_from_rpc
from evalmesh_deploy.local.mesh import MeshEndpoints

ES = evaluation_service_pb2
MIB = 1024 * 1024


@dataclass
class Api:
    """Stubs on one channel to the gateway."""

    channel: grpc.Channel
    evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub
    cluster: cluster_service_pb2_grpc.ClusterServiceStub
    keys: api_key_service_pb2_grpc.ApiKeyServiceStub


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def api(mesh: MeshEndpoints) -> Iterator[Api]:
    channel = grpc.insecure_channel(mesh.services["gateway"])
    yield Api(
        channel,
        evaluation_service_pb2_grpc.EvaluationServiceStub(channel),
        cluster_service_pb2_grpc.ClusterServiceStub(channel),
        api_key_service_pb2_grpc.ApiKeyServiceStub(channel),
    )
    channel.close()


def new_key(api: Api, admin: str, tenant: str, role: int = api_key_pb2.ROLE_USER) -> str:
    request = api_key_service_pb2.CreateApiKeyRequest(tenant=tenant, role=role)  # type: ignore[arg-type]
    reply = api.keys.CreateApiKey(request, metadata=auth(admin), timeout=10)
    return str(reply.secret)


@pytest.fixture(scope="module")
def tenants(api: Api, mesh: MeshEndpoints) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {
        "alpha": new_key(api, mesh.admin_api_key, f"alpha-{suffix}"),
        "beta": new_key(api, mesh.admin_api_key, f"beta-{suffix}"),
    }


def create(
    api: Api, key: str, code: str = "print(1)", request_id: str | None = None, **spec: Any
) -> ES.CreateEvaluationResponse:
    request = ES.CreateEvaluationRequest(
        request_id=request_id or uuid.uuid4().hex,
        spec=evaluation_pb2.EvaluationSpec(code=code, **spec),
    )
    reply: ES.CreateEvaluationResponse = api.evaluations.CreateEvaluation(
        request, metadata=auth(key), timeout=10
    )
    return reply


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def failing(method: Callable[..., object], request: object, **options: Any) -> grpc.RpcError:
    """The error ``method(request, **options)`` fails with (for a stream: its first message)."""
    with pytest.raises(grpc.RpcError) as raised:
        _first(method(request, **options))
    return raised.value


def _first(result: object) -> object:
    return next(result) if isinstance(result, Iterator) else result


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    return error.code()


def count(api: Api, key: str, label: str) -> int:
    request = ES.ListEvaluationsRequest(labels={"run": label}, page_size=500)
    return len(api.evaluations.ListEvaluations(request, metadata=auth(key), timeout=10).evaluations)


def test_a_repeated_request_id_returns_the_same_evaluation(
    api: Api, tenants: dict[str, str]
) -> None:
    first = create(api, tenants["alpha"], request_id="same-1")
    again = create(api, tenants["alpha"], request_id="same-1")
    assert first.created
    assert not again.created
    assert first.evaluation.id == again.evaluation.id
    got = api.evaluations.GetEvaluation(
        ES.GetEvaluationRequest(id=first.evaluation.id), metadata=auth(tenants["alpha"]), timeout=5
    )
    assert got.evaluation.spec.code == "print(1)"
    assert got.evaluation.spec.limits.memory_bytes == 256 * MIB


def test_a_request_id_reused_with_another_spec_is_already_exists(
    api: Api, tenants: dict[str, str]
) -> None:
    create(api, tenants["alpha"], request_id="reuse-1")
    error = rpc_error(lambda: create(api, tenants["alpha"], code="print(2)", request_id="reuse-1"))
    assert code_of(error) == grpc.StatusCode.ALREADY_EXISTS


def _every_rpc(api: Api) -> list[tuple[str, Callable[..., object], object]]:
    return [
        ("CreateEvaluation", api.evaluations.CreateEvaluation, ES.CreateEvaluationRequest()),
        ("BatchCreate", api.evaluations.BatchCreateEvaluations, ES.BatchCreateEvaluationsRequest()),
        ("GetEvaluation", api.evaluations.GetEvaluation, ES.GetEvaluationRequest(id="ev_x")),
        ("ListEvaluations", api.evaluations.ListEvaluations, ES.ListEvaluationsRequest()),
        ("CancelEvaluation", api.evaluations.CancelEvaluation, ES.CancelEvaluationRequest(id="x")),
        ("GetQueueStats", api.cluster.GetQueueStats, cluster_service_pb2.GetQueueStatsRequest()),
        ("ListExecutors", api.cluster.ListExecutors, cluster_service_pb2.ListExecutorsRequest()),
        ("ListRuntimes", api.cluster.ListRuntimes, cluster_service_pb2.ListRuntimesRequest()),
        ("ListApiKeys", api.keys.ListApiKeys, api_key_service_pb2.ListApiKeysRequest()),
        ("RevokeApiKey", api.keys.RevokeApiKey, api_key_service_pb2.RevokeApiKeyRequest(id="k")),
        ("WatchEvaluation", api.evaluations.WatchEvaluation, ES.WatchEvaluationRequest(id="x")),
        ("RunEvaluation", api.evaluations.RunEvaluation, ES.RunEvaluationRequest()),
    ]


@pytest.mark.parametrize(
    "header",
    [None, "Basic dXNlcjpwYXNz", "Bearer ", "Bearer em_not-a-real-key", "bearer" + "x" * 300],
    ids=["missing", "wrong-scheme", "empty", "unknown", "oversized"],
)
def test_every_rpc_without_a_valid_key_is_unauthenticated(api: Api, header: str | None) -> None:
    metadata = () if header is None else (("authorization", header),)
    for name, method, request in _every_rpc(api):
        error = failing(method, request, metadata=metadata, timeout=5)
        assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED, name


def test_a_revoked_key_is_refused_at_once(api: Api, mesh: MeshEndpoints) -> None:
    key = new_key(api, mesh.admin_api_key, "revoked-tenant")
    create(api, key)
    listing = api.keys.ListApiKeys(
        api_key_service_pb2.ListApiKeysRequest(tenant="revoked-tenant"),
        metadata=auth(mesh.admin_api_key),
        timeout=5,
    )
    api.keys.RevokeApiKey(
        api_key_service_pb2.RevokeApiKeyRequest(id=listing.api_keys[0].id),
        metadata=auth(mesh.admin_api_key),
        timeout=5,
    )
    assert code_of(rpc_error(lambda: create(api, key))) == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection_answer_without_a_key(api: Api) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_foreign_evaluation_looks_exactly_like_a_missing_one(
    api: Api, tenants: dict[str, str]
) -> None:
    own = create(api, tenants["alpha"]).evaluation.id
    beta = {"metadata": auth(tenants["beta"]), "timeout": 5}
    answers = []
    for target in (own, "ev_doesnotexist000000000"):
        errors = [
            failing(api.evaluations.GetEvaluation, ES.GetEvaluationRequest(id=target), **beta),
            failing(
                api.evaluations.CancelEvaluation, ES.CancelEvaluationRequest(id=target), **beta
            ),
            failing(api.evaluations.WatchEvaluation, ES.WatchEvaluationRequest(id=target), **beta),
        ]
        # The same code and the same words: only the id the caller sent is echoed back.
        answers.append([(code_of(e), str(e.details()).replace(target, "<id>")) for e in errors])
    assert answers[0] == answers[1]
    assert {code for code, _ in answers[0]} == {grpc.StatusCode.NOT_FOUND}
    mine = api.evaluations.GetEvaluation(
        ES.GetEvaluationRequest(id=own), metadata=auth(tenants["alpha"]), timeout=5
    ).evaluation
    assert mine.state != evaluation_pb2.Evaluation.STATE_CANCELLED
    assert not mine.cancel_requested


def test_the_tenant_comes_from_the_key_not_from_spoofed_metadata(
    api: Api, tenants: dict[str, str]
) -> None:
    label = uuid.uuid4().hex[:12]
    spoofed = (
        *auth(tenants["beta"]),
        ("x-tenant", "alpha"),
        ("x-evalmesh-tenant", "alpha"),
        ("tenant", "alpha"),
    )
    request = ES.CreateEvaluationRequest(
        request_id=uuid.uuid4().hex,
        spec=evaluation_pb2.EvaluationSpec(code="print(1)", labels={"run": label}),
    )
    api.evaluations.CreateEvaluation(request, metadata=spoofed, timeout=10)
    assert count(api, tenants["beta"], label) == 1
    assert count(api, tenants["alpha"], label) == 0


def test_invalid_requests_name_the_field_and_bound_and_create_nothing(
    api: Api, tenants: dict[str, str]
) -> None:
    label = uuid.uuid4().hex[:12]
    limits = evaluation_pb2.Limits(memory_bytes=-1, max_processes=100000)
    error = rpc_error(
        lambda: create(api, tenants["alpha"], code="", limits=limits, labels={"run": label})
    )
    assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT
    decoded = error_from_rpc(error)
    assert isinstance(decoded, InvalidArgument)
    fields = {v.field: v.description for v in decoded.violations}
    assert {"spec.code", "spec.limits.memory_bytes", "spec.limits.max_processes"} <= set(fields)
    assert "256" in fields["spec.limits.max_processes"]
    assert count(api, tenants["alpha"], label) == 0


def test_an_unknown_priority_value_is_invalid_and_names_the_field(
    api: Api, tenants: dict[str, str]
) -> None:
    request = ES.CreateEvaluationRequest(request_id="prio-999")
    request.spec.code = "print(1)"
    request.spec.priority = 999  # type: ignore[assignment]
    error = rpc_error(
        lambda: api.evaluations.CreateEvaluation(
            request, metadata=auth(tenants["alpha"]), timeout=5
        )
    )
    decoded = error_from_rpc(error)
    assert isinstance(decoded, InvalidArgument)
    assert [v.field for v in decoded.violations] == ["spec.priority"]


def test_a_message_over_the_size_cap_is_refused_before_any_handler(
    api: Api, tenants: dict[str, str]
) -> None:
    error = rpc_error(lambda: create(api, tenants["alpha"], code="x" * (3 * MIB)))
    assert code_of(error) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_batch_of_a_million_entries_is_refused_by_its_count(
    api: Api, tenants: dict[str, str]
) -> None:
    request = ES.BatchCreateEvaluationsRequest(
        requests=[ES.CreateEvaluationRequest() for _ in range(1_000_000)]
    )
    error = rpc_error(
        lambda: api.evaluations.BatchCreateEvaluations(
            request, metadata=auth(tenants["alpha"]), timeout=60
        )
    )
    decoded = error_from_rpc(error)
    assert isinstance(decoded, InvalidArgument)
    assert decoded.violations[0].field == "requests"


def test_an_expired_deadline_fails_and_a_retry_with_the_same_request_id_is_consistent(
    api: Api, tenants: dict[str, str]
) -> None:
    request_id = uuid.uuid4().hex
    request = ES.CreateEvaluationRequest(
        request_id=request_id, spec=evaluation_pb2.EvaluationSpec(code="print(1)")
    )
    error = rpc_error(
        lambda: api.evaluations.CreateEvaluation(
            request, metadata=auth(tenants["alpha"]), timeout=0.000001
        )
    )
    assert code_of(error) == grpc.StatusCode.DEADLINE_EXCEEDED
    first = create(api, tenants["alpha"], request_id=request_id)
    second = create(api, tenants["alpha"], request_id=request_id)
    assert first.evaluation.id == second.evaluation.id


def test_cluster_views_and_key_management_need_an_admin_key(
    api: Api, tenants: dict[str, str], mesh: MeshEndpoints
) -> None:
    user = auth(tenants["alpha"])
    admin_only: list[tuple[Callable[..., object], object]] = [
        (api.cluster.GetQueueStats, cluster_service_pb2.GetQueueStatsRequest()),
        (api.cluster.ListExecutors, cluster_service_pb2.ListExecutorsRequest()),
        (api.keys.ListApiKeys, api_key_service_pb2.ListApiKeysRequest()),
    ]
    for method, request in admin_only:
        error = failing(method, request, metadata=user, timeout=5)
        assert code_of(error) == grpc.StatusCode.PERMISSION_DENIED
    runtimes = api.cluster.ListRuntimes(
        cluster_service_pb2.ListRuntimesRequest(), metadata=user, timeout=5
    )
    assert "python" in [runtime.name for runtime in runtimes.runtimes]
    stats = api.cluster.GetQueueStats(
        cluster_service_pb2.GetQueueStatsRequest(), metadata=auth(mesh.admin_api_key), timeout=5
    )
    assert len(stats.stats.priorities) == 3


def test_listing_pages_through_everything_once(api: Api, tenants: dict[str, str]) -> None:
    label = uuid.uuid4().hex[:12]
    created = {create(api, tenants["alpha"], labels={"run": label}).evaluation.id for _ in range(7)}
    seen: list[str] = []
    tokens: list[str] = []
    token = ""
    while True:
        page = api.evaluations.ListEvaluations(
            ES.ListEvaluationsRequest(labels={"run": label}, page_size=3, page_token=token),
            metadata=auth(tenants["alpha"]),
            timeout=5,
        )
        seen.extend(evaluation.id for evaluation in page.evaluations)
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    assert sorted(seen) == sorted(created)
    foreign = rpc_error(
        lambda: api.evaluations.ListEvaluations(
            ES.ListEvaluationsRequest(labels={"run": label}, page_size=3, page_token=tokens[0]),
            metadata=auth(tenants["beta"]),
            timeout=5,
        )
    )
    assert code_of(foreign) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_flooding_tenant_is_rate_limited_while_another_is_not(
    api: Api, tenants: dict[str, str]
) -> None:
    flood = auth(tenants["beta"])
    request = ES.CreateEvaluationRequest(request_id="flood")  # invalid: costs a token, no work
    codes = set()
    for _ in range(400):
        try:
            api.evaluations.CreateEvaluation(request, metadata=flood, timeout=5)
        except grpc.RpcError as error:
            codes.add(code_of(error))
            if code_of(error) == grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert create(api, tenants["alpha"]).evaluation.id


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "ev x", "ev.1", "x" * 65, "ev_\u00e9"])
def test_a_malformed_id_is_invalid_for_every_tenant_alike_on_every_id_rpc(
    api: Api, tenants: dict[str, str], bad_id: str
) -> None:
    answers = []
    for key in tenants.values():
        options = {"metadata": auth(key), "timeout": 5}
        errors = [
            failing(api.evaluations.GetEvaluation, ES.GetEvaluationRequest(id=bad_id), **options),
            failing(
                api.evaluations.CancelEvaluation, ES.CancelEvaluationRequest(id=bad_id), **options
            ),
            failing(
                api.evaluations.WatchEvaluation, ES.WatchEvaluationRequest(id=bad_id), **options
            ),
        ]
        answers.append([(code_of(e), e.details()) for e in errors])
    assert answers[0] == answers[1]
    assert {code for code, _ in answers[0]} == {grpc.StatusCode.INVALID_ARGUMENT}


def violated_fields(error: grpc.RpcError) -> dict[str, str]:
    assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT
    decoded = error_from_rpc(error)
    assert isinstance(decoded, InvalidArgument)
    return {v.field: v.description for v in decoded.violations}


def test_code_holding_a_nul_character_is_invalid_on_create_and_batch_and_creates_nothing(
    api: Api, tenants: dict[str, str]
) -> None:
    label = uuid.uuid4().hex[:12]
    nul = "print('before')\nprint('a\x00b')\n"
    fields = violated_fields(
        rpc_error(lambda: create(api, tenants["alpha"], code=nul, labels={"run": label}))
    )
    assert fields == {"spec.code": "must not contain NUL characters (U+0000), found on line 2"}
    batch = ES.BatchCreateEvaluationsRequest(
        requests=[
            ES.CreateEvaluationRequest(
                request_id=uuid.uuid4().hex,
                spec=evaluation_pb2.EvaluationSpec(code=code, labels={"run": label}),
            )
            for code in ("print(1)", "\x00")
        ]
    )
    error = rpc_error(
        lambda: api.evaluations.BatchCreateEvaluations(
            batch, metadata=auth(tenants["alpha"]), timeout=10
        )
    )
    assert list(violated_fields(error)) == ["requests[1].spec.code"]
    assert count(api, tenants["alpha"], label) == 0


def test_stdin_holding_nul_bytes_is_accepted(api: Api, tenants: dict[str, str]) -> None:
    created = create(api, tenants["alpha"], stdin=b"\x00\xff\x00")
    assert created.created


def test_name_like_fields_with_control_or_bidi_characters_are_invalid_naming_the_field(
    api: Api, tenants: dict[str, str], mesh: MeshEndpoints
) -> None:
    admin, user = auth(mesh.admin_api_key), auth(tenants["alpha"])
    bad_key = api_key_service_pb2.CreateApiKeyRequest(
        tenant="evil\nadmin", display_name="\x1b]0;owned\x07"
    )
    error = rpc_error(lambda: api.keys.CreateApiKey(bad_key, metadata=admin, timeout=10))
    assert set(violated_fields(error)) == {"tenant", "display_name"}
    bad_filter = api_key_service_pb2.ListApiKeysRequest(tenant="Team A")
    error = rpc_error(lambda: api.keys.ListApiKeys(bad_filter, metadata=admin, timeout=10))
    assert list(violated_fields(error)) == ["tenant"]
    own = create(api, tenants["alpha"]).evaluation.id
    cancel = ES.CancelEvaluationRequest(id=own, reason="done\u202e")
    error = rpc_error(lambda: api.evaluations.CancelEvaluation(cancel, metadata=user, timeout=10))
    assert violated_fields(error)["reason"].endswith("found U+202E")
    listing = ES.ListEvaluationsRequest(labels={"run": "$(id)"})
    error = rpc_error(lambda: api.evaluations.ListEvaluations(listing, metadata=user, timeout=10))
    assert list(violated_fields(error)) == ["labels['run']"]
    label = uuid.uuid4().hex[:12]
    labels = {"run": label, "shell": "`reboot`"}
    error = rpc_error(lambda: create(api, tenants["alpha"], labels=labels))
    assert list(violated_fields(error)) == ["spec.labels['shell']"]
    assert count(api, tenants["alpha"], label) == 0
    get = ES.GetEvaluationRequest(id=own)
    mine = api.evaluations.GetEvaluation(get, metadata=user, timeout=10).evaluation
    assert not mine.cancel_requested
    assert mine.state != evaluation_pb2.Evaluation.STATE_CANCELLED


def test_names_within_the_rules_are_accepted_end_to_end(
    api: Api, tenants: dict[str, str], mesh: MeshEndpoints
) -> None:
    tenant = f"team_{uuid.uuid4().hex[:6]}-1"
    request = api_key_service_pb2.CreateApiKeyRequest(
        tenant=tenant, display_name="CI key for team ML \u2713 \u65e5\u672c"
    )
    created = api.keys.CreateApiKey(request, metadata=auth(mesh.admin_api_key), timeout=10)
    assert created.api_key.display_name == request.display_name
    label = uuid.uuid4().hex[:12]
    labels = {"run": label, "example.com/Job_Name": "nightly.v2", "empty": ""}
    own = create(api, created.secret, labels=labels).evaluation
    assert dict(own.spec.labels) == labels
    assert count(api, created.secret, label) == 1
    cancel = ES.CancelEvaluationRequest(id=own.id, reason="superseded by run 2 \u2014 caf\u00e9")
    api.evaluations.CancelEvaluation(cancel, metadata=auth(created.secret), timeout=10)
