"""Configuration: ``nurture.toml`` in the working folder, overridden by ``NURTURE_*``.

Read only at the edges (the CLI, the web app factory) into one :class:`Settings`
object and passed down; nothing below the edge imports this module's loader.
Each key is written in ``nurture.toml`` as named here, and in the environment as
``NURTURE_`` plus the name in capitals (``base_url`` -> ``NURTURE_BASE_URL``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from nurture.app.config_file import (
    CONFIG_FILE,
    ConfigFileSource,
    config_file_present,
    key_position,
    shown_path,
    source_error,
)
from nurture.core.model import Brand
from nurture.errors import ConfigurationError
from nurture.transports import known_transports
from nurture.urls import database_url_problem, url_problem

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "placeholder"})

MINUTE = 60.0
DAY = 86400.0
SECONDS_LIMITS: dict[str, tuple[float, str]] = {
    "sendgrid_timeout": (10 * MINUTE, "10 minutes"),
    "dispatch_interval": (DAY, "a day"),
    "retry_base": (DAY, "a day"),
    "retry_max": (30 * DAY, "30 days"),
    "lease_seconds": (DAY, "a day"),
    "sendgrid_webhook_max_age": (30 * DAY, "30 days"),
    "unknown_retry_after": (30 * DAY, "30 days"),
    "attribution_window": (365 * DAY, "a year"),
    "confirm_token_max_age": (365 * DAY, "a year"),
}
"""The longest each duration setting (seconds) may be. Each is turned into a
``timedelta`` or added to the current time; a bound keeps that arithmetic in
the calendar and a typo (an extra zero or three) from passing unnoticed."""


class Settings(BaseSettings):
    """Every setting nurture reads. Paths are relative to the working folder."""

    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="forbid")

    # Content
    sequences_dir: Path = Path("sequences")
    templates_dir: Path = Path("templates")
    # Storage
    database_url: str = "sqlite:///nurture.db"
    database_pool_size: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="connections a process keeps open to a server database (not SQLite)",
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="connections a process may open beyond database_pool_size at a peak",
    )
    database_transaction_pooler: bool = Field(
        default=False,
        description=(
            "PostgreSQL is reached through a pooler that hands out a server connection "
            "per transaction (PgBouncer's pool_mode = transaction): no prepared "
            "statements and no session settings"
        ),
    )
    # Delivery
    transport: str = "outbox"
    """A name registered under the ``nurture.transports`` entry points (plugins too)."""
    outbox_dir: Path = Path("outbox")
    sendgrid_api_key: str | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    sendgrid_timeout: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    # Links and compliance
    base_url: str = "http://localhost:8000"
    secret_key: str = "change-me"
    old_secret_keys: list[str] = Field(
        default=[],
        description=(
            "former secret keys: links signed with them still open; new links are "
            "signed with secret_key (rotation)"
        ),
    )
    postal_address: str = "Example AB, Storgatan 1, 111 22 Stockholm, Sweden"
    unsubscribe_mailbox: str | None = Field(
        default=None,
        description=(
            "an address that takes unsubscribe requests by email: added to "
            "List-Unsubscribe as a mailto: fallback after the https link"
        ),
    )
    brand: Brand | None = Field(
        default=None,
        description=(
            "the [brand] table: name, logo_url, logo_width, logo_height, logo_alt, colour; "
            "for every sequence, under a sequence file's own brand: keys"
        ),
    )
    # Dispatching
    dispatch_interval: float = Field(
        default=30.0, gt=0, description="seconds between ticks", allow_inf_nan=False
    )
    batch_size: int = Field(default=500, ge=1, le=100_000)
    rate_limit: float = Field(
        default=50.0,
        ge=0.0001,
        le=1_000_000,
        allow_inf_nan=False,
        description="emails per second",
    )
    send_concurrency: int = Field(
        default=8, ge=1, le=512, description="parallel provider calls (HTTP APIs want many)"
    )
    max_attempts: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="tries for a transient failure (the defaults span 1.5 to 3 days)",
    )
    retry_base: float = Field(
        default=60.0, gt=0, description="first backoff, seconds", allow_inf_nan=False
    )
    retry_max: float = Field(
        default=6 * 3600.0, gt=0, description="longest backoff, seconds", allow_inf_nan=False
    )
    error_budget: int = Field(
        default=20, ge=1, le=1_000_000, description="failed sends in a row that pause a sequence"
    )
    lease_seconds: float = Field(
        default=300.0, gt=0, description="claim lease before reconcile", allow_inf_nan=False
    )
    complaint_pause_rate: float = Field(
        default=0.003,
        ge=0,
        le=1,
        description="a sequence whose 7-day complaint rate reaches this is paused (0: never)",
    )
    complaint_pause_min_sends: int = Field(
        default=1000,
        ge=1,
        le=1_000_000_000,
        description="sends in 7 days before the complaint rate can pause",
    )
    # The web loop: webhooks, tracking, sign-up
    sendgrid_webhook_public_key: str | None = Field(
        default=None, description="the Event Webhook's verification key (base64 DER, from SendGrid)"
    )
    sendgrid_webhook_max_age: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="refuse signed batches older than this, seconds (0: no age check)",
    )
    unknown_retry_after: float = Field(
        default=3600.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds an unknown send waits for a webhook event before it is retried once",
    )
    checkout_webhook_secret: str | None = Field(
        default=None, description="HMAC key of POST /webhooks/checkout"
    )
    stripe_webhook_secret: str | None = Field(default=None, description="Stripe's whsec_ secret")
    shopify_webhook_secret: str | None = Field(default=None, description="Shopify's app secret")
    woocommerce_webhook_secret: str | None = Field(
        default=None, description="the WooCommerce webhook's secret"
    )
    track_clicks: bool = Field(default=True, description="send links through /c/{token}")
    track_opens: bool = Field(default=False, description="a 1x1 pixel at /o/{token}")
    attribution_window: float = Field(
        default=7 * 86400.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a click earns a purchase",
    )
    confirm_token_max_age: float = Field(
        default=7 * 86400.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a confirmation link works",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks whose X-Forwarded-For is believed",
    )
    # Operations
    metrics_token: str | None = Field(
        default=None,
        description=(
            "when set, GET /metrics wants 'Authorization: Bearer <token>'; when unset it "
            "is open (keep it behind the reverse proxy)"
        ),
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "a port on which `nurture worker` serves its own metrics (the pass durations) "
            "in Prometheus format; unset: not served"
        ),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="the address worker_metrics_port listens on"
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="'json': one JSON object per log record, with a stable 'action' key",
    )

    _config_file: Path | None = PrivateAttr(default=None)

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str) -> str:
        # Checked against the registry, not a fixed list, so that a plugin's
        # transport is accepted here and then found by create_transport.
        known = known_transports()
        if value not in known:
            choices = ", ".join(known) or "none (is nurture installed?)"
            raise ValueError(f"unknown transport {value!r}; known transports: {choices}")
        return value

    @field_validator(*SECONDS_LIMITS)
    @classmethod
    def _seconds(cls, value: float, info: ValidationInfo) -> float:
        # Finite and positive already (the Field constraints); here, not absurd.
        limit, words = SECONDS_LIMITS[str(info.field_name)]
        if value > limit:
            raise ValueError(f"must be at most {limit:,.0f} seconds ({words}), not {value:g}")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        problem = database_url_problem(value.strip())
        if problem is not None:
            raise ValueError(problem)
        return value.strip()

    @field_validator("unsubscribe_mailbox")
    @classmethod
    def _mailbox(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            checked = validate_email(value.strip(), check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"not an email address: {exc}") from exc
        if checked.ascii_email is None:
            # It goes into a header as a mailto: URI, which must be ASCII.
            raise ValueError("use an address with an ASCII local part (before the @)")
        return checked.ascii_email

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then nurture.toml
        # (the file named by model_config["toml_file"]; see load_settings).
        return (init_settings, env_settings, ConfigFileSource(settings_cls))

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network") from exc
        return [entry.strip() for entry in value]

    @field_validator("old_secret_keys")
    @classmethod
    def _old_secret_keys(cls, value: list[str]) -> list[str]:
        # A placeholder that still verifies would let anyone forge a link.
        if any(key.strip().lower() in PLACEHOLDER_SECRETS for key in value):
            raise ValueError("a placeholder such as 'change-me' must not be listed")
        return value

    @property
    def config_file(self) -> Path | None:
        """The ``nurture.toml`` these settings were read from (None: none was)."""
        return self._config_file

    @property
    def secret_keys(self) -> list[str]:
        """The keys that verify signed links, the signing one (secret_key) first."""
        return [self.secret_key, *self.old_secret_keys]

    @property
    def has_placeholder_secret(self) -> bool:
        return self.secret_key.strip().lower() in PLACEHOLDER_SECRETS


def new_database_file(settings: Settings) -> Path | None:
    """The SQLite file ``database_url`` names when it does not exist yet (opening
    the store would create it), else None (it exists, or a server database)."""
    url = settings.database_url
    if not url.startswith("sqlite:///"):
        return None  # a server database: connecting creates nothing
    path = url.removeprefix("sqlite:///").partition("?")[0]
    if path in ("", ":memory:") or Path(path).exists():
        return None
    return Path(path)


def check_project(folder: Path, settings: Settings) -> None:
    """Refuse to create a database in a folder that is not a nurture project.

    A command run from the wrong folder would otherwise create an empty
    ``nurture.db`` there, which looks like lost data. Fine: the folder has
    ``nurture.toml``, the database URL is given in the environment
    (``NURTURE_DATABASE_URL``), or the database is not a new SQLite file.
    """
    if (folder / CONFIG_FILE).is_file():
        return
    if any(key.upper() == "NURTURE_DATABASE_URL" for key in os.environ):
        return
    if new_database_file(settings) is None:
        return
    raise ConfigurationError(
        f"no {CONFIG_FILE} here ({folder}) — run `nurture init`, or pass --dir with the "
        f"folder that has one (or set NURTURE_DATABASE_URL); nothing was created"
    )


LIST_ITEMS = {
    "trusted_proxies": 'an IP address or network in quotes, e.g. ["127.0.0.1", "10.0.0.0/8"]',
    "old_secret_keys": 'a former secret key in quotes, e.g. ["the-former-secret-key"]',
}
"""What each item of a list setting must be, as its error says."""


def _setting_error(toml: Path, error: Any) -> str:
    """One invalid setting, named as it is written in ``nurture.toml`` and in the
    environment, with its line in the file when the value came from there: a
    setting, an item of a list setting, a key of a table (``[brand]``)."""
    loc = tuple(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return f"settings: {message}"
    name, last = str(loc[0]), str(loc[-1])
    if error.get("type") == "extra_forbidden":
        known = Brand.model_fields if loc[:-1] == ("brand",) else Settings.model_fields
        near = difflib.get_close_matches(last, list(known), n=1)
        message = f"unknown key {last!r}" + (f" — did you mean {near[0]!r}?" if near else "")
    variable = f"NURTURE_{name.upper()}"
    from_env = any(set_name.upper() == variable for set_name in os.environ)

    def place(key: str, table: str | None = None) -> str:
        where = None if from_env else key_position(toml, key, table)
        return f"{shown_path(toml)}:{where[0]}:{where[1]}: " if where else ""

    if len(loc) == 1:
        named = f"setting {name!r} (in {CONFIG_FILE} as {name}, or {variable})"
        return f"{place(name)}{named}: {message}"
    if isinstance(loc[1], int):  # an item of a list setting: ("trusted_proxies", 0)
        string = error.get("type") == "string_type"
        problem = "is not a string" if string else f"is refused: {message}"
        shape = LIST_ITEMS.get(name)
        each = f"; each item must be {shape}" if shape else ""
        return (
            f"{place(name)}setting {name!r} (in {CONFIG_FILE} as {name}, or {variable} as a "
            f"JSON list): item {loc[1] + 1} {problem}{each}"
        )
    key = ".".join(str(part) for part in loc)
    return (
        f"{place(str(loc[1]), name)}setting {key!r} (in {CONFIG_FILE} as {loc[1]} under "
        f"[{name}], or {variable} as JSON): {message}"
    )


def load_settings(folder: Path | None = None, **overrides: Any) -> Settings:
    """Read ``nurture.toml`` from ``folder`` (default: the current directory) and the env.

    Relative paths in the result are resolved against ``folder``. A missing or
    invalid setting raises :class:`ConfigurationError` naming the key and the
    environment variable.
    """
    base = (folder or Path.cwd()).resolve()
    toml = base / CONFIG_FILE
    present = config_file_present(toml)

    class LocatedSettings(Settings):
        # The working folder is only known at run time, hence a subclass.
        model_config = SettingsConfigDict(toml_file=toml if present else None)

    try:
        settings: Settings = LocatedSettings(**overrides)
    except ValidationError as exc:
        lines = [_setting_error(toml, error) for error in exc.errors()]
        raise ConfigurationError("\n".join(lines)) from exc
    except SettingsError as exc:
        raise ConfigurationError(source_error(toml, exc)) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigurationError(f"cannot read {toml}: {exc}") from exc
    settings._config_file = toml if present else None
    for name in ("sequences_dir", "templates_dir", "outbox_dir"):
        path = getattr(settings, name)
        if not path.is_absolute():
            setattr(settings, name, base / path)
    if settings.database_url.startswith("sqlite:///") and not settings.database_url.startswith(
        "sqlite:////"
    ):
        rel = settings.database_url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            settings.database_url = f"sqlite:///{base / rel}"
    return settings
