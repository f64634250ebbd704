"""Seed a Tryton database with the master data that entrepot's tests and demo expect.

Run as ``python -m entrepot.spokes.tryton.seed DATABASE`` with ``TRYTOND_DATABASE__URI``
and ``TRYTOND_DATABASE__PATH`` set, on a database whose modules are activated (see
``template.MODULES``). It works in this process through proteus and the modules' own test
helpers, so no server is needed, and it prints nothing on success.
"""

from __future__ import annotations

import datetime
import sys
from decimal import Decimal
from typing import Any

import pycountry
from proteus import Model, config
from trytond.modules.account.tests.tools import (
    create_chart,
    create_fiscalyear,
    create_tax,
    get_accounts,
)
from trytond.modules.account_invoice.tests.tools import (
    create_payment_term,
    set_fiscalyear_invoice_sequences,
)
from trytond.modules.company.tests.tools import create_company, get_company

# SKU -> (name, list price in USD). The SKU becomes the product's code unchanged.
GOODS: dict[str, tuple[str, str]] = {
    "ACME-ANCHOR-10": ("Sleeve anchor 10 mm", "32.00"),
    "ACME-BOLT-M10": ("Hex bolt M10 x 60", "18.75"),
    "ACME-BOLT-M8": ("Hex bolt M8 x 40", "14.50"),
    "ACME-DRILL-6": ("Masonry drill bit 6 mm", "11.20"),
    "ACME-NUT-M8": ("Hex nut M8", "6.20"),
    "ACME-TOOLBOX-L": ("Steel toolbox", "48.00"),
    "ACME-WASHER-M8": ("Flat washer M8", "3.75"),
    "NORD-DOWEL-8": ("Wall plug 8 mm", "5.95"),
    "NORD-SCREW-4X40": ("Wood screw 4 x 40", "23.80"),
    "IPOD2008BLACK": ("IPod Nano 8GB black", "199.00"),
    "IPOD2008GREEN": ("IPod Nano 8GB green", "199.00"),
    "IPOD2008PINK": ("IPod Nano 8GB pink", "199.00"),
    "IPOD2008RED": ("IPod Nano 8GB red", "199.00"),
    "IPOD2009BLACK": ("IPod Touch 8GB black", "199.00"),
    "SKU-A": ("Sample item A", "10.00"),
    "SKU-B": ("Sample item B", "20.00"),
    "SKU-C": ("Sample item C", "30.00"),
}
# Code -> name of the service products that carry an order's shipping, discounts and
# rounding adjustments as sale lines.
SERVICES: dict[str, str] = {
    "ENTREPOT-SHIPPING": "Shipping",
    "ENTREPOT-DISCOUNT": "Discount",
    "ENTREPOT-ADJUSTMENT": "Adjustment",
}
TAX_RATES = ("0.05", "0.06", "0.0625", "0.0725", "0.10", "0.19")
STOCK_QUANTITY = 1000
COUNTRIES = ("US", "CA", "DE", "GB", "IN")
# Subdivision names that differ from pycountry's: the ERP keeps an older name, so that
# the channel's current name has to be matched against it.
SUBDIVISION_NAMES = {"IN-PY": "Pondicherry"}
# Units of EUR per unit of USD, the company's currency, whose rate is 1.
EUR_RATE = Decimal("0.92")
CREDIT_HOLD = "Credit hold"
WHOLESALE_FORMULA = "unit_price * 0.9"


def seed(database: str) -> None:
    """Connect proteus to ``database`` in this process and create all master data."""
    config.set_trytond(database)
    create_company(currency="USD")
    create_currency("EUR", "Euro", "€", EUR_RATE)
    create_chart()
    today = datetime.date.today()
    create_fiscal_year(today.year)
    create_fiscal_year(today.year + 1)
    create_payment_term().save()
    category = create_goods_category()
    create_taxes()
    products = [create_goods(sku, name, price, category) for sku, (name, price) in GOODS.items()]
    for code, name in SERVICES.items():
        create_service(code, name, category)
    stock_products(products, STOCK_QUANTITY)
    for country_code in COUNTRIES:
        create_country(country_code)
    Model.get("party.category")(name=CREDIT_HOLD).save()
    create_price_list("Wholesale", WHOLESALE_FORMULA)


