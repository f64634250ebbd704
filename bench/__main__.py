"""Run the benchmarks: ``python -m bench [intake|delivery|tryton|events] [--quick]``.

Run it from the repository root with the project's virtual environment. It prints
one table of results, each ratio taken against a baseline measured in the same run,
and exits with status 1 if a correctness check of a benchmark failed. ``all`` runs
intake and delivery; ``tryton`` needs the tryton extra installed and ``events`` the
bench extra, and each runs only when named.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import delivery, intake, tryton
from bench.common import Row, format_table, machine_summary


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive integer")
    return value


def parse_arguments(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark entrepot's intake, delivery and event path, and posting to Tryton.",
    )
    parser.add_argument(
        "benchmark",
        nargs="?",
        choices=("all", "intake", "delivery", "tryton", "events"),
        default="all",
        help="the benchmark to run (default: all, which is intake and delivery)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads, for a check in about a minute"
    )
    parser.add_argument(
        "--connections",
        type=positive_int,
        metavar="K",
        help="intake: concurrent connections of the load generator (default: 16)",
    )
    parser.add_argument(
        "--webhooks",
        type=positive_int,
        metavar="N",
        help="intake: webhooks measured per server (default: 5000, or 600 with --quick)",
    )
    parser.add_argument(
        "--client",
        choices=intake.CLIENTS,
        help="intake: load generator, asyncio streams or httpx (default: asyncio)",
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
    tables: list[str] = []
    passed = True
    started = time.monotonic()
    try:
        if options.benchmark in ("all", "intake"):
            intake_folder = folder / "intake"
            intake_folder.mkdir()
            intake_options = intake.QUICK if options.quick else intake.FULL
            if options.connections is not None:
                intake_options = replace(intake_options, connections=options.connections)
            if options.webhooks is not None:
                intake_options = replace(intake_options, webhooks=options.webhooks)
            if options.client is not None:
                intake_options = replace(intake_options, client=options.client)
            intake_rows, intake_passed = intake.run(intake_options, intake_folder)
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
        if options.benchmark == "tryton":
            tryton_folder = folder / "tryton"
            tryton_folder.mkdir()
            tryton_table, tryton_passed = tryton.run(
                tryton.QUICK if options.quick else tryton.FULL, tryton_folder
            )
            tables.append(tryton_table)
            passed = passed and tryton_passed
        if options.benchmark == "events":
            # Imported here because it needs Celery, from the bench extra.
            from bench import events

            events_folder = folder / "events"
            events_folder.mkdir()
            events_table, events_passed = events.run(
                events.QUICK if options.quick else events.FULL, events_folder
            )
            tables.append(events_table)
            passed = passed and events_passed
    finally:
        if options.keep:
            print(f"Data and logs kept in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    mode = "quick" if options.quick else "full"
    print(f"Machine: {machine_summary()}")
    print(f"Mode: {mode}; took {time.monotonic() - started:.0f} s")
    print()
    if rows:
        tables.insert(0, format_table(rows))
    print("\n\n".join(tables))
    if not passed:
        print("\nA correctness check failed. The table names it.", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
