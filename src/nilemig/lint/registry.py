"""The rule registry: every lint rule is one decorated function in `rules.py`.

A rule has a stable code, a severity, a one-line title, a docs paragraph (the
function's docstring) and a bad and a good example. The examples are migrations
(the bodies after the revision header); `tests/test_rules.py` checks that each
rule fires on its bad example and stays silent on its good one, so a rule
without working examples fails the suite.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

ERROR = "error"
WARNING = "warning"


class Kind(Enum):
    STATEMENT = "statement"  # called for every SQL statement a migration runs, with the schema before it
    CHAIN = "chain"  # called once with every migration file of the project


@dataclass(frozen=True)
class Rule:
    code: str
    severity: str
    title: str
    doc: str
    bad: str
    good: str
    kind: Kind
    check: Callable[[Any], Iterable[Any]]


RULES: dict[str, Rule] = {}


def _register(kind: Kind, code: str, severity: str, title: str, bad: str, good: str):
    def decorate(check: Callable[[Any], Iterable[Any]]) -> Callable[[Any], Iterable[Any]]:
        if code in RULES:
            raise ValueError(f"rule {code} is registered twice")
        RULES[code] = Rule(code, severity, title, inspect.cleandoc(check.__doc__ or ""),
                           inspect.cleandoc(bad), inspect.cleandoc(good), kind, check)
        return check

    return decorate


def statement_rule(code: str, severity: str, title: str, *, bad: str, good: str):
    """Register a rule that yields messages for one statement (`rules.Statement`)."""
    return _register(Kind.STATEMENT, code, severity, title, bad, good)


def chain_rule(code: str, severity: str, title: str, *, bad: str, good: str):
    """Register a rule that yields (message, migration file, line) for the whole chain (`chain.Chain`)."""
    return _register(Kind.CHAIN, code, severity, title, bad, good)