def create_currency(code: str, name: str, symbol: str, rate: Decimal) -> None:
    """Create a currency whose rate applies from 2000-01-01 on."""
    Currency = Model.get("currency.currency")
    currency = Currency(name=name, code=code, symbol=symbol, rounding=Decimal("0.01"))
    currency.rates.new(date=datetime.date(2000, 1, 1), rate=rate)
    currency.save()


def create_fiscal_year(year: int) -> None:
    """Create the calendar ``year`` as a fiscal year with monthly periods and the
    sequences that posting invoices needs."""
    period = (datetime.date(year, 1, 1), datetime.date(year, 12, 31))
    fiscal_year = set_fiscalyear_invoice_sequences(create_fiscalyear(today=period))
    fiscal_year.save()
    fiscal_year.click("create_period")


def create_goods_category() -> Any:
    """Create the accounting category that every goods product needs to be invoiced."""
    accounts = get_accounts()
    category = Model.get("product.category")(
        name="Goods",
        accounting=True,
        account_revenue=accounts["revenue"],
        account_expense=accounts["expense"],
    )
    category.save()
    return category


def create_taxes() -> None:
    """Create one customer tax per rate in ``TAX_RATES``, on the chart's tax account."""
    for rate in TAX_RATES:
        tax = create_tax(Decimal(rate))
        percent = format((Decimal(rate) * 100).normalize(), "f")
        tax.name = tax.description = f"Sales tax {percent} %"
        tax.save()


def create_goods(sku: str, name: str, price: str, category: Any) -> Any:
    """Create a salable goods product and return its variant (``product.product``)."""
    template = new_template(sku, name, "goods", price)
    template.account_category = category
    template.save()
    return template.products[0]


def create_service(code: str, name: str, category: Any) -> None:
    """Create a service product; it needs the accounting category too, or Tryton cannot
    invoice a sale that has a line of it and stops processing that sale."""
    template = new_template(code, name, "service", "0")
    template.account_category = category
    template.save()


def new_template(code: str, name: str, type_: str, price: str) -> Any:
    unit = Model.get("product.uom").find([("name", "=", "Unit")])[0]
    return Model.get("product.template")(
        name=name,
        code=code,
        type=type_,
        salable=True,
        default_uom=unit,
        sale_uom=unit,
        list_price=Decimal(price),
    )


def stock_products(products: list[Any], quantity: int) -> None:
    """Set each product's on-hand quantity in the default warehouse's storage location
    through a confirmed inventory."""
    Location = Model.get("stock.location")
    warehouse = Location.find([("type", "=", "warehouse")])[0]
    inventory = Model.get("stock.inventory")(location=warehouse.storage_location)
    for product in products:
        inventory.lines.new(product=product, quantity=quantity)
    inventory.save()
    inventory.click("confirm")


def create_country(code: str) -> None:
    """Create the country and its ISO 3166-2 subdivisions from pycountry, with each
    subdivision under its parent where pycountry names one."""
    source = pycountry.countries.lookup(code)
    country = Model.get("country.country")(
        name=source.name, code=code, code3=source.alpha_3, code_numeric=source.numeric
    )
    country.save()

    Subdivision = Model.get("country.subdivision")
    known_types = {value for value, _ in Subdivision._fields["type"]["selection"]}
    pending = sorted(
        (item for item in pycountry.subdivisions if item.country_code == code),
        key=lambda item: item.code,
    )
    created: dict[str, Any] = {}
    # Parents are created before their children, one batch per level, because setting
    # parents in a second pass of writes takes several times longer.
    while pending:
        level = [item for item in pending if item.parent_code in created or not item.parent_code]
        if not level:
            raise ValueError(f"pycountry subdivisions of {code} have unknown parents")
        records = [
            Subdivision(
                country=country,
                code=item.code,
                name=SUBDIVISION_NAMES.get(item.code, item.name),
                type=item.type.lower() if item.type.lower() in known_types else None,
                parent=created.get(item.parent_code) if item.parent_code else None,
            )
            for item in level
        ]
        Subdivision.save(records)
        created.update((record.code, record) for record in records)
        pending = [item for item in pending if item.code not in created]


def create_price_list(name: str, formula: str) -> None:
    """Create a price list with one line for all products. It is deliberately not the
    sale configuration's default, so sales use list prices unless a party names it."""
    price_list = Model.get("product.price_list")(
        name=name, price="list_price", company=get_company()
    )
    price_list.lines.new(formula=formula)
    price_list.save()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m entrepot.spokes.tryton.seed DATABASE", file=sys.stderr)
        return 2
    seed(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
