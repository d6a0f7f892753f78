"""Abusive peers at the transport and the edge: ping floods, stream floods, origins, big bodies."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import grpc
import h2.config
import h2.connection
import h2.events

from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2, evaluation_service_pb2_grpc
from evalmesh_deploy.local.mesh import MeshEndpoints

ES = evaluation_service_pb2
ENHANCE_YOUR_CALM = 0xB


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _frames(buffer: bytearray) -> list[bytes]:
    """Take every complete HTTP/2 frame off the front of `buffer`."""
    frames = []
    while len(buffer) >= 9:
        size = 9 + int.from_bytes(buffer[:3], "big")
        if len(buffer) < size:
            break
        frames.append(bytes(buffer[:size]))
        del buffer[:size]
    return frames


def test_a_ping_flood_is_answered_with_goaway_too_many_pings(mesh: MeshEndpoints) -> None:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(_host_port(mesh.services["gateway"]), timeout=10) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        goaway: h2.events.ConnectionTerminated | None = None
        received = bytearray()
        deadline = time.monotonic() + 10
        while goaway is None and time.monotonic() < deadline:
            for n in range(20):
                connection.ping(n.to_bytes(8, "big"))
            sock.sendall(connection.data_to_send())
            data = sock.recv(65536)
            if not data:
                break
            received += data
            # One frame at a time: the server may send ping acks after its GOAWAY in the same
            # read, and h2 refuses any frame once the connection is closed.
            for frame in _frames(received):
                for event in connection.receive_data(frame):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        goaway = event
                if goaway is not None:
                    break
    assert goaway is not None, "the gateway never closed the flooding connection"
    assert goaway.error_code == ENHANCE_YOUR_CALM
    assert b"too_many_pings" in (goaway.additional_data or b"")


FLOOD = """
import asyncio, sys
import grpc
from evalmesh.v1 import evaluation_service_pb2 as ES, evaluation_service_pb2_grpc

async def main(address, key, evaluation_id, count):
    auth = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
        calls = [
            stub.WatchEvaluation(ES.WatchEvaluationRequest(id=evaluation_id), metadata=auth)
            for _ in range(count)
        ]
        print("flooding", flush=True)
        await asyncio.sleep(60)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def test_thousands_of_streams_on_one_connection_do_not_slow_other_clients(
    mesh: MeshEndpoints,
) -> None:
    auth = (("authorization", f"Bearer {mesh.admin_api_key}"),)
    gateway = mesh.services["gateway"]
    with grpc.insecure_channel(gateway) as channel:
        stub = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
        sleeper = stub.CreateEvaluation(
            ES.CreateEvaluationRequest(
                request_id=uuid.uuid4().hex,
                spec=evaluation_pb2.EvaluationSpec(code="import time; time.sleep(30)"),
            ),
            metadata=auth,
            timeout=10,
        ).evaluation.id
        # Another client process opens 3000 watch streams on one connection.
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, gateway, mesh.admin_api_key, sleeper, "3000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert flood.stdout is not None
            assert flood.stdout.readline().strip() == "flooding"
            time.sleep(2)
            for _ in range(3):
                started = time.monotonic()
                got = stub.GetEvaluation(
                    ES.GetEvaluationRequest(id=sleeper), metadata=auth, timeout=5
                )
                assert got.evaluation.id == sleeper
                assert time.monotonic() - started < 3.0  # starved, it would take the whole 5 s
        finally:
            flood.kill()
            flood.communicate()
            stub.CancelEvaluation(ES.CancelEvaluationRequest(id=sleeper), metadata=auth, timeout=10)


def _preflight(url: str, origin: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"{url}/evalmesh.v1.EvaluationService/GetEvaluation",
        method="OPTIONS",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,authorization",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as error:
        return {k.lower(): v for k, v in error.headers.items()}


def test_a_preflight_from_a_foreign_origin_gets_no_cors_grant(mesh: MeshEndpoints) -> None:
    headers = _preflight(mesh.url, "http://evil.example")
    assert "access-control-allow-origin" not in headers


def test_a_body_over_the_edge_cap_is_refused_with_413(mesh: MeshEndpoints) -> None:
    body = b"\x00" + (3 * 1024 * 1024).to_bytes(4, "big") + b"x" * (3 * 1024 * 1024)
    request = urllib.request.Request(
        f"{mesh.url}/evalmesh.v1.EvaluationService/CreateEvaluation",
        data=body,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status = reply.status
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 413
