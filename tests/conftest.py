from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import EXAMPLE_SKUS, SHARED_SAMPLES, ErpSim
from tests.shopsim import ShopSim, running_shop


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
