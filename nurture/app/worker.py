"""The worker: APScheduler 3 ticks, the database holds every bit of state.

Three jobs on one ``BlockingScheduler`` (or a background one inside
``nurture run``):

* ``dispatch`` every ``dispatch_interval`` seconds, ``max_instances=1`` and
  ``coalesce=True``: a slow pass is never overlapped by the next, and ticks
  missed while it ran collapse into one (APScheduler's misfire policy).
* ``reload`` every 2 seconds: re-reads changed sequence files and templates;
  an invalid edit logs ``file:line:column`` and the last good version runs on.
* ``reconcile`` every minute: reservations whose lease expired (a worker died
  mid-send) become ``unknown``; they are never resent automatically.

SIGTERM / SIGINT: the emails already with the provider are confirmed and
committed; those still queued are recorded as not attempted (retried a
second later); then the process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from nurture.app.runtime import Runtime
from nurture.sending.dispatcher import DispatchHalted, DispatchReport
from nurture.store.heartbeat import record_tick

log = logging.getLogger("nurture.app.worker")


class Worker:
    """Owns the scheduler; every job calls into the runtime's dispatcher/registry."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.worker_id = runtime.dispatcher.worker_id
        self.halted: str | None = None
        self.last_report: DispatchReport | None = None
        self._started = False
        self._lock = threading.Lock()

    # -- jobs -------------------------------------------------------------

    def tick(self) -> DispatchReport | None:
        """One dispatch pass at the runtime clock's ``now``."""
        if self.halted is not None:
            return None
        now = self.runtime.clock()
        error: str | None = None
        report: DispatchReport | None = None
        try:
            report = self.runtime.dispatcher.dispatch(now)
        except DispatchHalted as exc:
            # 401/403: every further call would fail the same way. Stop loudly.
            self.halted = str(exc)
            error = self.halted
            log.critical("%s", exc)
            self._pause_dispatch()
        except Exception as exc:  # keep the worker alive; the next tick retries
            error = f"{type(exc).__name__}: {exc}"
            log.exception("dispatch pass failed")
        self._heartbeat(now, error)
        if report is not None:
            self.last_report = report
            if report.batches:
                log.info("dispatch at %s: %s", now.isoformat(), report.summary())
        return report

    def reload(self) -> None:
        self.runtime.registry.reload()

    def reconcile(self) -> None:
        self.runtime.dispatcher.reconcile(self.runtime.clock())

    def _heartbeat(self, now: datetime, error: str | None) -> None:
        try:
            with self.runtime.engine.begin() as conn:
                record_tick(conn, self.worker_id, now, error)
        except Exception:
            log.exception("could not record the worker's heartbeat")

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

    def run_blocking(self) -> None:
        scheduler = self.configure(BlockingScheduler(timezone="UTC"))

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the emails in flight, then exiting", signum)
            # The handler runs on the main thread while the job runs in the
            # executor's thread: waiting here lets the pass in flight stop cleanly.
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info(
            "worker %s started (dispatch every %ss)",
            self.worker_id,
            self.runtime.settings.dispatch_interval,
        )
        scheduler.start()  # returns once shut down
        log.info("worker %s stopped", self.worker_id)

    def start_background(self) -> BackgroundScheduler:
        scheduler = self.configure(BackgroundScheduler(timezone="UTC"))
        scheduler.start()
        return scheduler
