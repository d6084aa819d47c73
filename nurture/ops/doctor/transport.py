"""``nurture doctor``'s network checks: the transport (the outbox folder, a
SendGrid sandbox-mode request, an SMTP login) and whether ``base_url`` answers."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nurture.errors import ConfigurationError
from nurture.ops.doctor.report import Check, first_line
from nurture.ops.doctor.setup import delivers_mail

if TYPE_CHECKING:
    from nurture.app.settings import Settings

SANDBOX_SUBJECT = "nurture doctor: sandbox-mode check (never delivered)"


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
    from nurture.transports.base import redact

    return redact(text, key)


def sendgrid_check(settings: Settings, *, timeout: float, sender: str | None) -> Check:
    from nurture.transports.sendgrid import MAIL_SEND_PATH, check_api_host

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
    try:
        check_api_host(settings.sendgrid_api_host)
    except ConfigurationError as exc:
        return Check(
            "transport",
            "fail",
            f"sendgrid: {exc}",
            "set NURTURE_SENDGRID_API_HOST to https://api.sendgrid.com (or leave it unset)",
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
            f"sendgrid: cannot reach {settings.sendgrid_api_host} ({first_line(reason)})",
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
            f"smtp: {where}: {type(exc).__name__}: {first_line(exc)}",
            "check smtp_host, smtp_port, smtp_starttls / smtp_ssl, and the firewall",
        )
    login = " and logged in" if settings.smtp_username else ""
    return Check("transport", "ok", f"smtp: connected to {where}{login}")


def base_url_checks(settings: Settings, *, timeout: float) -> list[Check]:
    from nurture.urls import base_url_problem

    base = settings.base_url
    problem = base_url_problem(base)
    checks = []
    if problem is not None:
        delivering = delivers_mail(settings)
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
                f"GET {url} failed from here ({first_line(reason)})",
                "start `nurture run` (or `nurture web`) and make the reverse proxy forward "
                "base_url to it; subscribers' links must reach it",
            )
        )
        return checks
    checks.append(Check("base_url answers", "ok", f"GET {url} answered {status}"))
    return checks
