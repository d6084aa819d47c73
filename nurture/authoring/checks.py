"""Values that came with nurture and are still in place: ``validate`` warns about them.

``nurture init`` writes placeholders where the user gave nothing, and the
example sequence is disabled. All of it validates, so a new user can try every
command at once; none of it may reach a subscriber unnoticed. Each warning
names where to make the change: the sequence file's line, or the setting as
configuration errors name it (``nurture.toml`` and its ``NURTURE_*`` variable).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from nurture.app.config_file import CONFIG_FILE, key_position, shown_path
from nurture.app.settings import Settings
from nurture.authoring.project import SAMPLE_POSTAL_ADDRESSES
from nurture.core.loader import LoadedSequence
from nurture.errors import Diagnostic
from nurture.urls import base_url_problem

# Domains reserved for documentation and tests (RFC 2606, RFC 6761): mail to
# them goes nowhere, so a sender there is an example someone forgot.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
EXAMPLE_TOP_LEVEL = ("example", "test", "invalid", "localhost")


def is_example_domain(domain: str) -> bool:
    """Whether ``domain`` (a host name) is reserved for examples."""
    domain = domain.lower().rstrip(".")
    return domain.rpartition(".")[2] in EXAMPLE_TOP_LEVEL or any(
        domain == reserved or domain.endswith("." + reserved) for reserved in EXAMPLE_DOMAINS
    )


def is_example_address(address: str) -> bool:
    """Whether ``address`` is at a domain reserved for examples."""
    return is_example_domain(address.rpartition("@")[2])


def example_values(settings: Settings, sequences: Iterable[LoadedSequence]) -> list[Diagnostic]:
    """Warnings for example values still in place: in the sequence files
    (disabled, an example sender) and in the settings (the sample postal
    address, a base URL no subscriber can open, an empty or placeholder secret
    key)."""
    found: list[Diagnostic] = []
    for loaded in sequences:
        found.extend(_in_sequence(loaded))
    found.extend(_in_settings(settings))
    return found


def _in_sequence(loaded: LoadedSequence) -> list[Diagnostic]:
    sequence = loaded.sequence
    found = []
    if not sequence.enabled:
        found.append(
            loaded.diagnostic(
                ("enabled",),
                f"{sequence.id} is disabled: nobody is enrolled and nothing is sent "
                "until enabled: true",
            )
        )
    addresses = {"email": sequence.sender.email, "reply_to": sequence.sender.reply_to}
    for key, address in addresses.items():
        if address is None or not is_example_address(address):
            continue
        if key == "reply_to" and address == sequence.sender.email:
            continue  # one warning for the same address
        found.append(
            loaded.diagnostic(
                ("sender", key),
                f"sender {key} {address} is an example address: use your own "
                "(an inbox someone reads)",
            )
        )
    brand = sequence.brand.name if sequence.brand is not None else None
    if brand in EXAMPLE_BRANDS:
        found.append(
            loaded.value_diagnostic(
                ("brand", "name"),
                f"brand name {brand!r} is the example's: every email and sign-up page shows "
                "it; put your business's name",
            )
        )
    for index, step in enumerate(sequence.steps):
        offer = step.offer
        if offer is not None and is_example_domain(urlsplit(offer.checkout_url).hostname or ""):
            found.append(
                loaded.value_diagnostic(
                    ("steps", index, "offer", "checkout_url"),
                    f"checkout_url {offer.checkout_url} is an example address: "
                    "purchases would go nowhere; put your shop's checkout page",
                )
            )
        texts = step.subject if isinstance(step.subject, dict) else {"": step.subject}
        for locale, subject in texts.items():
            length = len(_JINJA.sub("x", subject))
            if length > LONG_SUBJECT:
                path = ("steps", index, "subject", *((locale,) if locale else ()))
                found.append(
                    loaded.value_diagnostic(
                        path,
                        f"step {step.id!r}: the subject is {length} characters; inboxes show "
                        f"about the first 60 (phones fewer): keep it under {LONG_SUBJECT}, "
                        "what matters first",
                    )
                )
    return found


EXAMPLE_BRANDS = frozenset({"Exempel AB", "Your Company"})
"""The brand names of the example sequence and of ``nurture init``'s nurture.toml."""

LONG_SUBJECT = 100
"""Characters of a subject above which ``validate`` warns (a Jinja tag counts one)."""

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _in_settings(settings: Settings) -> list[Diagnostic]:
    found = []
    if settings.postal_address in SAMPLE_POSTAL_ADDRESSES:
        found.append(
            _setting(
                settings,
                "postal_address",
                f"is the sample {settings.postal_address!r}: every footer shows it; "
                "put your real postal address (the law requires it)",
            )
        )
    problem = base_url_problem(settings.base_url)
    if problem is not None:
        found.append(
            _setting(
                settings,
                "base_url",
                f"{settings.base_url!r} {problem}: links in sent emails would not open. "
                "Fine for the outbox; set your public https:// address before sending for real",
            )
        )
    if settings.has_placeholder_secret:
        # The value itself is not shown: a secret key is never printed.
        what = "is empty" if not settings.secret_key.strip() else "is a placeholder"
        found.append(
            _setting(
                settings,
                "secret_key",
                f"{what}: anyone could forge unsubscribe and preferences links. Fine for "
                "the outbox; set a long random value (`nurture init` writes one) before "
                "sending for real",
            )
        )
    return found


def _setting(settings: Settings, key: str, message: str) -> Diagnostic:
    """A warning about setting ``key``, at its line in ``nurture.toml`` when it is there."""
    variable = f"NURTURE_{key.upper()}"
    config = settings.config_file
    shown = shown_path(config) if config is not None else CONFIG_FILE
    if any(name.upper() == variable for name in os.environ):
        return Diagnostic(shown, 1, 1, f"{key} (from {variable}) {message}")
    position = key_position(config, key) if config is not None else None
    if position is None:
        where = f"set neither in {CONFIG_FILE} nor in {variable}"
        return Diagnostic(shown, 1, 1, f"{key} ({where}) {message}")
    return Diagnostic(shown, *position, f"{key} {message}")
