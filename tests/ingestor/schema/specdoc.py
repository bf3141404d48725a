"""Reads the schema spec markdown itself: sections, createIndex lines, TypeScript field blocks,
validation-rule bullets and example documents (ObjectId/ISODate/NumberDecimal -> BSON)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import json_util

_SECTION = re.compile(r"^### (\d+)\. (\w+) Collection", re.M)
_FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)
_CREATE_INDEX = re.compile(r"db\.(\w+)\.createIndex\((\{[^}]*\})(?:,\s*(\{[^}]*\}))?\)")
_TS_LINE = re.compile(r"^\s*(\w+):\s*([^,/]+?),?\s*(?://\s*(.*))?$")
_TS_TYPES = {
    "ObjectId": "objectId",
    "string": "string",
    "boolean": "bool",
    "DateTime": "date",
    "Decimal128": "decimal",
    "number": "number",
    "object": "object",
    "any": "any",
}


@dataclass
class Section:
    number: int
    name: str
    text: str
    fences: list[tuple[str, str]] = field(default_factory=list)


def sections(path: Path) -> dict[str, Section]:
    text = path.read_text()
    matches = list(_SECTION.finditer(text))
    out: dict[str, Section] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : end]
        out[m[2]] = Section(int(m[1]), m[2], body, _FENCE.findall(body))
    return out


def _js_object(src: str) -> dict[str, Any]:
    """A JS object literal of the spec (quoted or bare keys, ints, true/false) -> dict."""
    return dict(json.loads(re.sub(r"([{,]\s*)(\w+)\s*:", r'\1"\2":', src)))


def create_indexes(path: Path) -> list[tuple[str, tuple[tuple[str, int], ...], dict[str, Any]]]:
    """Every ``db.X.createIndex(keys, opts)`` line: (collection, ordered keys, options)."""
    out = []
    for m in _CREATE_INDEX.finditer(path.read_text()):
        keys = json.loads(m[2], object_pairs_hook=list)
        out.append((m[1], tuple((k, int(v)) for k, v in keys), _js_object(m[3]) if m[3] else {}))
    return out


def typescript_fields(section: Section) -> dict[str, Any]:
    """The ``typescript`` schema block as {field: (type, nullable, enum values) | nested dict}."""
    block = next(body for lang, body in section.fences if lang == "typescript")
    stack: list[dict[str, Any]] = [{}]
    for line in block.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//") or stripped in ("{",):
            continue
        if stripped.startswith("}"):
            if len(stack) > 1:
                stack.pop()
            continue
        if stripped.endswith("{"):
            name = stripped.split(":")[0].strip()
            child: dict[str, Any] = {}
            stack[-1][name] = child
            stack.append(child)
            continue
        m = _TS_LINE.match(line)
        assert m, line
        name, typ, comment = m[1], m[2].strip(), m[3] or ""
        nullable = typ.endswith("| null")
        base = typ.removesuffix("| null").strip()
        array = base.endswith("[]")
        base = base.removesuffix("[]")
        enum: tuple[str, ...] = ()
        if base == "enum":
            enum = tuple(re.findall(r'"([^"]+)"', comment))
            base = "string"
        stack[-1][name] = (("array:" if array else "") + _TS_TYPES[base], nullable, enum)
    return stack[0]


def validation_bullets(section: Section) -> list[tuple[str, str]]:
    """``- `path`: text`` bullets of **Validation Rules** -> (path, text); a bullet without a
    colon (market_data's) is (first backticked name, whole bullet)."""
    m = re.search(r"\*\*Validation Rules:\*\*\n((?:- .*\n)+)", section.text)
    if not m:
        return []
    out = []
    for line in m[1].splitlines():
        item = line[2:].strip()
        head = re.match(r"`([\w.]+)`: (.*)", item)
        if head:
            out.append((head[1], head[2]))
        else:
            first = re.search(r"`([\w.]+)`", item)
            assert first, item
            out.append((first[1], item))
    return out


def _extended_json(src: str) -> str:
    src = re.sub(r'ObjectId\("([0-9a-f]{24})"\)', r'{"$oid": "\1"}', src)
    src = re.sub(r'ISODate\("([^"]+)"\)', r'{"$date": "\1"}', src)
    return re.sub(r'NumberDecimal\("([^"]+)"\)', r'{"$numberDecimal": "\1"}', src)


def examples(section: Section) -> list[dict[str, Any]]:
    """The section's example document(s), as BSON-ready Python values."""
    out: list[dict[str, Any]] = []
    for lang, body in section.fences:
        if lang != "json":
            continue
        value = json_util.loads(_extended_json(body))
        out.extend(value if isinstance(value, list) else [value])
    return out


#: The spec's example documents, extended JSON: {collection: [document, ...]}.
KEPT_EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "spec-examples.json"


def kept_examples() -> dict[str, list[dict[str, Any]]]:
    """The spec's example documents as kept in the repository (``tests/data``)."""
    value: dict[str, list[dict[str, Any]]] = json_util.loads(KEPT_EXAMPLES.read_text())
    return value


def retention(path: Path) -> dict[str, tuple[str, str]]:
    """The Data Retention Policies table: collection -> (period, mechanism)."""
    text = path.read_text().split("## Data Retention Policies", 1)[1]
    rows = re.findall(r"^\| (\w+) \| ([^|]+?) \| ([^|]+?) \|$", text, re.M)
    return {name: (period, mech) for name, period, mech in rows if name != "Collection"}
