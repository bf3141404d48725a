"""The one redaction of secrets, for every output: logs, config errors, ``/status``, ``schema``
output and CLI messages.

In any ``scheme://`` URI found in a text (any scheme, any case): the password of the user info
(``user:***@``, also with an empty user, or a ``/`` or ``@`` in the password), and the values of
query parameters that carry secrets (``tlsCertificateKeyFilePassword``,
``authMechanismProperties`` with its ``AWS_SESSION_TOKEN``, ``password``, ``token``, ``apiKey``,
``signature``...). A user name alone is not a secret and stays, as do hosts, paths and every
other parameter: the operator still sees which server and options were meant.

:func:`clip` bounds a text taken from outside (a frame, a field) before it is logged or
stored: the head and the original length.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "clip", "redact"]

MASK = "***"

#: A URI: scheme, "://", then everything up to whitespace, a quote or a bracket of prose.
_URI = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>`\\]*""")
#: Query parameter names whose values are secrets (case-insensitive, anywhere in the name).
_SECRET_PARAM = re.compile(
    r"pass|pwd|secret|token|signature|credential|authmechanismproperties|api_?-?key|"
    r"access_?-?key|private",
    re.IGNORECASE,
)
_PARAM = re.compile(r"(?P<sep>^|[&;])(?P<name>[^&;=]*)=(?P<value>[^&;#]*)")


def redact(text: str) -> str:
    """``text`` with the secrets of every URI in it replaced by ``***``."""
    if "://" not in text:
        return text
    return _URI.sub(lambda m: _redact_uri(m[0]), text)


def _redact_uri(uri: str) -> str:
    scheme, _, rest = uri.partition("://")
    q = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head, tail = rest[:q], rest[q:]
    userinfo, at, hosts = head.rpartition("@")  # the last '@': a password may hold '/' or '@'
    if at and ":" in userinfo:
        head = f"{userinfo.partition(':')[0]}:{MASK}@{hosts}"
    if tail.startswith("?"):
        query, hash_, fragment = tail[1:].partition("#")
        tail = "?" + _PARAM.sub(_param, query) + hash_ + fragment
    return f"{scheme}://{head}{tail}"


def _param(m: re.Match[str]) -> str:
    if _SECRET_PARAM.search(m["name"]):
        return f"{m['sep']}{m['name']}={MASK}"
    return m[0]


def clip(text: str | bytes, limit: int) -> str:
    """``text`` if at most ``limit`` characters, else its first ``limit`` and its length
    (bytes: decoded as UTF-8 with replacements, only the head of a large payload)."""
    if isinstance(text, bytes):
        head = text[: limit * 4].decode("utf-8", "replace")  # never decode megabytes
        if len(text) <= limit and len(head) <= limit:
            return head
        return f"{head[:limit]}... [{len(text)} bytes]"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text)} chars]"
