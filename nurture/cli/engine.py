"""The engine's commands: ``db upgrade``, ``dispatch``, ``worker``, ``run``,
``web`` and ``resume``; ``plan`` (:mod:`nurture.cli.plan`) and ``log``
(:mod:`nurture.cli.sendlog`) are registered with them. Settings and the clock come from the main
CLI's context object (see :mod:`nurture.cli.main`; the time is the global
``--now``, never an option of one command); every command runs inside
:func:`~nurture.cli.console.errors`, so a bad setting is exit 2, not a traceback.

``nurture dispatch`` exits 0 when every email due was sent (or skipped or
ended by the sequence's rules), 1 when any failed, became unknown or will be
retried (the summary gives the first reason of each kind), 2 for a
configuration or usage error, 3 when the provider halted dispatching (a
refused API key).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from nurture.cli.backup import BACKUP_EXAMPLES, backup_command
from nurture.cli.console import (
    EXIT_CONFIGURATION,
    EXIT_FAILED,
    EXIT_HALTED,
    err,
    errors,
    examples,
    fail,
    out,
    safe,
)
from nurture.cli.passes import PassProgress, shows_progress, trouble
from nurture.errors import NurtureError

if TYPE_CHECKING:  # the store and the sender are imported by the commands that use them
    from types import FrameType

    from nurture.app.runtime import Runtime
    from nurture.sending.answers import DispatchReport

log = logging.getLogger("nurture")

PORT_MIN, PORT_MAX = 0, 65535
"""The ports ``run`` and ``web`` take (``--port``): a number past them is a usage
error naming the option, exit 2, not a traceback from ``bind()`` after the
database was migrated. 0 lets the system pick a free port (the tests pass
``--port 0`` to a command that must stop before it serves)."""

db_app = typer.Typer(
    name="db", help="The database schema (Alembic migrations).", no_args_is_help=True
)


@contextmanager
def _runtime(ctx: typer.Context) -> Iterator[Runtime]:
    from nurture.app.runtime import (
        build_runtime,
        freeze_startup_objects,
        prompt_thread_switching,
    )

    clock = ctx.obj.clock()
    with errors():
        runtime = build_runtime(ctx.obj.store_settings(), clock)
    freeze_startup_objects()
    prompt_thread_switching()
    try:
        problems = runtime.registry.last_problems
        if problems:
            err.print(
                Text.assemble(
                    ("warning: ", "yellow"),
                    f"{len(problems)} problem(s) in sequence files; "
                    "the invalid ones are not running (see `nurture validate`)",
                )
            )
        yield runtime
    finally:
        runtime.close()


@db_app.command("upgrade", epilog=examples("nurture db upgrade"))
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the migrations (run and worker also do this on start)."""
    from nurture.app.runtime import open_engine
    from nurture.store.migrate import current_revision

    with errors():
        engine = open_engine(ctx.obj.store_settings())
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    out.print(f"database at revision {revision}", highlight=False)


DISPATCH_EXAMPLES = examples(
    "nurture dispatch",
    "nurture --now 2026-11-30T08:30:00Z dispatch",
    "*/5 * * * * cd /srv/shop && nurture dispatch   # crontab: a pass every 5 minutes",
)


