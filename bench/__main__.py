"""Run every benchmark section, print its figures and merge them into bench/results.json.

Each section is a module ``bench/<name>_bench.py`` exposing ``run() -> dict``; its result is stored
under the section's key, other keys already in the file are kept.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["SECTIONS", "main"]

HERE = Path(__file__).resolve().parent
#: Every ``bench/<name>_bench.py`` is a section named ``<name>``.
SECTIONS = {
    p.stem.removesuffix("_bench"): f"bench.{p.stem}" for p in sorted(HERE.glob("*_bench.py"))
}
RESULTS = HERE / "results.json"


def main(argv: list[str]) -> int:
    wanted = argv or list(SECTIONS)
    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        print(f"unknown section(s): {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
        return 2
    results: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            results = json.loads(RESULTS.read_text())
        except json.JSONDecodeError:
            print(f"warning: {RESULTS} is not valid JSON; rewriting it")
    for name in wanted:
        print(f"== {name}")
        figures = importlib.import_module(SECTIONS[name]).run()
        results[name] = figures
        print(json.dumps(figures, indent=2))
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
