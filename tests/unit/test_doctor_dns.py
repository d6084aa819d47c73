"""``nurture doctor``'s reading of a sender domain's SPF, DKIM and DMARC records,
over a resolver that answers from a table (no network)."""

from __future__ import annotations

from nurture.ops.doctor import Check, LookupFailed, NoSuchDomain, domain_checks, worst

DOMAIN = "acme.example"


def table(  # type: ignore[no-untyped-def]
    records: dict[tuple[str, str], list[str]], *, down: bool = False, names: bool = False
):
    """A resolver over ``records``; ``names``: a name with no record at all is
    NXDOMAIN, as a real resolver answers, rather than an empty answer."""

    def resolve(name: str, rdtype: str) -> list[str]:
        if down:
            raise LookupFailed("Timeout")
        if names and not any(known == name for known, _ in records):
            raise NoSuchDomain(name)
        return records.get((name, rdtype), [])

    return resolve


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name.split()[0]: check for check in checks}


def test_a_domain_with_every_record_is_ok() -> None:
    resolve = table(
        {
            (DOMAIN, "TXT"): ["google-site-verification=x", "v=spf1 include:sendgrid.net ~all"],
            (f"s1._domainkey.{DOMAIN}", "CNAME"): ["s1.domainkey.u123.wl.sendgrid.net."],
            (f"s2._domainkey.{DOMAIN}", "CNAME"): ["s2.domainkey.u123.wl.sendgrid.net."],
            (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=quarantine"],
        }
    )
    checks = by_name(domain_checks(DOMAIN, resolve, sendgrid=True))
    assert {name: check.status for name, check in checks.items()} == {
        "SPF": "ok",
        "DKIM": "ok",
        "DMARC": "ok",
    }
    assert checks["SPF"].detail == "v=spf1 include:sendgrid.net ~all"
    assert "s1.domainkey.u123" in checks["DKIM"].detail


def test_missing_records_are_warnings_that_say_what_to_add() -> None:
    checks = by_name(domain_checks(DOMAIN, table({}), sendgrid=True))
    assert all(check.status == "warn" for check in checks.values())
    assert worst(list(checks.values())) == "warn"  # never a failure
    spf_fix = checks["SPF"].fix
    assert spf_fix is not None and "v=spf1 include:sendgrid.net ~all" in spf_fix
    dkim_fix = checks["DKIM"].fix
    assert dkim_fix is not None and "Sender Authentication" in dkim_fix
    dmarc_fix = checks["DMARC"].fix
    assert dmarc_fix is not None and f"_dmarc.{DOMAIN}" in dmarc_fix and "v=DMARC1" in dmarc_fix


def test_two_spf_records_are_a_warning() -> None:
    resolve = table({(DOMAIN, "TXT"): ["v=spf1 a ~all", "v=spf1 mx ~all"]})
    spf = by_name(domain_checks(DOMAIN, resolve, sendgrid=False))["SPF"]
    assert spf.status == "warn" and "merge" in (spf.fix or "")


def test_another_provider_is_told_which_selector_to_check() -> None:
    dkim = by_name(domain_checks(DOMAIN, table({}), sendgrid=False))["DKIM"]
    assert dkim.status == "warn"
    assert f"SELECTOR._domainkey.{DOMAIN}" in (dkim.fix or "")


def test_no_dns_answer_is_a_warning_not_a_failure() -> None:
    checks = domain_checks(DOMAIN, table({}, down=True), sendgrid=True)
    assert [check.status for check in checks] == ["warn", "warn", "warn"]
    assert all("could not resolve" in check.detail for check in checks)


def test_a_domain_that_does_not_exist_is_one_warning_naming_it() -> None:
    checks = domain_checks("acme.exmaple", table({}, names=True), sendgrid=True)
    assert [(check.name, check.status) for check in checks] == [("DNS acme.exmaple", "warn")]
    assert "does not exist in DNS" in checks[0].detail
    assert "a typo?" in (checks[0].fix or "")


def test_a_selector_or_dmarc_name_that_does_not_exist_is_a_missing_record() -> None:
    resolve = table({(DOMAIN, "TXT"): ["v=spf1 include:sendgrid.net ~all"]}, names=True)
    checks = by_name(domain_checks(DOMAIN, resolve, sendgrid=True))
    assert {name: check.status for name, check in checks.items()} == {
        "SPF": "ok",
        "DKIM": "warn",
        "DMARC": "warn",
    }
    assert "no DMARC record" in checks["DMARC"].detail
