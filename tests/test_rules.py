"""Every rule is documented, fires on its bad example and stays silent on its good one."""

from __future__ import annotations

import re

import pytest
from lintkit import check_example, codes

from nilemig.commands.check import rules

ALL_RULES = rules()


def test_rules_are_registered():
    assert len(ALL_RULES) >= 19
    assert {r.code for r in ALL_RULES} >= {f"NILE{n:03d}" for n in range(1, 13)} | {f"MIG{n:03d}" for n in range(7)}


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_is_documented(rule):
    assert re.fullmatch(r"(NILE|MIG)\d{3}", rule.code)
    assert rule.severity in ("error", "warning")
    assert rule.title and "\n" not in rule.title
    assert len(rule.doc) > 80, "the docs paragraph says what Nile does and what to do instead"
    assert "def upgrade" in rule.bad and "def upgrade" in rule.good
    assert rule.bad != rule.good


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_fires_on_its_bad_example(rule, tmp_path):
    result = check_example(tmp_path / "bad", rule.bad)
    assert rule.code in codes(result), result.findings
    finding = next(f for f in result.findings if f.code == rule.code)
    assert finding.line >= 1 and finding.path.name.endswith(".py") and "\n" not in finding.message


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_is_silent_on_its_good_example(rule, tmp_path):
    result = check_example(tmp_path / "good", rule.good)
    assert rule.code not in codes(result), result.findings
