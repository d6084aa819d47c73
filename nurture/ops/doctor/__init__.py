"""``nurture doctor``: is this deployment ready to send, and if not, what to fix.

:func:`run_checks` returns one :class:`Check` per thing it looked at, in the
order an admin would fix them: the configuration, the database and its
migrations, the transport (a SendGrid sandbox-mode request, which SendGrid
validates and answers without sending anything), the sequence files, the
public ``base_url``, and the DNS records the sender's domain needs (SPF, DKIM,
DMARC). Each check says ``ok``, ``warn``, ``fail`` or ``skip`` and, unless it
is ok, what to change.

The checks live by what they look at: :mod:`.setup` (the configuration, the
database, the sequence files), :mod:`.transport` (the outbox, SendGrid, SMTP
and whether ``base_url`` answers) and :mod:`.dns_records` (SPF, DKIM, DMARC);
:mod:`.report` holds :class:`Check` itself.

DNS problems are at most warnings: the records may be fine from the
internet's point of view and not from this machine's resolver, and a
deployment that only writes to the outbox needs none of them. DNS lookups use
dnspython (``pip install 'nurture[dns]'``) when it is installed.

Nothing here prints, and no secret (the API key, the secret key, the database
password) is ever part of a check's text.
"""

from __future__ import annotations

from pathlib import Path

from nurture.errors import NurtureError
from nurture.ops.doctor.dns_records import (
    LookupFailed,
    NoSuchDomain,
    Resolver,
    dns_checks,
    dnspython_resolver,
    domain_checks,
)
from nurture.ops.doctor.report import Check, Status, unreadable_configuration, worst
from nurture.ops.doctor.setup import (
    autovacuum_check,
    configuration_check,
    database_checks,
    sender_domains,
    sequences_check,
    validate_sequences,
)
from nurture.ops.doctor.transport import (
    SANDBOX_SUBJECT,
    base_url_checks,
    outbox_check,
    sandbox_body,
    sendgrid_check,
    smtp_check,
    transport_check,
)

__all__ = [
    "SANDBOX_SUBJECT",
    "Check",
    "LookupFailed",
    "NoSuchDomain",
    "Resolver",
    "Status",
    "autovacuum_check",
    "base_url_checks",
    "configuration_check",
    "database_checks",
    "dns_checks",
    "dnspython_resolver",
    "domain_checks",
    "outbox_check",
    "run_checks",
    "sandbox_body",
    "sendgrid_check",
    "sequences_check",
    "smtp_check",
    "transport_check",
    "unreadable_configuration",
    "worst",
]


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
    checks.extend(database_checks(settings))
    validation = validate_sequences(settings)
    checks.append(sequences_check(settings, validation))
    senders = sender_domains(validation)
    checks.append(
        transport_check(settings, timeout=timeout, sender=senders[0][1] if senders else None)
    )
    checks.extend(base_url_checks(settings, timeout=timeout))
    if not dns:
        checks.append(Check("dns", "skip", "DNS checks skipped (--skip-dns)"))
    else:
        checks.extend(dns_checks(settings, [domain for domain, _ in senders], resolver, timeout))
    return checks
