"""Settings from TOML with environment overrides and command-line values on top."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydantic import ValidationError

from entrepot.config import load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_toml_values_read(tmp_path: Path) -> None:
    config = write(
        tmp_path / "e.toml", "[server]\nport = 9100\n[targets.erp]\nmax_concurrency = 3\n"
    )
    settings = load_settings(config)
    assert settings.server.port == 9100
    assert settings.targets["erp"].max_concurrency == 3


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "e.toml", '[shopify]\nwebhook_secret = "from-file"\n')
    monkeypatch.setenv("ENTREPOT_SHOPIFY__WEBHOOK_SECRET", "from-env")
    monkeypatch.setenv("ENTREPOT_TARGETS__ERP__REQUESTS_PER_SECOND", "2.5")
    settings = load_settings(config)
    assert settings.shopify.secrets_for("any.myshopify.com") == ["from-env"]
    assert settings.targets["erp"].requests_per_second == 2.5


def test_command_line_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTREPOT_SERVER__PORT", "9200")
    monkeypatch.setenv("ENTREPOT_SERVER__HOST", "127.0.0.2")
    settings = load_settings(server={"port": 9300})
    assert settings.server.port == 9300
    assert settings.server.host == "127.0.0.2"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "other.toml", "[workers]\nlease_seconds = 7\n")
    monkeypatch.setenv("ENTREPOT_CONFIG", str(config))
    assert load_settings().workers.lease_seconds == 7


def test_missing_config_file_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENTREPOT_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(FileNotFoundError, match=r"absent\.toml"):
        load_settings()


def test_unknown_key_rejected(tmp_path: Path) -> None:
    config = write(tmp_path / "e.toml", "[server]\nprot = 1\n")
    with pytest.raises(ValidationError, match="prot"):
        load_settings(config)


def test_routing_to_unknown_target_rejected(tmp_path: Path) -> None:
    config = write(tmp_path / "e.toml", '[routing]\ndefault_target = "netsuite-eu"\n')
    with pytest.raises(ValidationError, match="netsuite-eu"):
        load_settings(config)


def test_default_store_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(store={"data_dir": tmp_path})
    assert settings.store.database_url() == f"sqlite:///{tmp_path.resolve()}/entrepot.db"


def test_invalid_window_rejected_at_load() -> None:
    with pytest.raises(ValidationError, match="invalid maintenance window 'nightly 1-2'"):
        load_settings(targets={"erp": {"maintenance_windows": ["nightly 1-2"]}})


def test_unknown_timezone_rejected_at_load() -> None:
    with pytest.raises(ValidationError, match="unknown timezone 'Mars/Base'"):
        load_settings(targets={"erp": {"timezone": "Mars/Base"}})


def test_unknown_environment_section_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTREPOT_SHOPFY__WEBHOOK_SECRET", "x")
    with pytest.raises(ValueError, match="ENTREPOT_SHOPFY__WEBHOOK_SECRET names no section"):
        load_settings()


def test_body_limit_default_and_override(tmp_path: Path) -> None:
    config = write(tmp_path / "e.toml", "[server]\nmax_body_bytes = 2048\n")
    assert load_settings().server.max_body_bytes == 10 * 1024 * 1024
    assert load_settings(config).server.max_body_bytes == 2048


@pytest.mark.parametrize(("given", "stored"), [("DEBUG", "DEBUG"), ("warning", "WARNING")])
def test_log_level_names_accepted(given: str, stored: str) -> None:
    assert load_settings(logging={"level": given}).logging.level == stored


def test_unknown_log_level_rejected() -> None:
    with pytest.raises(ValidationError) as raised:
        load_settings(logging={"level": "CHATTY"})

    [error] = raised.value.errors()
    assert error["loc"] == ("logging", "level")
    assert error["msg"] == (
        "Value error, unknown log level 'CHATTY'; use one of CRITICAL, ERROR, WARNING, "
        "INFO or DEBUG"
    )


@pytest.mark.parametrize(
    "url", ["sqlite:////var/lib/entrepot/entrepot.db", "sqlite+pysqlite:///entrepot.db"]
)
def test_sqlite_store_url_accepted(url: str) -> None:
    assert load_settings(store={"url": url}).store.database_url() == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "not a url",
            "invalid database URL; write it as sqlite:///PATH or "
            "postgresql+DRIVER://USER:PASSWORD@HOST/DATABASE",
        ),
        (
            "mysql://user:secret@db.example/entrepot",
            "unsupported database 'mysql' in mysql://user:***@db.example/entrepot; "
            "entrepot stores its state in sqlite or postgresql",
        ),
        (
            "postgres://user@db.example/entrepot",
            "unsupported database 'postgres' in postgres://user@db.example/entrepot; "
            "entrepot stores its state in sqlite or postgresql",
        ),
        (
            "postgresql+asyncpg://user@db.example/entrepot",
            "the driver 'asyncpg' in postgresql+asyncpg://user@db.example/entrepot is "
            "asynchronous; name a synchronous one, such as postgresql+psycopg",
        ),
    ],
)
def test_bad_store_url_rejected(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        load_settings(store={"url": url})

    [error] = raised.value.errors()
    assert error["loc"] == ("store", "url")
    assert error["msg"] == f"Value error, {message}"


def test_store_url_without_driver_rejected() -> None:
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    with pytest.raises(ValidationError) as raised:
        load_settings(store={"url": "postgresql+psycopg://user:secret@db.example/entrepot"})

    [error] = raised.value.errors()
    assert error["msg"] == (
        "Value error, the driver 'psycopg' for postgresql+psycopg://user:***@db.example/"
        "entrepot is not installed (No module named 'psycopg'); install it, or name an "
        "installed driver in the URL"
    )


GOOD_SUBSCRIBER = {"url": "http://127.0.0.1:9/events", "secret": "s", "types": ["order.accepted"]}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("requests_per_second", float("inf"), "less than or equal to 10000"),
        ("timeout_seconds", float("inf"), "less than or equal to 3600"),
        ("ack_wait_seconds", 1e300, "less than or equal to 86400"),
        ("max_concurrency", 0, "greater than or equal to 1"),
        ("types", ["order.acepted"], "unknown event types ['order.acepted']; known types:"),
        ("url", "not a url", "url 'not a url' is not an http:// or https:// URL with a host"),
        ("url", "ftp://127.0.0.1/x", "is not an http:// or https:// URL with a host"),
        ("url", "http://127.0.0.1:99999/h", "has an invalid port"),
        ("secret", "", "secret is empty"),
    ],
)
def test_bad_subscriber_rejected(field: str, value: object, message: str) -> None:
    subscriber = GOOD_SUBSCRIBER | {field: value}
    with pytest.raises(ValidationError) as raised:
        load_settings(events={"subscribers": {"feed": subscriber}})

    [error] = raised.value.errors()
    assert error["loc"] == ("events", "subscribers", "feed", field)
    assert message in error["msg"]


@pytest.mark.parametrize("name", ["x" * 121, "with space", "dotted.name", ""])
def test_bad_subscriber_name_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        load_settings(events={"subscribers": {name: GOOD_SUBSCRIBER}})

    [error] = raised.value.errors()
    assert error["loc"] == ("events", "subscribers")
    assert f"subscriber name {name!r} is invalid" in error["msg"]


def test_long_subscriber_name_accepted() -> None:
    settings = load_settings(events={"subscribers": {"a" * 120: GOOD_SUBSCRIBER}})

    assert list(settings.events.subscribers) == ["a" * 120]


@pytest.mark.parametrize(
    "url",
    [
        "nats://",
        "redis://127.0.0.1:6379",
        "nats://127.0.0.1:4222,",
        "127.0.0.1:4222",
        "nats://127.0.0.1:abc",
        "nats://127.0.0.1:99999",
    ],
)
def test_bad_bus_url_rejected(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        load_settings(events={"bus_url": url})

    [error] = raised.value.errors()
    assert error["loc"] == ("events", "bus_url")
    assert "is not a bus entrepot knows" in error["msg"]


def test_bus_url_password_not_in_error() -> None:
    with pytest.raises(ValidationError) as raised:
        load_settings(events={"bus_url": "nats://user:s3cret@/"})

    assert "s3cret" not in str(raised.value.errors()[0]["msg"])


def test_server_list_bus_url_accepted() -> None:
    url = "nats://127.0.0.1:4222, tls://127.0.0.1:4223"

    assert load_settings(events={"bus_url": url}).events.bus_url == url


def test_ack_wait_must_cover_rate_limit_wait() -> None:
    subscriber = GOOD_SUBSCRIBER | {
        "requests_per_second": 0.25,
        "max_concurrency": 10,
        "timeout_seconds": 1,
        "ack_wait_seconds": 31,
    }
    with pytest.raises(ValidationError) as raised:
        load_settings(events={"subscribers": {"feed": subscriber}})

    assert (
        "must be longer than timeout_seconds plus max_concurrency / requests_per_second (41)"
        in (raised.value.errors()[0]["msg"])
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("requests_per_second", float("inf"), "less than or equal to 10000"),
        ("base_url", "not a url", "base_url 'not a url' is not an http:// or https:// URL"),
        ("base_url", "http://127.0.0.1:99999", "has an invalid port"),
    ],
)
def test_bad_target_rejected(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        load_settings(targets={"erp": {field: value}})

    [error] = raised.value.errors()
    assert error["loc"] == ("targets", "erp", field)
    assert message in error["msg"]
