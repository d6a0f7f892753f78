"""Masking of credentials that hide inside connection strings.

``postgresql://evalmesh:hunter2@db:5432/evalmesh`` is useful in a start-up log line once it
reads ``postgresql://evalmesh:***@db:5432/evalmesh``: the host and database stay visible, the
password does not.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "redact_url"]

MASK = "***"

_SENSITIVE_QUERY_KEYS = ("pass", "pwd", "secret", "token", "key", "credential", "auth")


def redact_url(value: str) -> str:
    """Mask passwords, bare tokens and secret-looking query values in URL-shaped ``value``.

    A comma-separated list (``nats://a:b@h1,nats://a:b@h2``, or libpq multi-host
    ``postgresql://u:p@h1,h2/db``) is masked piece by piece; text that is not a URL is
    returned unchanged.
    """
    return ",".join(_redact_one(piece) for piece in value.split(","))


def _redact_one(piece: str) -> str:
    if "://" not in piece:
        return piece
    try:
        parts = urlsplit(piece)
    except ValueError:  # malformed (e.g. an unclosed IPv6 bracket): cannot tell what is secret
        return MASK if "@" in piece else piece
    netloc, query = _mask_userinfo(parts.netloc), _mask_query(parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return piece  # urlunsplit would normalise it (e.g. sqlite:/// -> sqlite:/)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_userinfo(netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, _, host = netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    # Without a password the user part is often the secret itself (NATS token auth).
    masked = f"{user}:{MASK}" if has_password else MASK
    return f"{masked}@{host}"


def _mask_query(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_is_sensitive(key) for key, _ in pairs):
        return query
    return urlencode([(k, MASK if _is_sensitive(k) else v) for k, v in pairs], safe="*")


def _is_sensitive(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SENSITIVE_QUERY_KEYS)
