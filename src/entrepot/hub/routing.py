"""Routing: choose the target of an order from rules that are data."""

from __future__ import annotations

from entrepot.canonical import SalesOrder
from entrepot.config import RoutingRule, RoutingSettings


def route(order: SalesOrder, routing: RoutingSettings) -> str:
    """Return the target of the first rule that matches, else the default."""
    for rule in routing.rules:
        if _matches(rule, order):
            return rule.target
    return routing.default_target


def _matches(rule: RoutingRule, order: SalesOrder) -> bool:
    checks = (
        (rule.channel, order.channel),
        (rule.account, order.channel_account),
        (rule.currency, order.currency),
    )
    return all(expected is None or expected == actual for expected, actual in checks)
