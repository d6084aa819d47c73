"""The worker: APScheduler 3 ticks, the database holds every bit of state.

Three jobs on one ``BackgroundScheduler`` (its own thread; ``nurture worker``'s
main thread waits for a signal, ``nurture run``'s serves the web app):

* ``dispatch`` every ``dispatch_interval`` seconds, ``max_instances=1`` and
  ``coalesce=True``: a slow pass is never overlapped by the next, and ticks
  missed while it ran collapse into one (APScheduler's misfire policy).
* ``reload`` every 2 seconds: re-reads changed sequence files and templates;
  an invalid edit logs ``file:line:column`` and the last good version runs on.
  The validation runs in a daemon thread of its own (one at a time), so
  shutting down never waits for it: render budgets bound it, but a reload of
  many slow templates may still take a while, and SIGTERM must not.
* ``reconcile`` every minute: reservations whose lease expired (a worker died
  mid-send) become ``unknown``; they are never resent automatically. On
  PostgreSQL it also folds the funnel's per-process counters
  (:func:`nurture.store.funnels.fold_all`). And it forgets the heartbeats of
  workers silent for a day (:func:`nurture.store.heartbeat.prune`).

SIGTERM / SIGINT: the emails already with the provider are confirmed and
committed; those still queued are recorded as not attempted (retried a
second later); the worker's heartbeat row is deleted (a clean exit is not a
late worker); then the process exits. A second signal meanwhile exits at
once, as SIGKILL would.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from nurture.app.runtime import Runtime
from nurture.app.signals import StopSignals
from nurture.ops.metrics import observe_pass
from nurture.sending.dispatcher import DispatchHalted, DispatchReport
from nurture.store.heartbeat import forget, prune, record_tick

log = logging.getLogger("nurture.app.worker")


class _SkippedWhileRunning(logging.Filter):
    """Drops APScheduler's warning that a tick was skipped because the pass
    before it still runs: with ``max_instances=1`` that is the design (a long
    pass is never overlapped), and it was logged every interval of a long
    pass, as if something were wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(
            'Execution of job "%s" skipped: maximum number of running instances'
        )


_SKIPPED_WHILE_RUNNING = _SkippedWhileRunning()


@dataclass(frozen=True)
class WorkerHealth:
    """A worker's passes, as counts, ages and kinds: what ``/healthz`` may show."""

    halted: bool
    """Dispatching stopped on an authentication error (fix the key, restart)."""
    failed_passes: int
    """Passes in a row that raised, or whose heartbeat could not be written."""
    error_kind: str | None
    """The last failed pass's exception class (``DataError``), never its text."""
    seconds_since_pass: float | None
    """Since the last pass ended; None before the first."""
    seconds_without_pass: float
    """Since the last pass ended, or since the worker was created."""
    pass_running_for: float | None
    """How long the pass in flight has run; None between passes."""


