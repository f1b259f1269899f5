"""User-facing errors, the exit codes they carry, and the redaction every message passes through.

Everything nilemig prints about a failure is a `NilemigError`: one paragraph saying
what went wrong and what to do next. Its exit code follows one contract (README,
"Exit codes"): 1 when the command ran and its answer is "no" (`AnswerIsNo`), 2 when
nilemig could not do its job (every other `NilemigError`), 130 when interrupted.

Passwords are registered here as soon as a URL is read (`register_secrets_in`), and
`redact` removes them, and anything shaped like a password in a URL or a libpq
keyword/value string, from any text before it is shown, including `--debug` tracebacks.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

EXIT_ANSWER_IS_NO = 1
EXIT_COULD_NOT_RUN = 2
EXIT_INTERRUPTED = 130

_secrets: set[str] = set()

# The words nilemig's own messages use in example URLs, and what a masked password already reads.
_NOT_SECRETS = {"PASSWORD", "***", ""}
# scheme://user:password@ — the password runs to the last @ of the word, so an unencoded @ in it stays hidden.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<password>\S*)@")
# user:password@host with no scheme at all (what a user pastes without `postgres://`).
_BARE_PASSWORD = re.compile(r"(?<![\w.+/-])(?P<head>[\w.+-]+:)(?!//)(?P<password>\S+)@(?=[\w\[])")
# password=... in a query string, in a libpq keyword/value string, or PGPASSWORD=... in an environment dump.
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>password\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^&\s]+)")


class NilemigError(Exception):
    """nilemig could not do its job (configuration, connection, permission, usage): exit 2.

    The message is meant for the user and is shown without a traceback.
    """

    exit_code = EXIT_COULD_NOT_RUN

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return redact(self.message)


class UsageError(NilemigError):
    """The command line itself asks for something impossible."""


class AnswerIsNo(NilemigError):
    """The command ran and its answer is "no": a migration failed in the database, or `up` refused
    what its pre-flight checks found (unreviewed destructive or edited migrations, check errors): exit 1."""

    exit_code = EXIT_ANSWER_IS_NO


def sentence(text: str) -> str:
    """`text` ending in exactly one full stop (or its own ? or !), to build one-paragraph messages."""
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def register_secret(secret: str | None) -> None:
    """Remember a password so that `redact` can remove it, in any encoding, from any later text."""
    if not secret or secret in _NOT_SECRETS:
        return
    for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""), unquote(secret), unquote_plus(secret)):
        if form not in _NOT_SECRETS:
            _secrets.add(form)


def url_password(raw: str) -> str | None:
    """The password in the user-info of a URL however malformed it is (no scheme, spaces, an unencoded
    `@`, `:` or `/`): everything between the user's `:` and the last `@` before the query string."""
    rest = raw.split("://", 1)[1] if "://" in raw else raw
    query_at = rest.find("?")
    head = rest[:query_at] if query_at >= 0 and "@" in rest[:query_at] else rest
    if "@" not in head:
        return None
    _user, colon, password = head[: head.rindex("@")].partition(":")
    return password if colon else None


def holds_password(raw: str) -> bool:
    """Whether a URL or libpq keyword/value string carries a password (in its user-info or as password=)."""
    return bool(url_password(raw)) or _KEYWORD_PASSWORD.search(raw) is not None


def register_secrets_in(raw: str) -> None:
    """Register every password a URL or libpq keyword/value string holds, before anything can echo it."""
    register_secret(url_password(raw))
    for match in _KEYWORD_PASSWORD.finditer(raw):
        register_secret(match["password"].strip("'"))


def redact(text: str) -> str:
    """Return text with every known password, and anything shaped like one, replaced by ***."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern in (_URL_PASSWORD, _BARE_PASSWORD):
        text = pattern.sub(lambda m: m[0] if m["password"] in _NOT_SECRETS else f"{m['head']}***@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m[0] if m["password"] in _NOT_SECRETS else f"{m['head']}***", text)
