"""``nurture doctor``: is this deployment ready to send, and if not, what to fix.

:func:`run_checks` returns one :class:`Check` per thing it looked at, in the
order an admin would fix them: the configuration, the database and its
migrations, the transport (a SendGrid sandbox-mode request, which SendGrid
validates and answers without sending anything), the sequence files, the
public ``base_url``, and the DNS records the sender's domain needs (SPF, DKIM,
DMARC). Each check says ``ok``, ``warn``, ``fail`` or ``skip`` and, unless it
is ok, what to change.

DNS problems are at most warnings: the records may be fine from the
internet's point of view and not from this machine's resolver, and a
deployment that only writes to the outbox needs none of them. DNS lookups use
dnspython (``pip install 'nurture[dns]'``) when it is installed.

Nothing here prints, and no secret (the API key, the secret key, the database
password) is ever part of a check's text.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nurture.errors import NurtureError

if TYPE_CHECKING:
    from nurture.app.settings import Settings
    from nurture.authoring.workbench import ValidationResult

Status = Literal["ok", "warn", "fail", "skip"]

SANDBOX_SUBJECT = "nurture doctor: sandbox-mode check (never delivered)"


@dataclass(frozen=True)
class Check:
    """One thing ``doctor`` looked at."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def worst(checks: list[Check]) -> Status:
    """``fail`` if any check failed, else ``warn`` if any warned, else ``ok``."""
    statuses = {check.status for check in checks}
    if "fail" in statuses:
        return "fail"
    return "warn" if "warn" in statuses else "ok"


def unreadable_configuration(checks: list[Check]) -> Check | None:
    """The failed configuration check when the settings could not be read at all
    (then it is the only check: nothing else can be looked at)."""
    if len(checks) == 1 and checks[0].name == "configuration" and checks[0].status == "fail":
        return checks[0]
    return None


class LookupFailed(Exception):
    """A DNS question got no answer (timeout, no reachable server)."""


Resolver = Callable[[str, str], list[str]]
"""``(name, "TXT" | "CNAME") -> records``: the texts of TXT records (joined),
the targets of CNAMEs; ``[]`` when the name or the type does not exist. Raises
:class:`LookupFailed` when the question could not be answered."""


def dnspython_resolver(timeout: float) -> Resolver | None:
    """A :data:`Resolver` over dnspython, or None when it is not installed."""
    try:
        import dns.exception
        import dns.resolver
    except ImportError:
        return None
    resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout

    def resolve(name: str, rdtype: str) -> list[str]:
        try:
            answer = resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise LookupFailed(type(exc).__name__) from exc
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return [r.to_text() for r in answer]

    return resolve


def run_checks(
    folder: Path,
    *,
    timeout: float = 5.0,
    dns: bool = True,
    resolver: Resolver | None = None,
) -> list[Check]:
    """Every check, for the project in ``folder``."""
    from nurture.app.settings import load_settings

    try:
        settings = load_settings(folder)
    except NurtureError as exc:
        return [
            Check(
                "configuration",
                "fail",
                str(exc),
                "fix the setting named above in nurture.toml or the NURTURE_* variable",
            )
        ]
    checks = [configuration_check(settings)]
    checks.append(database_check(settings))
    validation = _validate(settings)
    checks.append(sequences_check(settings, validation))
    senders = _sender_domains(validation)
    checks.append(
        transport_check(settings, timeout=timeout, sender=senders[0][1] if senders else None)
    )
    checks.extend(base_url_checks(settings, timeout=timeout))
    if not dns:
        checks.append(Check("dns", "skip", "DNS checks skipped (--skip-dns)"))
    else:
        checks.extend(dns_checks(settings, [domain for domain, _ in senders], resolver, timeout))
    return checks


def _delivers(settings: Settings) -> bool:
    from nurture.transports import delivers, transport_class

    try:
        return delivers(transport_class(settings.transport))
    except NurtureError:
        return True