class Worker:
    """Owns the scheduler; every job calls into the runtime's dispatcher/registry."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.worker_id = runtime.dispatcher.worker_id
        self.halted: str | None = None
        self.last_report: DispatchReport | None = None
        self._started = False
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._reloading: threading.Thread | None = None
        # For /healthz (monotonic seconds; counts and kinds, never error text).
        self._created_at = time.monotonic()
        self._pass_started_at: float | None = None
        self._last_pass_at: float | None = None
        self._failed_passes = 0
        self._error_kind: str | None = None

    # -- jobs -------------------------------------------------------------

    def tick(self) -> DispatchReport | None:
        """One dispatch pass at the runtime clock's ``now``."""
        if self.halted is not None:
            return None
        now = self.runtime.clock()
        error: str | None = None
        error_kind: str | None = None
        report: DispatchReport | None = None
        self._pass_started_at = started = time.monotonic()
        log.debug("tick at %s", now.isoformat(), extra={"action": "worker.tick"})
        try:
            report = self.runtime.dispatcher.dispatch(now)
        except DispatchHalted as exc:
            # 401/403: every further call would fail the same way. Stop loudly.
            self.halted = str(exc)
            error_kind = type(exc).__name__
            error = f"{error_kind}: {exc}"
            log.critical("%s", exc, extra={"action": "dispatch.halted"})
            self._pause_dispatch()
        except Exception as exc:  # keep the worker alive; the next tick retries
            error_kind = type(exc).__name__
            error = f"{error_kind}: {exc}"
            log.exception("dispatch pass failed", extra={"action": "dispatch.failed"})
        if not self._heartbeat(now, error) and error_kind is None:
            error_kind = "heartbeat"  # the pass went through, the database did not
        self._failed_passes = self._failed_passes + 1 if error_kind else 0
        self._error_kind = error_kind
        self._last_pass_at, self._pass_started_at = time.monotonic(), None
        observe_pass(self._last_pass_at - started)
        if report is not None:
            self.last_report = report
            if report.batches:
                log.info(
                    "dispatch at %s: %s",
                    now.isoformat(),
                    report.summary(),
                    extra={"action": "dispatch.pass"},
                )
            if report.failed:
                log.warning(
                    "%d email(s) failed in this pass (see `nurture log --status failed`)",
                    report.failed,
                    extra={"action": "send.failed"},
                )
            if report.unknown:
                log.warning(
                    "%d email(s) became unknown in this pass (see `nurture sends list`)",
                    report.unknown,
                    extra={"action": "send.unknown"},
                )
        return report

    def reload(self) -> None:
        """Start a reload in the background unless one is still running."""
        with self._reload_lock:
            if self._reloading is not None and self._reloading.is_alive():
                return
            # A daemon thread: the process exits on SIGTERM whatever the
            # reload is doing (it only reads files and swaps a snapshot).
            self._reloading = threading.Thread(
                target=self._reload_now, name="nurture-reload", daemon=True
            )
            self._reloading.start()

    def _reload_now(self) -> None:
        try:
            self.runtime.registry.reload()
        except Exception:  # keep the worker alive; the next change retries
            log.exception(
                "reloading sequences and templates failed", extra={"action": "config.failed"}
            )

    def reconcile(self) -> None:
        now = self.runtime.clock()
        self.runtime.dispatcher.reconcile(now)
        with self.runtime.engine.begin() as conn:
            gone = prune(conn, now, keep=self.worker_id)
        if gone:
            log.info(
                "forgot %d worker(s) silent for a day (stopped without a clean exit)",
                gone,
                extra={"action": "worker.forgotten"},
            )

    def _heartbeat(self, now: datetime, error: str | None) -> bool:
        try:
            with self.runtime.engine.begin() as conn:
                record_tick(conn, self.worker_id, now, error)
        except Exception:
            log.exception(
                "could not record the worker's heartbeat", extra={"action": "worker.heartbeat"}
            )
            return False
        return True

    def health(self) -> WorkerHealth:
        """How this worker's passes are going, for ``/healthz`` (no personal data)."""
        now = time.monotonic()
        started, last = self._pass_started_at, self._last_pass_at
        return WorkerHealth(
            halted=self.halted is not None,
            failed_passes=self._failed_passes,
            error_kind=self._error_kind,
            seconds_since_pass=None if last is None else now - last,
            seconds_without_pass=now - (last if last is not None else self._created_at),
            pass_running_for=None if started is None else now - started,
        )

    # -- scheduling -------------------------------------------------------

    def configure(self, scheduler: BaseScheduler) -> BaseScheduler:
        interval = self.runtime.settings.dispatch_interval
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=interval,
            id="dispatch",
            next_run_time=datetime.now().astimezone(),
            **common,
        )
        scheduler.add_job(self.reload, "interval", seconds=2, id="reload", **common)
        scheduler.add_job(self.reconcile, "interval", seconds=60, id="reconcile", **common)
        self._scheduler = scheduler
        logging.getLogger("apscheduler.scheduler").addFilter(_SKIPPED_WHILE_RUNNING)
        return scheduler

    def _pause_dispatch(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None and scheduler.running:
            scheduler.pause_job("dispatch")

    def stop(self) -> None:
        """Stop the pass in flight (see the module docstring), then the scheduler."""
        self.runtime.dispatcher.stop()
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=True)
        # A clean exit: this worker id will never tick again, so it leaves the
        # dashboard, /healthz and /metrics now rather than showing as late.
        try:
            with self.runtime.engine.begin() as conn:
                forget(conn, self.worker_id)
        except Exception:
            log.exception(
                "could not remove the worker's heartbeat", extra={"action": "worker.heartbeat"}
            )

    def run_blocking(self) -> None:
        """Run until SIGTERM or SIGINT, then stop the pass in flight cleanly
        (:mod:`nurture.app.signals`: the handler only records the signal; the
        scheduler runs in its own thread and this, the main thread, does the
        stopping; a second signal exits at once)."""
        with StopSignals() as signals:
            log.info(
                "worker %s started (dispatch every %ss)",
                self.worker_id,
                self.runtime.settings.dispatch_interval,
                extra={"action": "worker.started"},
            )
            self.start_background()
            signum = signals.wait()
            log.info(
                "signal %d: finishing the emails in flight, then exiting "
                "(a second signal exits at once)",
                signum,
                extra={"action": "worker.stopping"},
            )
            self.stop()
        log.info("worker %s stopped", self.worker_id, extra={"action": "worker.stopped"})

    def start_background(self) -> BackgroundScheduler:
        scheduler = self.configure(BackgroundScheduler(timezone="UTC"))
        scheduler.start()
        return scheduler
