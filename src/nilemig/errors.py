"""User-facing errors and the redaction every message passes through.

Everything nilemig prints about a failure is a `NilemigError`: one paragraph saying
what went wrong and what to do next. Passwords are registered here as soon as a
URL is parsed, and `redact` removes them from any text before it is shown,
including `--debug` tracebacks.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

_secrets: set[str] = set()

# user:password@ inside anything that looks like a URL
# The word nilemig's own messages use in example URLs; not a secret.
_PLACEHOLDER = "PASSWORD"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)@")


class NilemigError(Exception):
    """An error whose message is meant for the user, shown without a traceback."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return redact(self.message)


class UsageError(NilemigError):
    """The command line itself asks for something impossible."""

    exit_code = 2


def sentence(text: str) -> str:
    """`text` ending in exactly one full stop (or its own ? or !), to build one-paragraph messages."""
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def register_secret(secret: str | None) -> None:
    """Remember a password so that `redact` can remove it from any later text."""
    if not secret:
        return
    for form in (secret, quote(secret, safe=""), quote_plus(secret, safe="")):
        _secrets.add(form)


def redact(text: str) -> str:
    """Return text with every known password, and any URL password, replaced by ***."""
    text = _URL_PASSWORD.sub(
        lambda m: m[0] if m["password"] in ("", _PLACEHOLDER) else f"{m['head']}***@", text
    )
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
