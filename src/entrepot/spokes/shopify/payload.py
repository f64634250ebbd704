"""Pydantic models of the Shopify REST Admin Order fields that entrepot maps.

Field names are Shopify's own, so a validation error's path (``line_items[1].sku``)
points at the field in the webhook body. Fields not declared here are ignored.
Shopify sends most amounts as decimal strings but some as JSON numbers. The body is
parsed with JSON numbers as Decimal, and every amount is read with
``Decimal(str(value))``, so no float reaches the canonical model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)
from pydantic_core import PydanticCustomError

from entrepot.canonical.errors import FieldError, format_path
from entrepot.canonical.money import validate_currency_code

_ALPHA_2 = re.compile(r"[A-Z]{2}")

# Bounds far beyond any real order, so that a corrupted or hostile value is refused
# instead of posted to an ERP.
MAX_AMOUNT = Decimal(10) ** 15
MAX_QUANTITY = 1_000_000_000


def _parse_decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("must be a decimal number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a decimal number") from None
    if not amount.is_finite():
        raise ValueError("must be a finite decimal number")
    if abs(amount) >= MAX_AMOUNT:
        raise ValueError(f"must be below {MAX_AMOUNT:,} in size")
    return amount


def _check_not_negative(amount: Decimal) -> Decimal:
    if amount < 0:
        raise ValueError("must not be negative")
    return amount


def _parse_id(value: object) -> str:
    """Convert a Shopify id to a string. Ids are int64 and can exceed 2**53, so a
    float id is rejected because it may already have lost digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        # "0008020" and 8020 name the same order.
        return str(int(value))
    raise ValueError("must be a positive integer id")


def _parse_required_text(value: object) -> object:
    if value is None:
        raise PydanticCustomError("missing", "Field required")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
    return value


