"""Result rows, the results table, and helpers shared by the benchmarks."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"

# A maintenance window that covers every date a benchmark can run on. A target in
# this window gets no requests, so its delivery worker only sleeps and polls.
ALWAYS_CLOSED_WINDOW = "2000-01-01T00:00:00+00:00/2100-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class Row:
    """One figure of a benchmark, with its ratio to the baseline of the same run.

    ``ratio`` is None for figures that have no baseline, such as latencies and counts.
    """

    benchmark: str
    measure: str
    value: float
    unit: str
    ratio: float | None = None
    note: str = ""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == int(value) and abs(value) < 1e9:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    """Return the rows as a Markdown table, so that it can be pasted into the docs."""
    header = ("benchmark", "measure", "value", "unit", "ratio", "note")
    cells = [
        (
            row.benchmark,
            row.measure,
            format_value(row.value),
            row.unit,
            "" if row.ratio is None else f"{row.ratio:.3f}",
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right_aligned = {2, 4}

    def render(line: Sequence[str]) -> str:
        padded = [
            text.rjust(width) if i in right_aligned else text.ljust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (width + 1) + ":" if i in right_aligned else "-" * (width + 2)
        for i, width in enumerate(widths)
    )
    rule += "|"
    return "\n".join([render(header), rule, *(render(line) for line in cells)])


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` quantile of ``values`` (nearest rank), or NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def machine_summary() -> str:
    """Describe the processors, memory, Python and SQLite of this machine in one line."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory = f", {gib:.0f} GiB memory"
    return (
        f"{os.cpu_count()} CPUs ({model}){memory}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def repository_root() -> Path:
    return Path(__file__).resolve().parents[1]


def process_cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds used so far by process ``pid`` (Linux only)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name in brackets may contain spaces, so split after its closing bracket.
    fields = stat.rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MachineCpu:
    """Busy and stolen CPU seconds of the whole machine since boot, from /proc/stat."""

    busy: float
    steal: float

    @classmethod
    def read(cls) -> MachineCpu:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        ticks = os.sysconf("SC_CLK_TCK")
        return cls((user + nice + system + irq + softirq) / ticks, steal / ticks)

    def others_since(self, start: MachineCpu, own_seconds: float, wall_seconds: float) -> Row:
        """Return the cores used by processes other than the measured ones since ``start``.

        ``own_seconds`` is the CPU time of the benchmark's own processes over the same
        ``wall_seconds``. A high value means that another program shared the machine.
        The row has no benchmark name; callers fill it in with ``dataclasses.replace``.
        """
        others = max(self.busy - start.busy - own_seconds, 0.0) / wall_seconds
        steal = (self.steal - start.steal) / wall_seconds
        return Row(
            "",
            "CPU of other processes",
            others,
            "cores",
            note=f"of {os.cpu_count()}; hypervisor steal {steal:.2f} cores",
        )


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan
