"""Money: a Decimal amount with an ISO 4217 currency, never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BaseModel, ConfigDict


def validate_currency_code(code: str) -> str:
    """Return the code unchanged if ISO 4217 lists it, else raise ValueError."""
    if len(code) != 3 or not code.isupper() or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"unknown ISO 4217 currency code {code!r}")
    return code


CurrencyCode = Annotated[str, AfterValidator(validate_currency_code)]


class CurrencyMismatchError(ValueError):
    """Raised when arithmetic mixes two currencies."""


class Money(BaseModel):
    """An amount of one currency."""

    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: CurrencyCode

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=Decimal("0"), currency=currency)

    def __add__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __mul__(self, factor: int | Decimal) -> Money:
        return Money(amount=self.amount * factor, currency=self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"

    def _check_same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatchError(
                f"cannot combine {self.currency} and {other.currency} amounts"
            )


def sum_money(amounts: list[Money], currency: str) -> Money:
    """Add up amounts of one currency; an empty list gives zero."""
    total = Money.zero(currency)
    for amount in amounts:
        total = total + amount
    return total


class MoneySet(BaseModel):
    """One amount in the shop's currency and, where the channel sends it, in the
    presentment currency the buyer saw."""

    model_config = ConfigDict(frozen=True)

    shop_money: Money
    presentment_money: Money | None = None
