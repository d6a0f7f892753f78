"""Database outages: UNAVAILABLE (never a false success) while down, recovery without restart."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from storage_test_helpers import new

from evalmesh.storage.v1 import storage_service_pb2 as pb
from evalmesh.storage.v1 import storage_service_pb2_grpc as pb_grpc
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.config import Seconds
from evalmesh_common.server import ServiceApp
from evalmesh_common.server.config import ServerConfig
from evalmesh_common.server.health_client import is_serving, wait_for_serving
from evalmesh_common.server.status import error_from_rpc
from evalmesh_storage.app import build_app
from evalmesh_storage.config import StorageConfig
from evalmesh_storage.db import Database, DatabaseSettings, create_engine
from evalmesh_storage.domain import View
from evalmesh_storage.errors import Unavailable
from evalmesh_storage.migrate import migrate
from evalmesh_storage.retry import RetryPolicy
from evalmesh_storage.storage import Storage
from evalmesh_storage.tokens import PageTokens
from evalmesh_testing.postgres import PostgresCluster, find_postgres_bin

SHORT_RETRY = RetryPolicy(budget=0.5, initial_backoff=0.02, max_backoff=0.1)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresCluster]:
    """A cluster of this module's own, since its tests stop and start it."""
    if find_postgres_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def outage_url(private_postgres: PostgresCluster) -> Iterator[str]:
    """A fresh database in the private cluster; the cluster is running again afterwards."""
    yield private_postgres.create_database()
    if not private_postgres.is_running():
        private_postgres.start()


async def sqlite_storage(path: Path) -> Storage:
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{path}", busy_timeout=0.05))
    await migrate(engine)
    return Storage(Database(engine, SHORT_RETRY), PageTokens(b"0123456789abcdef"))


def hold_write_lock(path: Path, release: threading.Event) -> threading.Thread:
    """Hold SQLite's write lock from another connection until ``release`` is set."""
    locked = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        connection.execute("ROLLBACK")
        connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    locked.wait(5)
    return thread


async def test_a_locked_sqlite_database_answers_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "storage.db"
    storage = await sqlite_storage(path)
    try:
        release = threading.Event()
        holder = hold_write_lock(path, release)
        with pytest.raises(Unavailable) as refused:
            await storage.create_evaluation(new(request_id="during-lock"))
        assert refused.value.reason == "DATABASE_UNAVAILABLE"
        release.set()
        holder.join()
        _, was_new = await storage.create_evaluation(new(request_id="during-lock"))
        assert was_new, "the refused create must not have been stored"
    finally:
        await storage.db.dispose()


async def test_a_lock_released_within_the_retry_budget_is_ridden_out(tmp_path: Path) -> None:
    path = tmp_path / "storage.db"
    storage = await sqlite_storage(path)
    try:
        release = threading.Event()
        holder = hold_write_lock(path, release)
        asyncio.get_running_loop().call_later(0.15, release.set)
        _, created = await storage.create_evaluation(new())
        assert created
        holder.join()
    finally:
        await storage.db.dispose()


async def test_a_stopped_postgres_answers_unavailable_and_a_restarted_one_recovers(
    private_postgres: PostgresCluster, outage_url: str
) -> None:
    engine = create_engine(DatabaseSettings(url=outage_url, connect_timeout=2))
    await migrate(engine)
    storage = Storage(Database(engine, SHORT_RETRY), PageTokens(b"0123456789abcdef"))
    try:
        before, _ = await storage.create_evaluation(new())
        private_postgres.stop()
        with pytest.raises(Unavailable):
            await storage.create_evaluation(new(request_id="while-down"))
        with pytest.raises(Unavailable):
            await storage.get_evaluation(before.id, "acme", View.BASIC)
        with pytest.raises(Exception):  # noqa: B017, PT011 - the probe only needs "not up"
            await storage.ping()
        private_postgres.start()
        assert await storage.ping()
        _, created = await storage.create_evaluation(new(request_id="while-down"))
        assert created
        assert (await storage.get_evaluation(before.id, "acme", View.BASIC)).id == before.id
    finally:
        await storage.db.dispose()


@pytest.fixture
async def outage_server(outage_url: str) -> AsyncIterator[ServiceApp]:
    config = StorageConfig(
        server=ServerConfig(
            listen_address="127.0.0.1:0", probe_interval=Seconds(0.05), probe_timeout=Seconds(1.0)
        ),
        database_url=outage_url,
        retry_budget=Seconds(0.5),
        connect_timeout=Seconds(2),
    )
    app = await build_app(config)
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


async def wait_for(predicate: object, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def create_request(request_id: str) -> pb.CreateEvaluationRequest:
    return pb.CreateEvaluationRequest(
        tenant="acme", request_id=request_id, spec=evaluation_pb2.EvaluationSpec(code="print(1)")
    )


async def test_health_goes_not_serving_during_a_postgres_outage_and_back_without_restart(
    private_postgres: PostgresCluster, outage_server: ServiceApp
) -> None:
    await wait_for_serving(outage_server.address, timeout=10)
    async with grpc.aio.insecure_channel(outage_server.address) as channel:
        stub = pb_grpc.StorageServiceStub(channel)
        await stub.CreateEvaluation(create_request("up"), timeout=5)
        private_postgres.stop()

        async def not_serving() -> bool:
            return not await is_serving(channel)

        await wait_for(not_serving)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateEvaluation(create_request("down"), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert error_from_rpc(refused.value).reason == "DATABASE_UNAVAILABLE"
        private_postgres.start()

        async def serving() -> bool:
            return await is_serving(channel)

        await wait_for(serving)
        response = await stub.CreateEvaluation(create_request("down"), timeout=5)
        assert response.created
