"""Credentials in URLs (http://user:password@host/): the connection gets them, messages, logs and
written files never do."""
from __future__ import annotations

import urllib.parse


def split_credentials(url: str) -> tuple[str, tuple[str | None, str | None]]:
    """(the URL without user:password@, (user, password)): what may be shown, and what only the
    connection sees."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, (None, None)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))


def without_credentials(url: str) -> str:
    return split_credentials(url)[0]
