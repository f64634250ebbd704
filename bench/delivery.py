"""Delivery benchmark (being written)."""

from __future__ import annotations

from pathlib import Path

from bench.common import Row

FULL = QUICK = None


def run(options: object, folder: Path) -> tuple[list[Row], bool]:
    return [], True
