"""Settings from a TOML file, overridden by environment variables.

Every key can be set as ``ENTREPOT_<SECTION>__<KEY>`` in capitals, for example
``ENTREPOT_SHOPIFY__WEBHOOK_SECRET``; nested tables add one more ``__`` per level
(``ENTREPOT_TARGETS__ERP__REQUESTS_PER_SECOND``). Precedence, highest first:
command-line options, environment variables, the TOML file, built-in defaults.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "ENTREPOT_"
CONFIG_ENV_VAR = "ENTREPOT_CONFIG"
DEFAULT_CONFIG_FILE = Path("entrepot.toml")
# Subscriber names: they name store rows (120 characters) and NATS consumers.
SUBSCRIBER_NAME = re.compile(r"[A-Za-z0-9_-]{1,120}")
# The databases the store's migrations and inserts are written for.
SUPPORTED_DATABASES = frozenset({"sqlite", "postgresql"})


def redact_url(url: str) -> str:
    """Return ``url`` with any user name and password replaced by ``***``."""
    return re.sub(r"//[^/@,]*@", "//***@", url)


def check_http_url(field: str, url: str) -> str:
    """Return ``url`` when it is an http:// or https:// URL with a host and a valid
    port, else raise `ValueError` naming ``field``."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (reading it checks the port)
    except ValueError as exc:
        raise ValueError(f"{field} {url!r} has an invalid port: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} {url!r} is not an http:// or https:// URL with a host")
    return url


class Section(BaseModel):
    """A table of the configuration; an unknown key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    """The HTTP server's listening address and port, and ``max_body_bytes``, the
    largest webhook body it accepts. A larger body gets 413 and is not stored."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)


class ApiSettings(Section):
    """Access to the operations API (``/api/...``). With ``token`` set, requests must
    carry ``Authorization: Bearer <token>``; without it the API is open to anyone
    who reaches the port, which is safe only on a loopback address."""

    token: SecretStr | None = None


class StoreSettings(Section):
    """The location of entrepot's state. An empty ``url`` means SQLite in ``data_dir``.
    Otherwise ``url`` is the SQLAlchemy URL of a SQLite or PostgreSQL database."""

    data_dir: Path = Path("data")
    url: str = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if url:
            _check_database_url(url)
        return url

    def database_url(self) -> str:
        if self.url:
            return self.url
        return f"sqlite:///{(self.data_dir / 'entrepot.db').resolve()}"


class LoggingSettings(Section):
    """Log level (a `logging` level name, in any case) and format: ``text`` for
    people, ``json`` for log collectors."""

    level: str = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level")
    @classmethod
    def _check_level(cls, level: str) -> str:
        name = level.strip().upper()
        if name not in logging.getLevelNamesMapping():
            raise ValueError(
                f"unknown log level {level!r}; use one of CRITICAL, ERROR, WARNING, INFO or DEBUG"
            )
        return name


class ShopSettings(Section):
    """One Shopify shop: secrets overriding the app-wide ones, and its Admin API.

    With ``admin_url`` and ``access_token`` set, entrepot re-reads an updated order
    from the Admin API before applying it, pulls the orders updated since its last
    pull, and sends fulfillments and inventory levels back. ``admin_url`` is the
    shop's address, such as ``https://acme.myshopify.com``. ``location_id`` is the
    Shopify location whose inventory levels follow the ERP's stock.
    """

    webhook_secret: SecretStr | None = None
    previous_webhook_secret: SecretStr | None = None
    admin_url: str | None = None
    access_token: SecretStr | None = None
    api_version: str = "2024-10"
    location_id: int | None = None
    notify_customer: bool = False


class ShopifySettings(Section):
    """Shopify webhook secrets.

    ``webhook_secret`` is the app's client secret, which signs the webhooks of every
    shop that installed the app. During a secret rotation, Shopify can sign with the
    old secret for up to an hour, so ``previous_webhook_secret`` is accepted too.
    ``shops`` lists shops with secrets of their own (custom apps), keyed by the
    ``X-Shopify-Shop-Domain`` they send.
    """

    webhook_secret: SecretStr | None = None
    previous_webhook_secret: SecretStr | None = None
    shops: dict[str, ShopSettings] = Field(default_factory=dict)
    pull_interval_seconds: float = Field(default=300.0, gt=0)
    pull_overlap_seconds: float = Field(default=900.0, ge=0)
    max_push_attempts: int = Field(default=8, ge=1)

    def secrets_for(self, shop_domain: str) -> list[str]:
        """Return the secrets that may sign a webhook of ``shop_domain``, newest first."""
        shop = self.shops.get(shop_domain.lower())
        pairs = (
            (shop.webhook_secret, shop.previous_webhook_secret)
            if shop and shop.webhook_secret
            else (self.webhook_secret, self.previous_webhook_secret)
        )
        return [secret.get_secret_value() for secret in pairs if secret is not None]

    @field_validator("shops")
    @classmethod
    def _lowercase_domains(cls, shops: dict[str, ShopSettings]) -> dict[str, ShopSettings]:
        return {domain.lower(): shop for domain, shop in shops.items()}


