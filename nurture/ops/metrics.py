"""``GET /metrics``'s numbers, in the Prometheus text format (``prometheus-client``).

Two sources:

* **The database, at scrape time** (:class:`DatabaseCollector`): emails sent,
  failed and unknown per sequence (the ledger), the queue depth (active
  enrollments due now) and each worker's heartbeat age. Every web process
  reads the same rows, so however many workers and web processes share the
  database, every scrape agrees; nothing is lost when a process restarts.
* **This process** (:data:`PASS_SECONDS`, :data:`WEBHOOK_EVENTS`): how long the
  dispatch passes of the worker in this process take (``nurture run``; left
  out of ``nurture web``, which dispatches nothing; a separate ``nurture
  worker`` serves its own on ``worker_metrics_port``, see
  :func:`serve_worker_metrics`) and the provider events the webhook here
  received, by type.

Metric names (all prefixed ``nurture_``)::

    nurture_emails_sent_total{sequence}       counter  ledger rows `sent`
    nurture_emails_failed_total{sequence}     counter  ledger rows `failed`
    nurture_emails_unknown{sequence}          gauge    ledger rows `unknown` (to resolve)
    nurture_queue_depth                       gauge    active enrollments due now
    nurture_worker_heartbeat_age_seconds{worker}  gauge  since the worker's last tick
    nurture_worker_last_pass_ok{worker}       gauge    1 when its last pass went through
    nurture_database_up                       gauge    0 when the reads above failed
    nurture_dispatch_pass_seconds             histogram  this process's passes
    nurture_webhook_events_total{provider,type}  counter  events received here

The ledger counts are ``GROUP BY`` over the ``send`` table (no index on its
status, on purpose: see :mod:`nurture.store.metrics`), some tens of
milliseconds per hundred thousand rows: scrape every 15-60 s, not faster.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nurture.core.vocabulary import SendStatus

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from sqlalchemy.engine import Engine

log = logging.getLogger("nurture.ops.metrics")

# Registered with no registry here: each app's registry (metrics_registry)
# adds them, so several apps in one process (the tests) never clash.
PASS_SECONDS = Histogram(
    "nurture_dispatch_pass_seconds",
    "How long the dispatch passes of the worker in this process took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=None,
)
WEBHOOK_EVENTS = Counter(
    "nurture_webhook_events",
    "Provider events received by the webhooks of this process, by our event type.",
    ["provider", "type"],
    registry=None,
)


def observe_pass(seconds: float) -> None:
    """Record one dispatch pass of ``seconds``."""
    PASS_SECONDS.observe(seconds)


def count_webhook_events(provider: str, types: list[str]) -> None:
    """Count events received (already verified) by ``provider``'s webhook."""
    for kind in types:
        WEBHOOK_EVENTS.labels(provider=provider, type=kind).inc()


