"""Wiring: one place that turns Settings into the running parts (the listmonk
"wiring file"). The CLI and the web app factory call :func:`build_runtime`;
nothing below reads settings on its own."""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine

from nurture.app.clock import Clock
from nurture.app.registry import SequenceRegistry
from nurture.app.settings import Settings
from nurture.authoring.project import SAMPLE_POSTAL_ADDRESSES
from nurture.errors import ConfigurationError
from nurture.sending.composer import Composer
from nurture.sending.dispatcher import Dispatcher, DispatchPolicy
from nurture.store.db import make_engine
from nurture.store.migrate import upgrade
from nurture.transports import create_transport, delivers, transport_class
from nurture.transports.base import Transport
from nurture.urls import base_url_problem

log = logging.getLogger("nurture")


def policy_from(settings: Settings) -> DispatchPolicy:
    return DispatchPolicy(
        batch_size=settings.batch_size,
        rate_limit=settings.rate_limit,
        concurrency=settings.send_concurrency,
        lease=timedelta(seconds=settings.lease_seconds),
        max_attempts=settings.max_attempts,
        retry_base=timedelta(seconds=settings.retry_base),
        retry_max=timedelta(seconds=settings.retry_max),
        error_budget=settings.error_budget,
        unknown_retry_after=(
            timedelta(seconds=settings.unknown_retry_after)
            if settings.sendgrid_webhook_public_key
            else None
        ),
    )


def check_sending_settings(settings: Settings, transport: object) -> None:
    """Refuse to send for real with settings that would hurt subscribers.

    ``transport`` (a class or an instance) delivers to real inboxes unless its
    ``delivers`` attribute says otherwise (the outbox, the memory transport).
    A delivering transport needs a real secret (a placeholder makes unsubscribe
    links forgeable), a public https ``base_url`` (the unsubscribe links and
    the RFC 8058 one-click header point there) and a postal address that is
    not one of nurture's samples (every footer shows it, and the law wants
    the sender's own).
    """
    if not delivers(transport):
        return
    if settings.has_placeholder_secret:
        raise ConfigurationError(
            "setting 'secret_key' (in nurture.toml as secret_key, or NURTURE_SECRET_KEY) is a "
            f"placeholder; it signs unsubscribe links, so set a long random value before "
            f"sending through {settings.transport}"
        )
    problem = base_url_problem(settings.base_url)
    if problem is not None:
        raise ConfigurationError(
            f"setting 'base_url' (in nurture.toml as base_url, or NURTURE_BASE_URL) is "
            f"{settings.base_url!r}, which {problem}: unsubscribe links and the one-click "
            f"List-Unsubscribe header (RFC 8058) need the public https:// address of "
            f"`nurture run` before sending through {settings.transport} "
            "(the outbox transport works with any base_url)"
        )
    if settings.postal_address.strip() in SAMPLE_POSTAL_ADDRESSES:
        raise ConfigurationError(
            "setting 'postal_address' (in nurture.toml as postal_address, or "
            f"NURTURE_POSTAL_ADDRESS) is the sample {settings.postal_address.strip()!r}; "
            "every email's footer shows it, and the law (CAN-SPAM, the EU's e-commerce "
            f"rules) wants your own: set your real postal address before sending through "
            f"{settings.transport} (the outbox transport works with the sample)"
        )


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    registry: SequenceRegistry
    transport: Transport
    dispatcher: Dispatcher
    clock: Clock

    def close(self) -> None:
        self.dispatcher.close()
        self.transport.close()
        self.engine.dispose()


def freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the cyclic GC's way.

    Modules, the ORM, the compiled templates and the loaded sequences live as
    long as the process; without this every full collection re-scans them, and
    a dispatch pass (which allocates a lot) triggers many: measured here as
    30% of the in-memory dispatch throughput. Call it once, at the edge, after
    the runtime is built (never in tests: frozen objects are never freed).
    """
    gc.collect()
    gc.freeze()


SWITCH_INTERVAL = 0.001
"""Seconds a thread keeps the interpreter lock while another waits for it
(CPython's default: 0.005)."""


def prompt_thread_switching() -> None:
    """Hand the interpreter lock to a waiting thread after 1 ms, not 5.

    A worker is one thread that plans (Python, holding the lock for as long
    as it may) and threads that wait on sockets: the send pool's
    coordinator for its database round, the send threads (for SendGrid, the
    HTTP pool's one thread) for the provider.
    Each of their answers waits for the lock, up to a whole interval, while
    a batch is planned. Measured in one sitting (benchmarks/README.md,
    2026-12-05): the in-memory pass on PostgreSQL 10-15% faster, through
    the SendGrid fake at 100 ms 5-7% faster on SQLite and PostgreSQL; the
    in-memory pass on SQLite, whose statements hold the lock, 2-3% slower.
    Process-wide: call it once, at the edge, with
    :func:`freeze_startup_objects`.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)


def open_engine(settings: Settings, *, migrate: bool = True) -> Engine:
    engine = make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        transaction_pooler=settings.database_transaction_pooler,
    )
    if migrate:
        upgrade(engine)
    return engine


def build_runtime(
    settings: Settings,
    clock: Clock,
    *,
    transport: Transport | None = None,
    engine: Engine | None = None,
    migrate: bool = True,
) -> Runtime:
    check_sending_settings(
        settings, transport if transport is not None else transport_class(settings.transport)
    )
    engine = engine or open_engine(settings, migrate=migrate)
    registry = SequenceRegistry(settings)
    registry.reload(force=True)
    transport = transport or create_transport(settings)
    composer = Composer(
        registry.library,
        base_url=settings.base_url,
        secret_key=settings.secret_key,
        postal_address=settings.postal_address,
        unsubscribe_mailbox=settings.unsubscribe_mailbox,
        track_clicks=settings.track_clicks,
        track_opens=settings.track_opens,
    )
    dispatcher = Dispatcher(
        engine,
        sequences=registry.sequences,
        compose=composer,
        transport=transport,
        policy=policy_from(settings),
        # Leases are kept on the process's clock: real time in production, the
        # fixed or accelerated clock of a test or the demo.
        wall_clock=clock,
    )
    return Runtime(settings, engine, registry, transport, dispatcher, clock)
