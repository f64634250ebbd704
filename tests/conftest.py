from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import EXAMPLE_SKUS, SHARED_SAMPLES, ErpSim
from tests.shopsim import ShopSim, running_shop
from tests.stores import postgres_database


@pytest.fixture
def samples_dir() -> Path:
    """The shared real-format samples, or a skip where they are absent."""
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"shared samples not found at {SHARED_SAMPLES}")
    return SHARED_SAMPLES


@pytest.fixture
def erp(tmp_path: Path) -> Iterator[ErpSim]:
    """The ERP simulator, knowing the example orders' SKUs."""
    sim = ErpSim(tmp_path / "erp", concurrency=8)
    sim.add_items(*EXAMPLE_SKUS)
    yield sim
    sim.close()


@pytest.fixture
def shop() -> Iterator[ShopSim]:
    """A simulated Shopify shop's Admin API, on a loopback port."""
    with running_shop() as sim:
        yield sim


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'entrepot.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of an empty PostgreSQL database, for tests of PostgreSQL alone."""
    with postgres_database() as url:
        yield url
