"""Benchmarks run by ``make bench`` (``python -m bench``).

Each section is a module exposing ``run() -> dict``.
"""

__all__: list[str] = []
