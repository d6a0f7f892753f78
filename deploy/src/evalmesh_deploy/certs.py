"""A local certificate authority and the server certificates it signs.

``scripts/up --tls`` and docker-compose.yml's ``setup`` step use this when the operator brings no
certificate: one CA per installation (its key never leaves the folder it was made in) and one
server certificate for every name the edge and the gateway answer to. A certificate is made again
when its names change or it is within 30 days of expiring; the CA is kept, so clients that trust
it keep working. Keys are ECDSA P-256.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_NAMES", "TlsFiles", "ensure_ca", "ensure_server_certificate", "local_tls"]

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
# Browsers refuse server certificates valid for more than 398 days.
SERVER_DAYS = 397
RENEW_BEFORE = datetime.timedelta(days=30)
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """TlsFiles are the PEM files a TLS server and its clients need."""

    ca: Path
    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start (a key is never readable by others)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load(directory: Path, cert_name: str, key_name: str) -> tuple[x509.Certificate, object] | None:
    cert_path, key_path = directory / cert_name, directory / key_name
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return cert, key


def _subject_names(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def ensure_ca(directory: Path, common_name: str = "evalmesh local CA") -> Path:
    """The CA certificate in ``directory``, made (with its key, mode 0600) if missing or old."""
    directory.mkdir(parents=True, exist_ok=True)
    loaded = _load(directory, CA_CERT, CA_KEY)
    if loaded is not None and _fresh(loaded[0]):
        return directory / CA_CERT
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _key_pem(key), 0o600)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return directory / CA_CERT


def _matches(cert: x509.Certificate, names: list[x509.GeneralName], ca: x509.Certificate) -> bool:
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(alternative) == set(names) and cert.issuer == ca.subject and _fresh(cert)


def ensure_server_certificate(
    ca_directory: Path, out: Path, names: Iterable[str], key_mode: int = 0o600
) -> TlsFiles:
    """A server certificate for ``names`` in ``out``, signed by the CA in ``ca_directory``;
    made again when the names differ, the CA changed, or it is close to expiring."""
    ca_cert_path = ensure_ca(ca_directory)
    loaded_ca = _load(ca_directory, CA_CERT, CA_KEY)
    assert loaded_ca is not None
    ca_cert, ca_key = loaded_ca
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    wanted = _subject_names(names)
    out.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca=ca_cert_path, cert=out / SERVER_CERT, key=out / SERVER_KEY)
    # Only the certificate is read: the key may already belong to the server's user.
    if files.key.is_file() and files.cert.is_file():
        existing = x509.load_pem_x509_certificate(files.cert.read_bytes())
        if _matches(existing, wanted, ca_cert):
            return files
    key = ec.generate_private_key(ec.SECP256R1())
    first = next((str(n.value) for n in wanted), "evalmesh")
    start = _now() - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # Client use too, so the same certificate can serve mutual TLS between services.
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), key_mode)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def local_tls(directory: Path, names: Iterable[str] = DEFAULT_NAMES) -> TlsFiles:
    """The local mesh's CA (``directory/ca``) and server certificate (``directory``)."""
    return ensure_server_certificate(directory / "ca", directory, names)
