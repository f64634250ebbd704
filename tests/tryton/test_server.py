"""The Tryton server fixture and the seeded data, checked over plain JSON-RPC."""

from __future__ import annotations

import base64
import datetime
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.template import copy_database

GOODS_SKUS = [
    "ACME-ANCHOR-10",
    "ACME-BOLT-M10",
    "ACME-BOLT-M8",
    "ACME-DRILL-6",
    "ACME-NUT-M8",
    "ACME-TOOLBOX-L",
    "ACME-WASHER-M8",
    "IPOD2008BLACK",
    "IPOD2008GREEN",
    "IPOD2008PINK",
    "IPOD2008RED",
    "IPOD2009BLACK",
    "NORD-DOWEL-8",
    "NORD-SCREW-4X40",
    "SKU-A",
    "SKU-B",
    "SKU-C",
]
SERVICE_CODES = ["ENTREPOT-ADJUSTMENT", "ENTREPOT-DISCOUNT", "ENTREPOT-SHIPPING"]


class Session:
    """A logged-in JSON-RPC session on the server's database."""

    def __init__(self, server: TrytonServer) -> None:
        self.client = httpx.Client(base_url=server.url, timeout=30.0)
        self.database = server.database
        login = call(
            self.client,
            f"/{server.database}/rpc/",
            "common.db.login",
            [server.username, {"password": server.password}, "en"],
        )
        user_id, token = login[0], login[1]
        credentials = f"{server.username}:{user_id}:{token}".encode()
        self.client.headers["Authorization"] = "Session " + base64.b64encode(credentials).decode()
        self.context: dict[str, Any] = self.call("model.res.user.get_preferences", True, {})

    def call(self, method: str, *params: Any) -> Any:
        return call(self.client, f"/{self.database}/rpc/", method, list(params))

    def model(self, name: str, method: str, *params: Any, **context: Any) -> Any:
        """Call ``method`` of model ``name`` with the user's context plus ``context``."""
        return self.call(f"model.{name}.{method}", *params, {**self.context, **context})

    def search_read(self, name: str, domain: list[Any], fields: list[str], **context: Any) -> Any:
        return self.model(name, "search_read", domain, 0, None, None, fields, **context)


def call(client: httpx.Client, path: str, method: str, params: list[Any]) -> Any:
    response = client.post(path, json={"id": 1, "method": method, "params": params})
    response.raise_for_status()
    body = response.json()
    assert "error" not in body, f"{method} failed: {body['error']}"
    return body["result"]


def decimal(value: dict[str, str]) -> Decimal:
    assert value["__class__"] == "Decimal"
    return Decimal(value["decimal"])


def server_version(server: TrytonServer) -> Any:
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        return call(client, "/rpc/", "common.server.version", [])


@pytest.fixture(scope="module")
def session(tryton: TrytonServer) -> Iterator[Session]:
    session = Session(tryton)
    yield session
    session.client.close()


def test_server_version_is_8_2(tryton: TrytonServer) -> None:
    assert server_version(tryton) == "8.2"


def test_server_listens_on_loopback(tryton: TrytonServer) -> None:
    assert tryton.url == f"http://127.0.0.1:{tryton.port}"
    assert tryton.port > 0


def test_login_sets_company(session: Session) -> None:
    assert session.context["company"] is not None
    assert session.context["language"] == "en"


def test_company_currency_usd(session: Session) -> None:
    [company] = session.search_read("company.company", [], ["currency.code"])
    assert company["currency."]["code"] == "USD"


def test_eur_has_rate(session: Session) -> None:
    [eur] = session.search_read("currency.currency", [["code", "=", "EUR"]], ["rate"])
    assert decimal(eur["rate"]) > 0


def test_product_bolt_stock_1000(session: Session) -> None:
    [warehouse] = session.model(
        "stock.location", "search", [["type", "=", "warehouse"]], 0, None, None
    )
    products = session.search_read(
        "product.product",
        [["code", "=", "ACME-BOLT-M8"]],
        ["code", "salable", "type", "quantity", "list_price_used", "default_uom.name"],
        locations=[warehouse],
    )
    assert len(products) == 1
    [bolt] = products
    assert bolt["code"] == "ACME-BOLT-M8"
    assert bolt["salable"] is True
    assert bolt["type"] == "goods"
    assert bolt["quantity"] == 1000
    assert decimal(bolt["list_price_used"]) == Decimal("14.50")
    assert bolt["default_uom."]["name"] == "Unit"


def test_goods_all_stocked(session: Session) -> None:
    [warehouse] = session.model(
        "stock.location", "search", [["type", "=", "warehouse"]], 0, None, None
    )
    products = session.search_read(
        "product.product",
        [["type", "=", "goods"]],
        ["code", "quantity", "account_category"],
        locations=[warehouse],
    )
    assert sorted(product["code"] for product in products) == GOODS_SKUS
    assert {product["quantity"] for product in products} == {1000}
    assert all(product["account_category"] for product in products)