class TrytonSettings(Section):
    """How to reach one Tryton database, and how to read it back.

    ``hold_category`` names the party category that puts a customer's orders on
    credit hold. ``poll_interval_seconds`` is how often shipments, invoices and stock
    are read back; each poll starts ``poll_overlap_seconds`` before the last one
    ended, so a record written during a poll is not missed.
    """

    database: str = "tryton"
    username: str = "admin"
    password: SecretStr = SecretStr("admin")
    hold_category: str = "Credit hold"
    hold_recheck_seconds: float = Field(default=300.0, gt=0)
    poll_interval_seconds: float = Field(default=30.0, gt=0)
    poll_overlap_seconds: float = Field(default=60.0, ge=0)
    warehouse_code: str = "WH"


class TargetSettings(Section):
    """An ERP that orders are delivered to, and the budget it allows.

    ``maintenance_windows`` are times when nothing is sent, such as
    ``"daily 23:30-00:15"`` or ``"Sun 02:00-04:00"``, read in ``timezone``.
    ``guest_customer`` is the ERP's external id of a customer that takes the orders
    that come without one; without it such orders are refused. With ``batch_size``
    above one, orders waiting for the same target go in batches of that size, a
    batch waiting at most ``batch_wait_seconds`` for more orders to fill it.
    """

    kind: str = "netsuite"
    base_url: str = "http://127.0.0.1:8090"
    token: SecretStr | None = None
    requests_per_second: float = Field(default=5.0, gt=0, le=10_000)
    max_concurrency: int = Field(default=4, ge=1, le=1000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_attempts: int = Field(default=8, ge=1, le=1000)
    backoff_initial_seconds: float = Field(default=1.0, gt=0, le=86_400)
    backoff_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    maintenance_windows: list[str] = Field(default_factory=list)
    timezone: str = "UTC"
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_seconds: float = Field(default=30.0, gt=0, le=86_400)
    guest_customer: str | None = None
    batch_size: int = Field(default=1, ge=1, le=500)
    batch_wait_seconds: float = Field(default=0.2, ge=0, le=3600)
    tryton: TrytonSettings = Field(default_factory=TrytonSettings)

    @field_validator("base_url")
    @classmethod
    def _http_base_url(cls, url: str) -> str:
        return check_http_url("base_url", url)

    @model_validator(mode="after")
    def _check_windows(self) -> TargetSettings:
        # Imported here: the parser lives with the delivery code that uses it.
        from entrepot.delivery.windows import MaintenanceSchedule

        try:
            MaintenanceSchedule.parse(self.maintenance_windows, self.timezone)
        except ZoneInfoNotFoundError as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        return self


class RoutingRule(Section):
    """Send matching orders to ``target``; a field left out matches anything."""

    channel: str | None = None
    account: str | None = None
    currency: str | None = None
    target: str


class RoutingSettings(Section):
    """Routing rules, tried in order (the first match wins), then the default."""

    rules: list[RoutingRule] = Field(default_factory=list)
    default_target: str = "erp"


class WorkerSettings(Section):
    """Leases and polling of the workers. A claimed message whose lease has run out without a
    renewal belongs to a worker that died, and another worker takes it over."""

    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    intake_batch_size: int = Field(default=20, ge=1)


class EventSubscriberSettings(Section):
    """A service outside entrepot that takes events over signed HTTP webhooks.

    Each event is POSTed to ``url`` in CloudEvents' structured JSON form, signed with
    ``secret`` (HMAC-SHA256 over the timestamp and the body). ``types`` are the event
    types it takes. Its budget and retries work as a target's do.
    """

    url: str
    secret: SecretStr
    types: list[str] = Field(min_length=1)
    requests_per_second: float = Field(default=10.0, gt=0, le=10_000)
    max_concurrency: int = Field(default=4, ge=1, le=1000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    max_deliveries: int = Field(default=8, ge=1, le=1000)
    redeliver_after_seconds: float = Field(default=2.0, gt=0, le=3600)
    # Seconds one call may take, from its start, before the event is taken for lost:
    # the wait for the rate limit, then the request. None means pacing_seconds plus
    # timeout_seconds plus 30 s.
    ack_wait_seconds: float | None = Field(default=None, gt=0, le=86_400)

    @property
    def pacing_seconds(self) -> float:
        """Return the longest wait of one call for the rate limit, with every slot busy."""
        return self.max_concurrency / self.requests_per_second

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return check_http_url("url", url)

    @field_validator("secret")
    @classmethod
    def _secret_given(cls, secret: SecretStr) -> SecretStr:
        if not secret.get_secret_value():
            raise ValueError("secret is empty; requests would be signed with an empty key")
        return secret

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        from entrepot.events.envelope import EVENT_TYPES

        unknown = sorted(set(types) - EVENT_TYPES)
        if unknown:
            known = ", ".join(sorted(EVENT_TYPES))
            raise ValueError(f"unknown event types {unknown}; known types: {known}")
        return types

    @model_validator(mode="after")
    def _ack_wait_covers_timeout(self) -> EventSubscriberSettings:
        needed = self.timeout_seconds + self.pacing_seconds
        if self.ack_wait_seconds is not None and self.ack_wait_seconds <= needed:
            raise ValueError(
                f"ack_wait_seconds ({self.ack_wait_seconds}) must be longer than "
                f"timeout_seconds plus max_concurrency / requests_per_second ({needed:g}), "
                "or a call that waits for the rate limit, then for a slow request, would "
                "be taken for lost while it still runs"
            )
        return self


class EventSettings(Section):
    """The event bus and its subscribers.

    An empty ``bus_url`` keeps the bus in the store's database (SQLite or
    PostgreSQL); ``nats://host:4222`` puts it on NATS JetStream. Either way the
    store's outbox stays the record of every event until the bus has taken it.
    """

    bus_url: str = ""
    relay_interval_seconds: float = Field(default=0.5, gt=0)
    subscribers: dict[str, EventSubscriberSettings] = Field(default_factory=dict)

    @field_validator("subscribers")
    @classmethod
    def _usable_names(
        cls, subscribers: dict[str, EventSubscriberSettings]
    ) -> dict[str, EventSubscriberSettings]:
        for name in subscribers:
            if not SUBSCRIBER_NAME.fullmatch(name):
                raise ValueError(
                    f"subscriber name {name!r} is invalid: use 1 to 120 letters, digits, "
                    "'-' or '_'"
                )
        return subscribers

    @field_validator("bus_url")
    @classmethod
    def _known_bus(cls, url: str) -> str:
        if not url:
            return url
        for server in url.split(","):
            parts = urlsplit(server.strip())
            try:
                port_valid = parts.port is None or parts.port > 0
            except ValueError:
                port_valid = False
            if parts.scheme not in ("nats", "tls") or not parts.hostname or not port_valid:
                raise ValueError(
                    f"bus_url {redact_url(url)!r} is not a bus entrepot knows; use "
                    "nats://host:port (several separated by commas), or leave it empty to "
                    "keep the bus in the store's database"
                )
        return url


class Settings(BaseSettings):
    """All of entrepot's settings."""

    model_config = SettingsConfigDict(
        env_prefix="ENTREPOT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    shopify: ShopifySettings = Field(default_factory=ShopifySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    targets: dict[str, TargetSettings] = Field(default_factory=lambda: {"erp": TargetSettings()})

    @model_validator(mode="after")
    def _check_routes(self) -> Settings:
        named = [self.routing.default_target] + [rule.target for rule in self.routing.rules]
        for target in named:
            if target not in self.targets:
                known = ", ".join(sorted(self.targets)) or "none"
                raise ValueError(
                    f"routing names target {target!r}, which is not configured "
                    f"(configured targets: {known})"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _config_file()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _check_database_url(url: str) -> None:
    """Raise ValueError for a URL that SQLAlchemy cannot parse, or that names a
    database, or a driver, that entrepot cannot use. Messages hide the password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The URL is left out of the message, because it may contain a password.
        raise ValueError(
            "invalid database URL; write it as sqlite:///PATH or "
            "postgresql+DRIVER://USER:PASSWORD@HOST/DATABASE"
        ) from None
    masked_url = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_DATABASES:
        raise ValueError(
            f"unsupported database {backend!r} in {masked_url}; entrepot stores its state in "
            "sqlite or postgresql"
        )
    dialect = parsed.get_dialect()
    if dialect.is_async:
        raise ValueError(
            f"the driver {parsed.get_driver_name()!r} in {masked_url} is asynchronous; name a "
            "synchronous one, such as postgresql+psycopg"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f"the driver {parsed.get_driver_name()!r} for {masked_url} is not installed "
            f"({exc}); install it, or name an installed driver in the URL"
        ) from exc


def _config_file() -> Path | None:
    named = os.environ.get(CONFIG_ENV_VAR)
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(
                f"configuration file {path} named by {CONFIG_ENV_VAR} not found"
            )
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; ``overrides`` are command-line values by section.

    ``config_file`` takes the place of ``ENTREPOT_CONFIG`` for this call.
    """
    _check_environment_sections()
    previous = os.environ.get(CONFIG_ENV_VAR)
    if config_file is not None:
        os.environ[CONFIG_ENV_VAR] = str(config_file)
    try:
        return Settings(**overrides)
    finally:
        if config_file is not None:
            _restore_env(CONFIG_ENV_VAR, previous)


def _check_environment_sections() -> None:
    """Raise ValueError for an ``ENTREPOT_`` variable that names no section.

    pydantic-settings ignores such a variable, so a typo in a section's name would
    leave the setting at its default without a word.
    """
    sections = set(Settings.model_fields)
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV_VAR:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in sections:
            known = ", ".join(sorted(sections))
            raise ValueError(
                f"environment variable {name} names no section {section!r}; "
                f"the sections are {known}"
            )


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