def configuration_check(settings: Settings) -> Check:
    where = str(settings.config_file) if settings.config_file else None
    if where is None:
        return Check(
            "configuration",
            "warn",
            "no nurture.toml here: every setting is a default or from NURTURE_* variables",
            "run the command in the project folder (or pass --dir FOLDER), or `nurture init`",
        )
    if settings.has_placeholder_secret:
        status: Status = "fail" if _delivers(settings) else "warn"
        return Check(
            "configuration",
            status,
            f"read {where}; secret_key is a placeholder (unsubscribe links could be forged)",
            "set secret_key (or NURTURE_SECRET_KEY) to a long random value, e.g. the output "
            "of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    return Check("configuration", "ok", f"read {where}")


def database_check(settings: Settings) -> Check:
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from nurture.store.db import make_engine
    from nurture.store.heartbeat import check_database
    from nurture.store.migrate import current_revision, head_revision, known_revision

    url = make_url(settings.database_url)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(str(url.database))
        if not path.exists():
            return Check(
                "database",
                "fail",
                f"no database file at {path}",
                "run `nurture db upgrade` in the project folder (the worker and "
                "`nurture run` also create it on start), or fix database_url",
            )
    try:
        engine = make_engine(settings.database_url, poolclass=NullPool)
    except Exception as exc:  # a bad URL, a missing driver
        return Check("database", "fail", f"{shown}: {_first_line(exc)}", "fix database_url")
    try:
        with engine.connect() as conn:
            check_database(conn)
        current = current_revision(engine)
    except Exception as exc:
        return Check(
            "database",
            "fail",
            f"{shown} does not answer: {type(exc).__name__}: {_first_line(exc)}",
            "start the database server, or fix database_url (host, port, user, password)",
        )
    finally:
        engine.dispose()
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


def _validate(settings: Settings) -> ValidationResult | None:
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


def _sender_domains(result: ValidationResult | None) -> list[tuple[str, str]]:
    """``(domain, address)`` of every sequence's sender, enabled ones first."""
    if result is None:
        return []
    found: dict[str, str] = {}
    ordered = sorted(result.sequences.values(), key=lambda loaded: not loaded.sequence.enabled)
    for loaded in ordered:
        address = loaded.sequence.sender.email
        found.setdefault(address.rpartition("@")[2].lower(), address)
    return list(found.items())


def transport_check(settings: Settings, *, timeout: float, sender: str | None) -> Check:
    name = settings.transport
    if name == "outbox":
        return outbox_check(settings.outbox_dir)
    if name == "sendgrid":
        return sendgrid_check(settings, timeout=timeout, sender=sender)
    if name == "smtp":
        return smtp_check(settings, timeout=timeout)
    return Check("transport", "skip", f"transport {name!r}: no check for it here")


def outbox_check(folder: Path) -> Check:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != folder:
        if os.access(existing, os.W_OK):
            return Check("transport", "ok", f"outbox: {folder} will be created on the first send")
        return Check(
            "transport",
            "fail",
            f"outbox: {folder} does not exist and {existing} is not writable",
            "create the folder, or point outbox_dir somewhere this user can write",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "transport",
            "fail",
            f"outbox: cannot write in {folder} ({type(exc).__name__})",
            "fix the folder's permissions, or point outbox_dir somewhere writable",
        )
    return Check("transport", "ok", f"outbox: {folder} is writable")


def sandbox_body(sender: str) -> dict[str, Any]:
    """A minimal v3 Mail Send body in sandbox mode: validated, never delivered."""
    return {
        "personalizations": [{"to": [{"email": sender}]}],
        "from": {"email": sender},
        "subject": SANDBOX_SUBJECT,
        "content": [{"type": "text/plain", "value": "nurture doctor"}],
        "mail_settings": {"sandbox_mode": {"enable": True}},
    }


def _sendgrid_errors(raw: bytes, key: str) -> str:
    try:
        parsed = json.loads(raw)
        messages = [str(item.get("message")) for item in parsed.get("errors", [])]
    except (ValueError, AttributeError, TypeError):
        messages = []
    text = "; ".join(messages) or raw.decode("utf-8", "replace")[:200]
    return text.replace(key, "[redacted]") if key else text


def sendgrid_check(settings: Settings, *, timeout: float, sender: str | None) -> Check:
    from nurture.transports.sendgrid import MAIL_SEND_PATH

    key = settings.sendgrid_api_key
    if not key:
        return Check(
            "transport",
            "fail",
            "sendgrid: no API key",
            "set NURTURE_SENDGRID_API_KEY (a key with the Mail Send permission) in the "
            "environment of every nurture process",
        )
    if sender is None:
        return Check(
            "transport",
            "warn",
            "sendgrid: no sequence names a sender, so no sandbox request was made",
            "fix the sequence files (see the sequences check)",
        )
    url = settings.sendgrid_api_host.rstrip("/") + MAIL_SEND_PATH
    request = urllib.request.Request(
        url,
        data=json.dumps(sandbox_body(sender)).encode("utf-8"),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
        problem = _sendgrid_errors(body, key)
        if status == 401:
            return Check(
                "transport",
                "fail",
                f"sendgrid: the API key was refused (401: {problem})",
                "create a new API key with Mail Send permission and set NURTURE_SENDGRID_API_KEY",
            )
        if status == 403:
            return Check(
                "transport",
                "fail",
                f"sendgrid: forbidden (403: {problem})",
                f"give the key the Mail Send permission, and verify {sender} (or its "
                "domain) as a Sender Identity in SendGrid",
            )
        if status == 400:
            return Check(
                "transport",
                "fail",
                f"sendgrid: the sandbox request was rejected (400: {problem})",
                "check the sender address in the sequence files",
            )
        return Check(
            "transport",
            "warn",
            f"sendgrid: answered {status} ({problem})",
            "try again later; see https://status.sendgrid.com",
        )
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(
            "transport",
            "fail",
            f"sendgrid: cannot reach {settings.sendgrid_api_host} ({_first_line(reason)})",
            "check the network and firewall of this machine, and sendgrid_api_host",
        )
    return Check(
        "transport",
        "ok",
        f"sendgrid: a sandbox-mode request from {sender} was accepted ({status}; nothing sent)",
    )


def smtp_check(settings: Settings, *, timeout: float) -> Check:
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        client: smtplib.SMTP
        if settings.smtp_ssl:
            client = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=timeout,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with client:
            client.ehlo()
            if settings.smtp_starttls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if settings.smtp_username:
                client.login(settings.smtp_username, settings.smtp_password or "")
            client.noop()
    except smtplib.SMTPAuthenticationError:
        return Check(
            "transport",
            "fail",
            f"smtp: {where} refused the username and password",
            "fix smtp_username and smtp_password",
        )
    except (smtplib.SMTPException, OSError) as exc:
        return Check(
            "transport",
            "fail",
            f"smtp: {where}: {type(exc).__name__}: {_first_line(exc)}",
            "check smtp_host, smtp_port, smtp_starttls / smtp_ssl, and the firewall",
        )
    login = " and logged in" if settings.smtp_username else ""
    return Check("transport", "ok", f"smtp: connected to {where}{login}")


def base_url_checks(settings: Settings, *, timeout: float) -> list[Check]:
    from nurture.app.settings import base_url_problem

    base = settings.base_url
    problem = base_url_problem(base)
    checks = []
    if problem is not None:
        delivering = _delivers(settings)
        checks.append(
            Check(
                "base_url",
                "fail" if delivering else "warn",
                f"{base} {problem}"
                + ("" if delivering else " (fine for the outbox, not for a real provider)"),
                "set base_url to the public https:// address of `nurture run` / `nurture web` "
                "(unsubscribe links and one-click List-Unsubscribe point there)",
            )
        )
    else:
        checks.append(Check("base_url", "ok", f"{base} is public https"))
    url = f"{base}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        checks.append(
            Check(
                "base_url answers",
                "warn",
                f"GET {url} answered {error.code}",
                "open it in a browser: 503 lists what is degraded (a worker, the database); "
                "another code means the proxy does not reach nurture",
            )
        )
        return checks
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        checks.append(
            Check(
                "base_url answers",
                "warn",
                f"GET {url} failed from here ({_first_line(reason)})",
                "start `nurture run` (or `nurture web`) and make the reverse proxy forward "
                "base_url to it; subscribers' links must reach it",
            )
        )
        return checks
    checks.append(Check("base_url answers", "ok", f"GET {url} answered {status}"))
    return checks


def dns_checks(
    settings: Settings, domains: list[str], resolver: Resolver | None, timeout: float
) -> list[Check]:
    if not domains:
        return [Check("dns", "skip", "no sender domain (no valid sequence)")]
    resolve = resolver or dnspython_resolver(timeout)
    if resolve is None:
        return [
            Check(
                "dns",
                "skip",
                "dnspython is not installed, so SPF, DKIM and DMARC were not checked",
                "pip install 'nurture[dns]', or check the records with `dig TXT DOMAIN`",
            )
        ]
    checks: list[Check] = []
    for domain in domains:
        checks.extend(domain_checks(domain, resolve, sendgrid=settings.transport == "sendgrid"))
    return checks


def _lookup(resolve: Resolver, name: str, rdtype: str) -> list[str] | None:
    try:
        return resolve(name, rdtype)
    except LookupFailed:
        return None


def domain_checks(domain: str, resolve: Resolver, *, sendgrid: bool) -> list[Check]:
    """SPF, DKIM and DMARC of ``domain``; at worst warnings."""
    checks = []
    unresolved = "could not resolve {name} from here (no DNS answer)"
    recheck = "check the record with `dig {rdtype} {name}` from a machine with DNS"

    txt = _lookup(resolve, domain, "TXT")
    name = f"SPF {domain}"
    if txt is None:
        checks.append(
            Check(
                name,
                "warn",
                unresolved.format(name=domain),
                recheck.format(rdtype="TXT", name=domain),
            )
        )
    else:
        spf = [record for record in txt if record.lower().startswith("v=spf1")]
        if len(spf) == 1:
            checks.append(Check(name, "ok", spf[0]))
        elif not spf:
            hint = " include:sendgrid.net" if sendgrid else ""
            checks.append(
                Check(
                    name,
                    "warn",
                    f'no SPF record (TXT "v=spf1 ...") at {domain}',
                    f'add a TXT record at {domain}: "v=spf1{hint} ~all" (with the other '
                    "services that send as this domain)",
                )
            )
        else:
            checks.append(
                Check(
                    name,
                    "warn",
                    f"{len(spf)} SPF records at {domain}: receivers treat that as an error",
                    "merge them into one TXT record",
                )
            )

    name = f"DKIM {domain}"
    selectors = [f"s1._domainkey.{domain}", f"s2._domainkey.{domain}"]
    found = {selector: _lookup(resolve, selector, "CNAME") for selector in selectors}
    if all(records for records in found.values()):
        targets = ", ".join(f"{s} -> {r[0]}" for s, r in found.items() if r)
        checks.append(Check(name, "ok", f"SendGrid's selectors: {targets}"))
    elif any(records is None for records in found.values()):
        checks.append(
            Check(
                name,
                "warn",
                unresolved.format(name=selectors[0]),
                recheck.format(rdtype="CNAME", name=selectors[0]),
            )
        )
    elif sendgrid:
        checks.append(
            Check(
                name,
                "warn",
                f"no CNAME at {selectors[0]} and {selectors[1]}",
                "authenticate the domain in SendGrid (Settings > Sender Authentication) and "
                "add the CNAME records it shows",
            )
        )
    else:
        checks.append(
            Check(
                name,
                "warn",
                f"no SendGrid selector (s1/s2._domainkey) at {domain}; your provider's "
                "selector was not checked",
                "check the selector your provider signs with: "
                f"`dig TXT SELECTOR._domainkey.{domain}`",
            )
        )

    name = f"DMARC {domain}"
    dmarc_name = f"_dmarc.{domain}"
    records = _lookup(resolve, dmarc_name, "TXT")
    if records is None:
        checks.append(
            Check(
                name,
                "warn",
                unresolved.format(name=dmarc_name),
                recheck.format(rdtype="TXT", name=dmarc_name),
            )
        )
    else:
        dmarc = [record for record in records if record.lower().startswith("v=dmarc1")]
        if dmarc:
            checks.append(Check(name, "ok", dmarc[0]))
        else:
            checks.append(
                Check(
                    name,
                    "warn",
                    f"no DMARC record at {dmarc_name}: Gmail and Yahoo require one of bulk senders",
                    f'add a TXT record at {dmarc_name}: "v=DMARC1; p=none; '
                    f'rua=mailto:dmarc@{domain}"',
                )
            )
    return checks


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
