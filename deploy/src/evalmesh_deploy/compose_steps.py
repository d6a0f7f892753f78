"""The one-shot steps of docker-compose.yml, run from the ``evalmesh/cli`` image.

``setup`` (before anything else starts, as root, without a network) fills the secret volumes:

- ``/secrets/state`` (setup's own, root only): the installation's CA and key, and the master
  copies of the database password (``/input/postgres-password`` or a new random one) and of the
  page token secret;
- ``/secrets/tls``: ``server.crt``/``server.key`` for the edge and the gateway (the operator's,
  copied from ``/input/tls`` when both are there, else made by the CA) and ``ca.crt``, which
  clients trust; a made CA certificate is also copied to ``/input/tls/ca.crt`` so it can be
  handed to clients from the host;
- ``/secrets/db``: the database password, readable by PostgreSQL's user only;
- ``/secrets/storage``: a libpq password file and the page token secret, for storage only.

Master copies that exist are kept, so running it again changes nothing. ``bootstrap`` (once
storage is healthy) creates the first admin API key and keeps it in
``/secrets/admin/admin-api-key``.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from evalmesh_deploy.admin_key import create_admin_key
from evalmesh_deploy.certs import CA_CERT, SERVER_CERT, SERVER_KEY, ensure_server_certificate

__all__ = ["bootstrap", "setup"]

# The users of the images that read each secret (see each image's Dockerfile).
APP_UID = 10001
POSTGRES_UID = 999
ADMIN_KEY_FILE = "admin-api-key"


def _say(message: str) -> None:
    print(f"evalmesh setup: {message}", flush=True)


def _put(path: Path, data: bytes, owner: int, mode: int) -> None:
    """Write ``path`` atomically, owned by ``owner`` with ``mode`` from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if os.geteuid() == 0:
        os.chown(temp, owner, owner)
    os.replace(temp, path)


def _own(path: Path, owner: int, mode: int) -> None:
    # setup has CAP_CHOWN but not CAP_FOWNER: it may chmod only what root owns.
    root = os.geteuid() == 0
    if root:
        os.chown(path, 0, 0)
    path.chmod(mode)
    if root:
        os.chown(path, owner, owner)


def _tls(secrets_dir: Path, input_dir: Path, names: Iterable[str]) -> None:
    given, out = input_dir / "tls", secrets_dir / "tls"
    out.mkdir(parents=True, exist_ok=True)
    if (given / SERVER_CERT).is_file() and (given / SERVER_KEY).is_file():
        _put(out / SERVER_CERT, (given / SERVER_CERT).read_bytes(), APP_UID, 0o444)
        _put(out / SERVER_KEY, (given / SERVER_KEY).read_bytes(), APP_UID, 0o400)
        chain = given / CA_CERT if (given / CA_CERT).is_file() else given / SERVER_CERT
        _put(out / CA_CERT, chain.read_bytes(), APP_UID, 0o444)
        _say(f"TLS: using the certificate in {given}")
        return
    # Made by root: the key is root's until handed over below.
    files = ensure_server_certificate(secrets_dir / "state" / "ca", out, names, key_mode=0o400)
    ca = files.ca.read_bytes()
    _put(out / CA_CERT, ca, APP_UID, 0o444)
    for path, mode in ((files.cert, 0o444), (files.key, 0o400)):
        _own(path, APP_UID, mode)
    _put(given / CA_CERT, ca, 0, 0o644)
    _say(f"TLS: certificate for {', '.join(names)} from the local CA ({given / CA_CERT})")


def _master(secrets_dir: Path, name: str, given: Path, make: Callable[[], str]) -> str:
    """The master copy of a secret in setup's own volume, made once (or taken from ``given``)."""
    path = secrets_dir / "state" / name
    if not path.is_file():
        value = given.read_text().strip() if given.is_file() else make()
        _put(path, value.encode(), 0, 0o400)
        _say(f"{name}: " + (f"from {given}" if given.is_file() else "made"))
    return path.read_text().strip()


def _database(secrets_dir: Path, input_dir: Path, user: str, database: str) -> None:
    given = input_dir / "postgres-password"
    password = _master(secrets_dir, "postgres-password", given, lambda: secrets.token_hex(24))
    _put(secrets_dir / "db" / "postgres-password", password.encode(), POSTGRES_UID, 0o400)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    line = f"postgres:5432:{database}:{user}:{escaped}\n"
    _put(secrets_dir / "storage" / "pgpass", line.encode(), APP_UID, 0o600)


def _page_token_secret(secrets_dir: Path, input_dir: Path) -> None:
    given = input_dir / "page-token-secret"
    value = _master(secrets_dir, "page-token-secret", given, lambda: secrets.token_urlsafe(32))
    _put(secrets_dir / "storage" / "page-token-secret", value.encode(), APP_UID, 0o400)


def setup(
    secrets_dir: Path, input_dir: Path, names: Iterable[str], db_user: str, db_name: str
) -> None:
    """Fill the secret volumes (idempotent)."""
    names = list(dict.fromkeys(names))
    (secrets_dir / "state").mkdir(mode=0o700, exist_ok=True)
    admin = secrets_dir / "admin"
    if admin.is_dir():  # bootstrap, running as the app user, keeps the first admin key here
        _own(admin, APP_UID, 0o700)
    _tls(secrets_dir, input_dir, names)
    _database(secrets_dir, input_dir, db_user, db_name)
    _page_token_secret(secrets_dir, input_dir)
    _say("secrets are in place")


def bootstrap(storage_address: str, admin_dir: Path) -> None:
    """Create the first admin key unless one was made before; print it once."""
    path = admin_dir / ADMIN_KEY_FILE
    if path.is_file() and path.read_text().strip():
        print("evalmesh bootstrap: the first admin key exists (show it: see the README)")
        return
    secret = create_admin_key(storage_address, display_name="first admin key (compose)")
    _put(path, (secret + "\n").encode(), os.geteuid(), 0o400)
    print(f"evalmesh bootstrap: first admin API key: {secret}", flush=True)


def show(path: Path) -> int:
    """Print a file the steps made (the admin key, the CA certificate) for the host to use."""
    try:
        sys.stdout.write(path.read_text())
    except OSError as error:
        print(f"evalmesh: {path}: {error.strerror}", file=sys.stderr)
        return 1
    return 0
