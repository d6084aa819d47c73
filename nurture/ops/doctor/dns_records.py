"""``nurture doctor``'s DNS checks of a sender's domain: SPF, DKIM (SendGrid's
selectors) and DMARC. At most warnings: this machine's resolver may see
something other than the internet does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nurture.ops.doctor.report import Check

if TYPE_CHECKING:
    from nurture.app.settings import Settings


class LookupFailed(Exception):
    """A DNS question got no answer (timeout, no reachable server)."""


class NoSuchDomain(Exception):
    """The name does not exist in DNS at all (NXDOMAIN), not merely without that record."""


Resolver = Callable[[str, str], list[str]]
"""``(name, "TXT" | "CNAME") -> records``: the texts of TXT records (joined),
the targets of CNAMEs; ``[]`` when the name has no record of the type. Raises
:class:`NoSuchDomain` when the name does not exist (a resolver that cannot
tell may return ``[]``) and :class:`LookupFailed` when the question could not
be answered."""


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
        except dns.resolver.NXDOMAIN as exc:
            raise NoSuchDomain(name) from exc
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as exc:
            raise LookupFailed(type(exc).__name__) from exc
        if rdtype == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return [r.to_text() for r in answer]

    return resolve


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
    except NoSuchDomain:
        return []  # for a selector or _dmarc name, the usual way to have none
    except LookupFailed:
        return None


def _unresolved(check: str, name: str, rdtype: str) -> Check:
    """The warning for a record this machine got no DNS answer about."""
    return Check(
        check,
        "warn",
        f"could not resolve {name} from here (no DNS answer)",
        f"check the record with `dig {rdtype} {name}` from a machine with DNS",
    )


def domain_checks(domain: str, resolve: Resolver, *, sendgrid: bool) -> list[Check]:
    """SPF, DKIM and DMARC of ``domain``; at worst warnings."""
    checks = []

    try:
        txt: list[str] | None = resolve(domain, "TXT")
    except NoSuchDomain:
        # Three "no record" warnings would hide the cause: the domain itself.
        return [
            Check(
                f"DNS {domain}",
                "warn",
                f"{domain} does not exist in DNS (NXDOMAIN), as this machine's resolver sees it",
                f"check the domain of the sender's address (a typo?); if it is right, "
                f"check `dig TXT {domain}` from a machine with the internet's DNS",
            )
        ]
    except LookupFailed:
        txt = None
    name = f"SPF {domain}"
    if txt is None:
        checks.append(_unresolved(name, domain, "TXT"))
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
        checks.append(_unresolved(name, selectors[0], "CNAME"))
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
        checks.append(_unresolved(name, dmarc_name, "TXT"))
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