def _parse_optional_text(value: object) -> str | None:
    """Strip a text value, returning None for null or blank. A JSON number becomes a
    string, so a phone or postal code sent as a number is kept instead of rejected."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip() or None


def _check_currency(code: str) -> str:
    try:
        return validate_currency_code(code)
    except ValueError:
        # The error conversion appends the value as "(got 'ZZZ')", so the reason
        # leaves it out.
        raise ValueError("unknown ISO 4217 currency code") from None


def _check_country_code(code: str | None) -> str | None:
    if code is None:
        return None
    code = code.upper()
    if not _ALPHA_2.fullmatch(code):
        raise ValueError("must be a two-letter ISO 3166-1 alpha-2 country code")
    return code


def _check_positive(quantity: int) -> int:
    if quantity <= 0:
        raise ValueError("must be greater than 0")
    if quantity > MAX_QUANTITY:
        raise ValueError(f"must be at most {MAX_QUANTITY:,}")
    return quantity


def _require_object(value: object) -> object:
    if value is not None and not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


Amount = Annotated[Decimal, BeforeValidator(_parse_decimal)]
NonNegativeAmount = Annotated[Amount, AfterValidator(_check_not_negative)]
ShopifyId = Annotated[str, BeforeValidator(_parse_id)]
RequiredText = Annotated[str, BeforeValidator(_parse_required_text)]
OptionalText = Annotated[str | None, BeforeValidator(_parse_optional_text)]
Currency = Annotated[str, AfterValidator(_check_currency)]
CountryCode = Annotated[OptionalText, AfterValidator(_check_country_code)]
# Strict, so that true or 2.5 is refused instead of read as 1 or 2.
Quantity = Annotated[int, Strict(), AfterValidator(_check_positive)]


class _ShopifyModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ShopifyMoney(_ShopifyModel):
    """``shop_money`` or ``presentment_money`` inside a ``*_set`` object."""

    amount: Amount
    currency_code: Currency


class ShopifyMoneySet(_ShopifyModel):
    """A ``*_set`` object: the amount in the shop currency and in the presentment
    currency that the buyer saw."""

    shop_money: ShopifyMoney
    presentment_money: ShopifyMoney | None = None


class ShopifyTaxLine(_ShopifyModel):
    """An entry of ``tax_lines`` on a line item or a shipping line."""

    title: RequiredText
    price: NonNegativeAmount
    price_set: ShopifyMoneySet | None = None
    rate: NonNegativeAmount | None = None


class ShopifyDiscountAllocation(_ShopifyModel):
    """The share of one ``discount_applications`` entry that falls on a line."""

    amount: NonNegativeAmount
    amount_set: ShopifyMoneySet | None = None
    discount_application_index: int | None = Field(default=None, ge=0)


class ShopifyDiscountApplication(_ShopifyModel):
    """An entry of the order's ``discount_applications``. Only ``discount_code``
    applications carry ``code``, and the others carry ``title``."""

    type: str | None = None
    code: str | None = None
    title: str | None = None
    description: str | None = None
    value: Amount
    value_type: Literal["percentage", "fixed_amount"]
    allocation_method: Literal["across", "each", "one"] = "across"
    target_type: Literal["line_item", "shipping_line"] = "line_item"


class ShopifyLineItem(_ShopifyModel):
    """An entry of ``line_items``. ``price`` is the unit price before discounts."""

    id: ShopifyId
    sku: RequiredText
    name: str | None = None
    title: str | None = None
    quantity: Quantity
    price: NonNegativeAmount
    price_set: ShopifyMoneySet | None = None
    taxable: bool = True
    requires_shipping: bool = True
    tax_lines: list[ShopifyTaxLine] = Field(default_factory=list)
    discount_allocations: list[ShopifyDiscountAllocation] = Field(default_factory=list)


class ShopifyShippingLine(_ShopifyModel):
    """An entry of ``shipping_lines``. ``price`` is before shipping discounts."""

    code: str | None = None
    title: str | None = None
    price: NonNegativeAmount
    price_set: ShopifyMoneySet | None = None
    tax_lines: list[ShopifyTaxLine] = Field(default_factory=list)
    discount_allocations: list[ShopifyDiscountAllocation] = Field(default_factory=list)


class ShopifyAddress(_ShopifyModel):
    """A billing, shipping or customer address."""

    name: OptionalText = None
    first_name: OptionalText = None
    last_name: OptionalText = None
    company: OptionalText = None
    address1: OptionalText = None
    address2: OptionalText = None
    city: OptionalText = None
    province: OptionalText = None
    province_code: OptionalText = None
    zip: OptionalText = None
    country_code: CountryCode = None
    phone: OptionalText = None


AddressField = Annotated[ShopifyAddress | None, BeforeValidator(_require_object)]


class ShopifyCustomer(_ShopifyModel):
    """The ``customer`` object embedded in an order."""

    id: ShopifyId
    email: OptionalText = None
    first_name: OptionalText = None
    last_name: OptionalText = None
    phone: OptionalText = None
    tax_exempt: bool = False
    default_address: AddressField = None


class ShopifyOrder(_ShopifyModel):
    """A Shopify REST Admin Order, as the orders/create, orders/updated and
    orders/cancelled webhooks send it.

    ``created_at`` falls back to ``processed_at`` when it is absent or null.
    """

    id: ShopifyId
    name: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    cancelled_at: AwareDatetime | None = None
    cancel_reason: str | None = None
    currency: Currency
    presentment_currency: Currency | None = None
    taxes_included: bool = False
    email: OptionalText = None
    phone: OptionalText = None
    customer: Annotated[ShopifyCustomer | None, BeforeValidator(_require_object)] = None
    billing_address: AddressField = None
    shipping_address: AddressField = None
    line_items: Annotated[list[ShopifyLineItem], Field(min_length=1)]
    discount_applications: list[ShopifyDiscountApplication] = Field(default_factory=list)
    shipping_lines: list[ShopifyShippingLine] = Field(default_factory=list)
    financial_status: str | None = None
    # NOTE: parsed so that a malformed value is reported, but the canonical order
    # has no fulfillment field, so the value is not mapped. Null means unfulfilled.
    fulfillment_status: str | None = None
    payment_gateway_names: list[str] = Field(default_factory=list)
    total_outstanding: Amount | None = None
    subtotal_price: Amount
    subtotal_price_set: ShopifyMoneySet | None = None
    total_discounts: NonNegativeAmount
    total_discounts_set: ShopifyMoneySet | None = None
    total_shipping_price_set: ShopifyMoneySet | None = None
    total_tax: NonNegativeAmount
    total_tax_set: ShopifyMoneySet | None = None
    total_price: NonNegativeAmount
    total_price_set: ShopifyMoneySet | None = None

    @model_validator(mode="before")
    @classmethod
    def _fall_back_to_processed_at(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("created_at") is None:
            processed_at = data.get("processed_at")
            if processed_at is not None:
                return {**data, "created_at": processed_at}
        return data

    def consistency_errors(self) -> list[FieldError]:
        """List the errors that involve more than one field, with Shopify paths.

        Each ``shop_money`` must be in ``currency``, each ``presentment_money`` in
        ``presentment_currency`` (or ``currency`` when that is absent), and each
        ``discount_application_index`` must point into ``discount_applications``.
        """
        return self._currency_errors() + self._discount_index_errors()

    def _currency_errors(self) -> list[FieldError]:
        presentment = self.presentment_currency or self.currency
        errors = []
        for location, money_set in _money_sets(self, ()):
            shop_code = money_set.shop_money.currency_code
            if shop_code != self.currency:
                path = format_path((*location, "shop_money", "currency_code"))
                reason = f"must match the order currency {self.currency} (got {shop_code!r})"
                errors.append(FieldError(path, reason))

            money = money_set.presentment_money
            if money is not None and money.currency_code != presentment:
                path = format_path((*location, "presentment_money", "currency_code"))
                reason = (
                    f"must match the presentment currency {presentment} "
                    f"(got {money.currency_code!r})"
                )
                errors.append(FieldError(path, reason))
        return errors

    def _discount_index_errors(self) -> list[FieldError]:
        count = len(self.discount_applications)
        return _allocation_index_errors("line_items", self.line_items, count) + (
            _allocation_index_errors("shipping_lines", self.shipping_lines, count)
        )


def _allocation_index_errors(
    field: str, owners: Sequence[ShopifyLineItem | ShopifyShippingLine], count: int
) -> list[FieldError]:
    errors = []
    for position, owner in enumerate(owners):
        for number, allocation in enumerate(owner.discount_allocations):
            index = allocation.discount_application_index
            if index is None or index < count:
                continue
            location = (field, position, "discount_allocations", number)
            path = format_path((*location, "discount_application_index"))
            reason = f"must be below {count}, the number of discount_applications (got {index})"
            errors.append(FieldError(path, reason))
    return errors


def _money_sets(
    value: object, location: tuple[int | str, ...]
) -> Iterator[tuple[tuple[int | str, ...], ShopifyMoneySet]]:
    """Yield every ``*_set`` object under ``value`` with its location."""
    if isinstance(value, ShopifyMoneySet):
        yield location, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _money_sets(getattr(value, name), (*location, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _money_sets(item, (*location, index))
