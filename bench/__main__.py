"""Run the benchmarks: ``python -m bench [intake|delivery] [--quick] [--keep]``.

Run it from the repository root with the project's virtual environment. It prints
one table of results, each ratio taken against a baseline measured in the same run,
and exits with status 1 if a correctness check of a benchmark failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import delivery, intake
from bench.common import Row, format_table, machine_summary


def parse_arguments(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark entrepot's intake and delivery."
    )
    parser.add_argument(
        "benchmark",
        nargs="?",
        choices=("all", "intake", "delivery"),
        default="all",
        help="the benchmark to run (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads, for a check in about 2 minutes"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder with the databases and process logs",
    )
    return parser.parse_args(arguments)


def main(arguments: list[str]) -> int:
    options = parse_arguments(arguments)
    folder = Path(tempfile.mkdtemp(prefix="entrepot-bench-"))
    rows: list[Row] = []
    passed = True
    started = time.monotonic()
    try:
        if options.benchmark in ("all", "intake"):
            intake_folder = folder / "intake"
            intake_folder.mkdir()
            intake_rows, intake_passed = intake.run(
                intake.QUICK if options.quick else intake.FULL, intake_folder
            )
            rows += intake_rows
            passed = passed and intake_passed
        if options.benchmark in ("all", "delivery"):
            delivery_folder = folder / "delivery"
            delivery_folder.mkdir()
            delivery_rows, delivery_passed = delivery.run(
                delivery.QUICK if options.quick else delivery.FULL, delivery_folder
            )
            rows += delivery_rows
            passed = passed and delivery_passed
    finally:
        if options.keep:
            print(f"Data and logs kept in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    mode = "quick" if options.quick else "full"
    print(f"Machine: {machine_summary()}")
    print(f"Mode: {mode}; took {time.monotonic() - started:.0f} s")
    print()
    print(format_table(rows))
    if not passed:
        print("\nA correctness check failed; see the notes above.", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