def test_service_products_seeded(session: Session) -> None:
    products = session.search_read(
        "product.product", [["type", "=", "service"]], ["code", "salable"]
    )
    assert sorted(product["code"] for product in products) == SERVICE_CODES
    assert all(product["salable"] for product in products)


def test_taxes_seeded(session: Session) -> None:
    taxes = session.search_read("account.tax", [], ["name", "rate", "type", "invoice_account"])
    rates = sorted(decimal(tax["rate"]) for tax in taxes)
    assert rates == [Decimal(r) for r in ("0.05", "0.06", "0.0625", "0.0725", "0.10", "0.19")]
    assert {tax["type"] for tax in taxes} == {"percentage"}
    assert all(tax["invoice_account"] for tax in taxes)
    assert "Sales tax 6.25 %" in {tax["name"] for tax in taxes}


def test_fiscal_years_this_and_next(session: Session) -> None:
    years = session.search_read("account.fiscalyear", [], ["name", "periods", "state"])
    this_year = datetime.date.today().year
    assert sorted(year["name"] for year in years) == [str(this_year), str(this_year + 1)]
    assert all(len(year["periods"]) == 12 for year in years)


def test_payment_term_direct(session: Session) -> None:
    terms = session.search_read("account.invoice.payment_term", [["name", "=", "Direct"]], ["id"])
    assert len(terms) == 1


def test_subdivision_pondicherry(session: Session) -> None:
    [subdivision] = session.search_read(
        "country.subdivision", [["code", "=", "IN-PY"]], ["name", "country.code"]
    )
    assert subdivision["name"] == "Pondicherry"
    assert subdivision["country."]["code"] == "IN"


def test_subdivision_us_ca(session: Session) -> None:
    [subdivision] = session.search_read(
        "country.subdivision", [["code", "=", "US-CA"]], ["name", "type"]
    )
    assert subdivision["name"] == "California"
    assert subdivision["type"] == "state"


def test_countries_seeded(session: Session) -> None:
    countries = session.search_read("country.country", [], ["code"])
    assert sorted(country["code"] for country in countries) == ["CA", "DE", "GB", "IN", "US"]


def test_party_category_credit_hold(session: Session) -> None:
    categories = session.search_read("party.category", [["name", "=", "Credit hold"]], ["id"])
    assert len(categories) == 1


def test_party_credit_limit_fields(session: Session) -> None:
    [company] = session.search_read("company.company", [], ["party"])
    [party] = session.model(
        "party.party", "read", [company["party"]], ["credit_limit_amount", "credit_amount"]
    )
    assert party["credit_limit_amount"] is None
    assert decimal(party["credit_amount"]) == 0


def test_wholesale_price_list_not_default(session: Session) -> None:
    [price_list] = session.search_read(
        "product.price_list", [["name", "=", "Wholesale"]], ["lines.formula"]
    )
    assert [line["formula"] for line in price_list["lines."]] == ["unit_price * 0.9"]
    [configuration] = session.model("sale.configuration", "read", [1], ["sale_price_list"])
    assert configuration["sale_price_list"] is None


def test_stop_then_start_answers(fresh_tryton: TrytonServer) -> None:
    port = fresh_tryton.port
    fresh_tryton.stop()
    assert not fresh_tryton.running
    with pytest.raises(httpx.ConnectError):
        server_version(fresh_tryton)

    fresh_tryton.start()
    assert fresh_tryton.port == port
    assert server_version(fresh_tryton) == "8.2"
    assert Session(fresh_tryton).context["company"] is not None


def test_start_missing_database_raises(tmp_path: Path) -> None:
    server = TrytonServer(tmp_path, "missing")
    with pytest.raises(FileNotFoundError, match=r"missing\.sqlite"):
        server.start()
    assert not server.running


def test_start_failure_shows_log(tryton_template: Path, tmp_path: Path) -> None:
    copy_database(tryton_template, tmp_path, "busy")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = TrytonServer(tmp_path, "busy", port=holder.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="exited with code") as failure:
                server.start()
        finally:
            server.stop()
    assert "Address already in use" in str(failure.value)
    assert not server.running


def test_copy_database_includes_wal(tmp_path: Path) -> None:
    source = tmp_path / "source.sqlite"
    writer = sqlite3.connect(source)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE item (code TEXT)")
    writer.execute("INSERT INTO item VALUES ('ACME-BOLT-M8')")
    writer.commit()
    assert Path(f"{source}-wal").stat().st_size > 0

    copy_database(source, tmp_path / "copy", "copied")
    writer.close()
    with closing(sqlite3.connect(tmp_path / "copy" / "copied.sqlite")) as reader:
        rows = reader.execute("SELECT code FROM item").fetchall()
    assert rows == [("ACME-BOLT-M8",)]
