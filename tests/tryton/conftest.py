"""Fixtures that run a real Tryton server on a copy of the cached, seeded template.

The first run builds the template (about 40 s), later runs reuse it from
``.cache/tryton`` in the repository or from ``$ENTREPOT_TRYTON_CACHE``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.template import copy_database, ensure_template

DATABASE = "entrepot"


def require_trytond() -> None:
    """Skip the calling test when trytond is not installed, or fail it under CI."""
    if importlib.util.find_spec("trytond") is not None:
        return
    reason = "trytond is not installed; install the test extra: pip install -e '.[test]'"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tryton_template() -> Path:
    """The seeded template database, built on first use and cached across runs."""
    require_trytond()
    return ensure_template()


def serve_copy(template: Path, data_dir: Path) -> Iterator[TrytonServer]:
    copy_database(template, data_dir, DATABASE)
    server = TrytonServer(data_dir, DATABASE)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tryton(
    tryton_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrytonServer]:
    """A Tryton server on a copy of the template, shared by the tests of one module."""
    yield from serve_copy(tryton_template, tmp_path_factory.mktemp("tryton"))


@pytest.fixture
def fresh_tryton(tryton_template: Path, tmp_path: Path) -> Iterator[TrytonServer]:
    """A Tryton server on its own copy of the template, for one test."""
    yield from serve_copy(tryton_template, tmp_path / "tryton")
