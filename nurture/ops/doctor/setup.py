"""``nurture doctor``'s checks of this machine's setup: the configuration, the
database and its migrations, the sequence files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nurture.errors import NurtureError
from nurture.ops.doctor.report import Check, Status, first_line

if TYPE_CHECKING:
    from nurture.app.settings import Settings
    from nurture.authoring.workbench import ValidationResult


def delivers_mail(settings: Settings) -> bool:
    from nurture.transports import delivers, transport_class

    try:
        return delivers(transport_class(settings.transport))
    except NurtureError:
        return True


def configuration_check(settings: Settings) -> Check:
    from nurture.authoring.project import SAMPLE_POSTAL_ADDRESSES

    where = str(settings.config_file) if settings.config_file else None
    if where is None:
        return Check(
            "configuration",
            "warn",
            "no nurture.toml here: every setting is a default or from NURTURE_* variables",
            "run the command in the project folder (or pass --dir FOLDER), or `nurture init`",
        )
    if settings.has_placeholder_secret:
        status: Status = "fail" if delivers_mail(settings) else "warn"
        return Check(
            "configuration",
            status,
            f"read {where}; secret_key is a placeholder (unsubscribe links could be forged)",
            "set secret_key (or NURTURE_SECRET_KEY) to a long random value, e.g. the output "
            "of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    if settings.postal_address.strip() in SAMPLE_POSTAL_ADDRESSES and delivers_mail(settings):
        # With the outbox it is only the sequences check's warning (validate's).
        return Check(
            "configuration",
            "fail",
            f"read {where}; postal_address is the sample {settings.postal_address.strip()!r} "
            "(every footer shows it; the law wants your own)",
            "set postal_address in nurture.toml (or NURTURE_POSTAL_ADDRESS) to your "
            "company's real postal address",
        )
    return Check("configuration", "ok", f"read {where}")


def database_checks(settings: Settings) -> list[Check]:
    """The database (reachable, migrated) and, on PostgreSQL once it answers
    and is migrated, its maintenance: both read over one connection."""
    check, autovacuum = _database_state(settings)
    maintenance = None if check.status == "fail" else autovacuum_check(autovacuum)
    return [check] if maintenance is None else [check, maintenance]


def _database_state(settings: Settings) -> tuple[Check, bool | None]:
    """The database's check, and PostgreSQL's autovacuum setting (None for
    SQLite, or when the database did not answer)."""
    from sqlalchemy.pool import NullPool

    from nurture.store.db import autovacuum_enabled, make_engine, read_database_url
    from nurture.store.heartbeat import check_database
    from nurture.store.migrate import current_revision

    try:
        url = read_database_url(settings.database_url)
    except NurtureError as exc:
        return Check("database", "fail", str(exc), "fix database_url"), None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(str(url.database))
        if not path.exists():
            missing = Check(
                "database",
                "fail",
                f"no database file at {path}",
                "run `nurture db upgrade` in the project folder (the worker and "
                "`nurture run` also create it on start), or fix database_url",
            )
            return missing, None
    try:
        engine = make_engine(settings.database_url, poolclass=NullPool)
    except NurtureError as exc:  # a driver that is not installed or not known
        return Check("database", "fail", str(exc), "fix database_url"), None
    except Exception as exc:  # a bad URL, a missing driver
        return Check("database", "fail", f"{shown}: {first_line(exc)}", "fix database_url"), None
    try:
        with engine.connect() as conn:
            check_database(conn)
            autovacuum = autovacuum_enabled(conn)
        current = current_revision(engine)
    except Exception as exc:
        silent = Check(
            "database",
            "fail",
            f"{shown} does not answer: {type(exc).__name__}: {first_line(exc)}",
            "start the database server, or fix database_url (host, port, user, password)",
        )
        return silent, None
    finally:
        engine.dispose()
    return _migration_check(shown, current), autovacuum


def _migration_check(shown: str, current: str | None) -> Check:
    from nurture.store.migrate import head_revision, known_revision

    head = head_revision()
    if current is None:
        return Check(
            "database",
            "fail",
            f"{shown} answers but was never migrated",
            "run `nurture db upgrade`",
        )
    if current == head:
        return Check("database", "ok", f"{shown} answers; migrations at head ({head})")
    if not known_revision(current):
        return Check(
            "database",
            "fail",
            f"{shown} is at revision {current}, which this nurture does not know "
            f"(its newest is {head}): a newer nurture migrated it",
            "upgrade nurture on this machine to the version the other processes run",
        )
    return Check(
        "database",
        "warn",
        f"{shown} is at revision {current}; this nurture's newest is {head}",
        "run `nurture db upgrade` (the worker and `nurture run` also migrate on start)",
    )


def autovacuum_check(enabled: bool | None) -> Check | None:
    if enabled is None:
        return None
    if enabled:
        return Check("database maintenance", "ok", "autovacuum is on")
    return Check(
        "database maintenance",
        "warn",
        "autovacuum is off: the planner's statistics and the tables' dead rows are never "
        "refreshed, so the worker's claim of due emails can take seconds per batch",
        "set autovacuum = on in postgresql.conf and reload; meanwhile run "
        "`VACUUM ANALYZE` on the database after large imports and sends",
    )


def validate_sequences(settings: Settings) -> ValidationResult | None:
    from nurture.authoring.workbench import validate_paths

    if not settings.sequences_dir.is_dir():
        return None
    try:
        return validate_paths(settings, [settings.sequences_dir])
    except NurtureError:
        return None


def sequences_check(settings: Settings, result: ValidationResult | None) -> Check:
    if result is None:
        return Check(
            "sequences",
            "fail",
            f"no sequences folder at {settings.sequences_dir}, or it cannot be read",
            "create it with `nurture init`, or fix sequences_dir",
        )
    if result.diagnostics:
        first = str(result.diagnostics[0]).splitlines()[0]
        return Check(
            "sequences",
            "fail",
            f"{len(result.diagnostics)} problem(s) in {result.files} file(s); first: {first}",
            "run `nurture validate` and fix what it lists (invalid files do not run)",
        )
    enabled = sorted(i for i, loaded in result.sequences.items() if loaded.sequence.enabled)
    if not enabled:
        return Check(
            "sequences",
            "warn",
            f"{result.files} file(s), none enabled: nothing will be sent",
            "set `enabled: true` in the sequence files that should run",
        )
    note = (
        f"; {len(result.warnings)} warning(s) (see `nurture validate`)" if result.warnings else ""
    )
    return Check(
        "sequences",
        "warn" if result.warnings else "ok",
        f"{len(enabled)} enabled: {', '.join(enabled)}{note}",
        "run `nurture validate` and look at the warnings" if result.warnings else None,
    )


def sender_domains(result: ValidationResult | None) -> list[tuple[str, str]]:
    """``(domain, address)`` of every sequence's sender, enabled ones first."""
    if result is None:
        return []
    found: dict[str, str] = {}
    ordered = sorted(result.sequences.values(), key=lambda loaded: not loaded.sequence.enabled)
    for loaded in ordered:
        address = loaded.sequence.sender.email
        found.setdefault(address.rpartition("@")[2].lower(), address)
    return list(found.items())