def dispatch_command(
    ctx: typer.Context,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="One pass, then exit: what `dispatch` always does (kept for "
            "scripts that pass it).",
        ),
    ] = False,
) -> None:
    """Send everything due now, in as many batches as it takes, then exit.

    Exit code 0: every email due was sent (or skipped by the rules); 1: some
    failed, are unknown or will be retried (the summary says why); 2: a
    configuration error; 3: the provider refused the API key; 130 or 143:
    Ctrl-C or SIGTERM ended the pass early (the emails with the provider are
    waited for; a second signal exits at once). For "as if it were" another
    time, use the global --now: nurture --now TIME dispatch.
    """
    from nurture.app.signals import StopSignals

    del once  # one pass is all `dispatch` does; `nurture worker` keeps going
    with _runtime(ctx) as runtime:
        moment = runtime.clock()
        with errors():
            runtime.dispatcher.reconcile(moment)
            # Ctrl-C or SIGTERM ends the pass cleanly (see nurture.app.signals);
            # a second one exits at once.
            with StopSignals(on_first=_stop_pass(runtime)) as signals:
                try:
                    report = _dispatch_pass(runtime, moment)
                except NurtureError as exc:
                    raise fail(str(exc), EXIT_HALTED) from exc
    out.print(
        f"dispatch at {moment.isoformat()}: {report.summary()}", highlight=False, soft_wrap=True
    )
    problems = trouble(report)
    for kind, count, first in problems:
        why = f"first: {first}" if first else "see `nurture log`"
        out.print(safe(f"  {kind} {count}, {why}"), soft_wrap=True)
    if signals.first is not None:
        err.print(
            f"stopped by signal {signals.first} before the pass ended: the emails not "
            "attempted go out at the next pass",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(128 + signals.first)
    if problems:
        raise typer.Exit(EXIT_FAILED)


def _stop_pass(runtime: Runtime) -> Callable[[int], None]:
    """What the first signal does to a `dispatch` pass: ask it to stop (an
    Event no thread waits on) and say so with ``os.write`` (no log locks in
    a signal handler)."""

    def stop(signum: int) -> None:
        runtime.dispatcher.stop()
        os.write(
            2,
            f"signal {signum}: finishing the emails with the provider, then stopping "
            "(a second signal exits at once)\n".encode(),
        )

    return stop


def _dispatch_pass(runtime: Runtime, moment: datetime) -> DispatchReport:
    """One pass at ``moment``, with a progress bar on stderr once it runs long
    (terminals only, see :mod:`nurture.cli.passes`)."""
    dispatcher = runtime.dispatcher
    if not shows_progress(err):
        return dispatcher.dispatch(moment)
    from nurture.store.reports import due_enrollment_count

    with runtime.engine.connect() as conn:
        due = due_enrollment_count(conn, moment)
    progress = PassProgress(lambda: dispatcher.sender.report, due)
    with Live(Group(progress), console=err, transient=True, refresh_per_second=4):
        return dispatcher.dispatch(moment)


def worker_command(ctx: typer.Context) -> None:
    """Run the scheduler: dispatch, reload changed files, reconcile. Ctrl-C stops it."""
    from nurture.app.worker import Worker

    with _runtime(ctx) as runtime:
        settings = runtime.settings
        stop_metrics = None
        if settings.worker_metrics_port is not None:
            from nurture.ops.metrics import serve_worker_metrics

            with errors():
                try:
                    stop_metrics = serve_worker_metrics(
                        settings.worker_metrics_host,
                        settings.worker_metrics_port,
                        settings.metrics_token,
                    )
                except OSError as exc:
                    raise fail(
                        f"worker_metrics_port {settings.worker_metrics_port}: {exc.strerror}",
                        EXIT_CONFIGURATION,
                    ) from exc
        try:
            Worker(runtime).run_blocking()
        finally:
            if stop_metrics is not None:
                stop_metrics()


def _serve(ctx: typer.Context, host: str, port: int, *, with_worker: bool) -> None:
    import uvicorn

    from nurture.app.worker import Worker
    from nurture.web.app import create_app

    server_class = _graceful_server_class()
    with _runtime(ctx) as runtime:
        app = create_app(runtime, Worker(runtime) if with_worker else None)
        role = "worker + web" if with_worker else "web only (run `nurture worker` separately)"
        out.print(
            safe(
                f"nurture {role} on http://{host}:{port} (health: /healthz); transport "
                f"{runtime.settings.transport}; sequences: "
                f"{', '.join(sorted(runtime.registry.sequences())) or 'none'}"
            )
        )
        # log_config=None: uvicorn's records go through the handler the CLI set
        # up (text or JSON, redacted), not a format of its own.
        config = uvicorn.Config(app, host=host, port=port, log_level="info", log_config=None)
        server_class(config).run()


def run_command(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", min=PORT_MIN, max=PORT_MAX, help="Port to listen on.")
    ] = 8000,
) -> None:
    """Migrate, then run the worker and the web app together in one process."""
    _serve(ctx, host, port, with_worker=True)


def web_command(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", min=PORT_MIN, max=PORT_MAX, help="Port to listen on.")
    ] = 8000,
) -> None:
    """Migrate, then run only the web app (for deployments with separate workers)."""
    _serve(ctx, host, port, with_worker=False)


def _graceful_server_class() -> type:
    import uvicorn

    from nurture.app.signals import exit_now

    class GracefulServer(uvicorn.Server):
        """Uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the
        process would die of the signal; here a signal only asks the server to
        stop (the worker stops its pass in the lifespan's shutdown) and the
        process exits 0."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                # A second signal: as in `nurture worker`, leave at once (the
                # lifespan's shutdown may be waiting for a provider that hangs,
                # and it blocks the loop that would act on uvicorn's own flag).
                exit_now(sig, frame)
            super().handle_exit(sig, frame)

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            for sig in previous:
                signal.signal(sig, self.handle_exit)
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer


def resume_command(
    ctx: typer.Context,
    sequence: Annotated[str, typer.Argument(metavar="SEQUENCE", help="The paused sequence's id.")],
) -> None:
    """Resume a paused sequence (its error budget, a failing `when`, its complaint rate)."""
    from nurture.app.runtime import open_engine
    from nurture.store import queries

    with errors():
        engine = open_engine(ctx.obj.store_settings())
        try:
            with engine.begin() as conn:
                if not queries.resume_sequence(conn, sequence, ctx.obj.now()):
                    raise fail(f"{sequence} is not paused")
        finally:
            engine.dispose()
    out.print(safe(f"{sequence} resumed"))


def register_engine_commands(app: typer.Typer) -> None:
    from nurture.cli.plan import plan_command
    from nurture.cli.sendlog import LOG_EXAMPLES, log_command

    app.add_typer(db_app, name="db")
    db_app.command("backup", epilog=BACKUP_EXAMPLES)(backup_command)
    app.command("dispatch", epilog=DISPATCH_EXAMPLES)(dispatch_command)
    app.command("worker", epilog=examples("nurture worker", "nurture -v worker"))(worker_command)
    app.command("run", epilog=examples("nurture run --host 0.0.0.0 --port 8000"))(run_command)
    app.command("web", epilog=examples("nurture web --port 8000"))(web_command)
    app.command("plan", epilog=examples("nurture plan"))(plan_command)
    app.command("resume", epilog=examples("nurture resume sales-process"))(resume_command)
    app.command("log", epilog=LOG_EXAMPLES)(log_command)
