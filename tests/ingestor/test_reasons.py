"""The reject reasons' one table: every code a producer gives is in it, meant once."""

from __future__ import annotations

import ast
from pathlib import Path

import ingestor
from ingestor.reasons import Reason
from ingestor.sequence import VerdictKind

_SOURCE = Path(ingestor.__file__).parent
#: Calls whose reason argument (first, or second after the raw text) names a reject reason.
_PRODUCERS = {"DecodeError": 0, "Rejected": 1, "reject": 1}


def test_every_reason_has_a_code_and_a_meaning() -> None:
    assert len({r.value for r in Reason}) == len(Reason)
    for reason in Reason:
        assert reason.value == reason.name.lower() and reason == reason.value
        assert reason.meaning and "\n" not in reason.meaning


def test_the_sequencers_rejects_are_reasons() -> None:
    assert VerdictKind.DUPLICATE.value is Reason.DUPLICATE
    assert VerdictKind.OUT_OF_ORDER.value is Reason.OUT_OF_ORDER


def _literal_reasons(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        at = _PRODUCERS.get(name)
        if at is not None and len(node.args) > at:
            arg = node.args[at]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def test_no_producer_spells_a_reason_itself() -> None:
    """Rejects name their reason through the table, never as a string of their own."""
    spelled = {
        f"{path.relative_to(_SOURCE)}:{line}: {text!r}"
        for path in _SOURCE.rglob("*.py")
        for line, text in _literal_reasons(ast.parse(path.read_text(), str(path)))
    }
    assert not spelled
