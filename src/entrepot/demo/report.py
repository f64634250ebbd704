"""The demo's report: one row per order, then the counts, all from the hub's store."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from entrepot.demo.story import Expected, Story


@dataclass(frozen=True)
class OrderOutcome:
    """The outcome of one order, next to the state the demo expected."""

    channel_order_id: str
    order_number: str | None
    state: str
    erp_id: str | None
    total: str | None
    currency: str | None
    attempts: int
    retries: int
    reason: str | None
    expected_state: str
    as_expected: bool

    @classmethod
    def from_view(cls, expected: Expected, view: dict[str, Any]) -> OrderOutcome:
        state = str(view.get("state", "missing"))
        reason = view.get("last_error")
        reason_ok = expected.reason_contains is None or expected.reason_contains in (reason or "")
        return cls(
            channel_order_id=expected.order_id,
            order_number=view.get("order_number"),
            state=state,
            erp_id=view.get("erp_id"),
            total=view.get("total"),
            currency=view.get("currency"),
            attempts=int(view.get("attempts", 0)),
            retries=sum(max(0, int(d["attempts"]) - 1) for d in view.get("deliveries", [])),
            reason=reason,
            expected_state=expected.state,
            as_expected=state == expected.state and reason_ok,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def print_report(
    console: Console,
    outcomes: list[OrderOutcome],
    summary: dict[str, Any],
    story: Story,
    drain_seconds: float,
) -> None:
    table = Table(title="Orders")
    for column in ("order", "state", "ERP id", "total", "attempts", "as expected"):
        table.add_column(column)
    for outcome in outcomes:
        total = f"{outcome.total} {outcome.currency}" if outcome.total else ""
        table.add_row(
            outcome.order_number or outcome.channel_order_id,
            outcome.state,
            outcome.erp_id or "",
            total,
            str(outcome.attempts),
            "yes" if outcome.as_expected else f"no (expected {outcome.expected_state})",
        )
    console.print(table)
    for outcome in outcomes:
        if outcome.reason:
            name = outcome.order_number or outcome.channel_order_id
            line = Text.assemble((name, "bold"), f" {outcome.state}: {outcome.reason}")
            console.print(line, soft_wrap=True)
    console.print(_counts(outcomes, summary, story, drain_seconds))


def _counts(
    outcomes: list[OrderOutcome], summary: dict[str, Any], story: Story, drain_seconds: float
) -> Table:
    receipts = summary["receipts"]
    sent = sum(1 for step in story.steps if hasattr(step, "topic"))
    states = summary["orders"]
    table = Table(title="What happened", show_header=False)
    rows = [
        ("webhooks sent", sent),
        ("webhooks stored", sum(receipts.values())),
        ("duplicates ignored", summary["duplicates_ignored"]),
        ("orders posted to the ERP", sum(1 for o in outcomes if o.erp_id)),
        ("rejected with reason", states.get("rejected", 0)),
        ("dead-lettered after retries", states.get("dead_lettered", 0)),
        ("cancelled", states.get("cancelled", 0)),
        ("dead letters open", summary["open_dead_letters"]),
        ("retries", sum(outcome.retries for outcome in outcomes)),
        ("time to drain", f"{drain_seconds:.1f} s"),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    return table
