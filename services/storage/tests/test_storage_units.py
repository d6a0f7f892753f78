"""Fast unit tests: layering, page tokens, transient-error classification."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

import evalmesh_storage
from evalmesh_storage.errors import InvalidPageToken
from evalmesh_storage.keys import hash_secret, new_secret
from evalmesh_storage.retry import is_transient
from evalmesh_storage.tokens import PageTokens

PACKAGE = Path(evalmesh_storage.__file__).parent
EDGE = {"servicer.py", "app.py", "__main__.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_domain_modules_never_import_grpc() -> None:
    domain = [p for p in PACKAGE.rglob("*.py") if p.name not in EDGE]
    assert len(domain) > 10
    for path in domain:
        grpc_imports = {m for m in imported_modules(path) if m.split(".")[0] == "grpc"}
        assert not grpc_imports, f"{path.name} imports {grpc_imports}"


def test_api_key_secrets_are_long_random_and_hashed_with_sha256() -> None:
    secret = new_secret()
    assert secret.startswith("em_")
    assert len(secret) == 46
    assert secret != new_secret()
    assert len(hash_secret(secret)) == 64


def test_a_page_token_signed_with_another_secret_is_refused() -> None:
    mine, theirs = PageTokens(b"a" * 32), PageTokens(b"b" * 32)
    token = theirs.issue("evaluations", "acme", {}, (1, "ev_1"))
    assert theirs.parse(token, "evaluations", "acme", {}) == (1, "ev_1")
    with pytest.raises(InvalidPageToken):
        mine.parse(token, "evaluations", "acme", {})
    with pytest.raises(InvalidPageToken):
        theirs.parse(token, "api_keys", "acme", {})
    with pytest.raises(ValueError, match="16 bytes"):
        PageTokens(b"short")


class _PgError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("pg")
        self.sqlstate = sqlstate


def _wrapped(kind: type[sa_exc.DBAPIError], orig: Exception) -> sa_exc.DBAPIError:
    return kind("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")), True),
        (_wrapped(sa_exc.OperationalError, sqlite3.OperationalError("no such table: x")), False),
        (
            _wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database or disk is full")),
            True,
        ),
        (_wrapped(sa_exc.OperationalError, _PgError("53100")), True),
        (_wrapped(sa_exc.OperationalError, _PgError("40001")), True),
        (_wrapped(sa_exc.OperationalError, _PgError("40P01")), True),
        (_wrapped(sa_exc.OperationalError, _PgError("57P01")), True),
        (_wrapped(sa_exc.OperationalError, _PgError("08006")), True),
        (_wrapped(sa_exc.OperationalError, _PgError(None)), True),
        (_wrapped(sa_exc.IntegrityError, _PgError("23505")), False),
        (_wrapped(sa_exc.DataError, _PgError("22021")), False),
        (sa_exc.TimeoutError("pool exhausted"), True),
        (ValueError("bug"), False),
    ],
)
def test_transient_database_errors_are_told_apart_from_permanent_ones(
    error: BaseException, transient: bool
) -> None:
    assert is_transient(error) is transient