class DatabaseCollector(Collector):
    """Reads the ledger counts, the queue depth and the heartbeats at each scrape."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        sequences: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.engine = engine
        self.clock = clock
        # The sequences loaded now: each has its series from the first scrape,
        # at 0 before it sends, so a rate() or an alert has something to read.
        self.sequences = sequences

    def collect(self) -> Iterator[Metric]:
        from nurture.store.metrics import heartbeats, ledger_counts, queue_depth

        up = GaugeMetricFamily(
            "nurture_database_up", "1 when the database answered this scrape's reads."
        )
        now = self.clock()
        try:
            with self.engine.connect() as conn:
                counts = ledger_counts(conn)
                depth = queue_depth(conn, now)
                ticks = heartbeats(conn)
        except Exception as exc:  # a scrape reports the outage, never a 500
            log.warning(
                "metrics: the database did not answer (%s)",
                type(exc).__name__,
                extra={"action": "metrics.database"},
            )
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        sent = CounterMetricFamily(
            "nurture_emails_sent",
            "Emails the provider accepted (ledger rows sent).",
            labels=["sequence"],
        )
        failed = CounterMetricFamily(
            "nurture_emails_failed",
            "Emails refused for good or not renderable (ledger rows failed).",
            labels=["sequence"],
        )
        unknown = GaugeMetricFamily(
            "nurture_emails_unknown",
            "Emails that may or may not have reached the provider (ledger rows unknown; "
            "settle them with `nurture sends resolve`).",
            labels=["sequence"],
        )
        by_status: dict[SendStatus, CounterMetricFamily | GaugeMetricFamily] = {
            SendStatus.SENT: sent,
            SendStatus.FAILED: failed,
            SendStatus.UNKNOWN: unknown,
        }
        for sequence in self.sequences():
            for kind in by_status:
                counts.setdefault((sequence, kind), 0)
        for (sequence, status), rows in sorted(counts.items()):
            family = by_status.get(SendStatus(status))
            if family is not None:
                family.add_metric([sequence], rows)
        yield sent
        yield failed
        yield unknown
        yield GaugeMetricFamily(
            "nurture_queue_depth", "Active enrollments due now (claimed or not).", value=depth
        )
        age = GaugeMetricFamily(
            "nurture_worker_heartbeat_age_seconds",
            "Seconds since each worker's last tick (a dead worker's keeps growing).",
            labels=["worker"],
        )
        ok = GaugeMetricFamily(
            "nurture_worker_last_pass_ok",
            "1 when the worker's last pass went through, 0 when it failed.",
            labels=["worker"],
        )
        for tick in ticks:
            age.add_metric([tick.worker_id], max(0.0, (now - tick.last_tick_at).total_seconds()))
            ok.add_metric([tick.worker_id], 1 if tick.last_error is None else 0)
        yield age
        yield ok


def metrics_registry(
    engine: Engine,
    clock: Callable[[], datetime],
    sequences: Callable[[], Iterable[str]] = tuple,
    *,
    dispatches: bool = True,
) -> CollectorRegistry:
    """A registry with the database's numbers and this process's instruments;
    ``sequences`` names the sequences whose series are shown even at zero.

    ``dispatches`` is whether a worker runs in this process (``nurture
    run``): without one (``nurture web``) the pass histogram is left out,
    since it would stay at zero passes however busy the workers are."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine, clock, sequences))
    if dispatches:
        registry.register(PASS_SECONDS)
    registry.register(WEBHOOK_EVENTS)
    return registry


def worker_registry() -> CollectorRegistry:
    """What a ``nurture worker`` without a web server exposes: its pass durations."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PASS_SECONDS)
    return registry


def authorized(header: str | None, token: str | None) -> bool:
    """Whether ``header`` (an ``Authorization`` value) carries ``token`` as a
    bearer token (compared in constant time); always true without a token."""
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def worker_metrics_app(registry: CollectorRegistry, token: str | None) -> WSGIApplication:
    """The WSGI app of a worker's metrics port: ``GET /metrics`` (with the
    bearer ``token`` when one is set), and a 404 for every other path, as
    the web process answers."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def plain(status: str, text: str, *extra: tuple[str, str]) -> list[bytes]:
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *extra])
            return [text.encode()]

        if environ.get("PATH_INFO") != "/metrics":
            return plain("404 Not Found", "not found: this port serves /metrics only\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return plain("405 Method Not Allowed", "method not allowed\n", ("Allow", "GET, HEAD"))
        if not authorized(environ.get("HTTP_AUTHORIZATION"), token):
            return plain("401 Unauthorized", "unauthorized\n", ("WWW-Authenticate", "Bearer"))
        body, content_type = render(registry)
        start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    return app


class _Quiet(WSGIRequestHandler):
    """No line on stderr per scrape, and no Python version in the answer."""

    server_version = "nurture-worker"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_worker_metrics(host: str, port: int, token: str | None = None) -> Callable[[], None]:
    """Serve :func:`worker_registry` at ``http://host:port/metrics`` from a
    daemon thread, behind the bearer ``token`` when one is set (the
    ``metrics_token`` of the web side); return the function that stops it."""
    server = make_server(
        host,
        port,
        worker_metrics_app(worker_registry(), token),
        server_class=_ThreadingServer,
        handler_class=_Quiet,
    )
    thread = threading.Thread(target=server.serve_forever, name="nurture-metrics", daemon=True)
    thread.start()
    log.info(
        "serving metrics at http://%s:%d/metrics%s",
        host,
        server.server_port,
        " (bearer token)" if token else "",
        extra={"action": "metrics.serve"},
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
