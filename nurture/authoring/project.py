"""A new working folder (``nurture init``): the example made safe, and the settings.

The example sequence ships live (the demo sends it), so ``init`` writes a copy
that cannot reach anyone: ``enabled: false`` under a banner that says it is an
example, and the sender the user gave instead of the example's. It stays in
``sequences/``, where ``validate``, ``preview`` and ``simulate`` find it, so a
new user learns the tools on it and switches it on (or copies it) when their
own content is ready.

What the user does not give yet becomes a placeholder that validates, and
:mod:`nurture.authoring.checks` warns about it until it is replaced.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from nurture.app.config_file import CONFIG_FILE
from nurture.core.model import Sender

EXAMPLE_SEQUENCE = "sequences/sales-process.yaml"
PLACEHOLDER_SENDER = "Your Name <you@example.com>"
PLACEHOLDER_POSTAL_ADDRESS = "Your Company, 1 Example Street, 12345 Your City, Country"
LOCAL_BASE_URL = "http://localhost:8000"
# Postal addresses that come with nurture: the placeholder above, the example
# project's, and the setting's default. None of them is anyone's real address.
SAMPLE_POSTAL_ADDRESSES = frozenset(
    {
        PLACEHOLDER_POSTAL_ADDRESS,
        "Exempel AB, Storgatan 1, 111 22 Stockholm, Sweden",
        "Example AB, Storgatan 1, 111 22 Stockholm, Sweden",
    }
)

_ENABLED_LINE = re.compile(r"^enabled: true\b.*$", re.MULTILINE)
_SENDER_BLOCK = re.compile(r"^sender:[ \t]*\n(?:[ \t]+\S.*\n)+", re.MULTILINE)
_BANNER = """\
# ==============================================================================
# EXAMPLE, written by `nurture init`: a Swedish/English B2B series to learn from.
# It is DISABLED (enabled: false below): nobody is enrolled in it and nothing is
# sent from it, whatever tags your subscribers carry. `nurture validate`,
# `nurture preview` and `nurture simulate` work on it as it is.
# Make it yours (texts, trigger, offer), then set enabled: true; or copy it to a
# file of your own with a new id.
# ==============================================================================
"""


def parse_sender(text: str) -> Sender:
    """``"Maja Berg <maja@bergdesign.se>"`` as a :class:`Sender`; ValueError says why not."""
    name, address = parseaddr(text.strip())
    if not address or "@" not in address:
        raise ValueError(f"{text!r} is not a name and address such as 'Maja Berg <maja@shop.se>'")
    if not name.strip():
        raise ValueError(
            f"give a name too, as subscribers see it: 'Maja Berg <{address}>' "
            "(emails from a person get read and answered)"
        )
    try:
        return Sender(name=name.strip(), email=address)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from exc


def check_base_url(text: str) -> str:
    """``text`` as a base URL (``http(s)://host``, no trailing slash); ValueError says why not."""
    value = text.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is not an address such as https://mail.example.com")
    return value


def check_postal_address(text: str) -> str:
    value = " ".join(text.split())
    if not value:
        raise ValueError("the postal address is shown in every footer: it cannot be empty")
    return value


@dataclass(frozen=True)
class ProjectChoices:
    """What ``init`` asks for; the defaults are the placeholders."""

    sender: Sender
    postal_address: str = PLACEHOLDER_POSTAL_ADDRESS
    base_url: str = LOCAL_BASE_URL

    def placeholders(self) -> list[str]:
        """The choices still at their placeholder, named as the user knows them."""
        left = []
        if self.sender == parse_sender(PLACEHOLDER_SENDER):
            left.append(f"the sender ({EXAMPLE_SEQUENCE})")
        settings = [
            name
            for name, placeholder in (
                ("postal_address", self.postal_address in SAMPLE_POSTAL_ADDRESSES),
                ("base_url", self.base_url == LOCAL_BASE_URL),
            )
            if placeholder
        ]
        if settings:
            left.append(f"{' and '.join(settings)} ({CONFIG_FILE})")
        return left


def _quoted(value: str) -> str:
    """A double-quoted string that YAML 1.2 and TOML read alike (JSON's escapes)."""
    return json.dumps(value, ensure_ascii=False)


def starter_sequence(text: str, sender: Sender) -> str:
    """The example sequence's ``text`` made safe: disabled, and sent by ``sender``."""
    if len(_ENABLED_LINE.findall(text)) != 1 or len(_SENDER_BLOCK.findall(text)) != 1:
        raise RuntimeError(f"the example {EXAMPLE_SEQUENCE} lost its enabled: or sender: lines")
    text = _ENABLED_LINE.sub(
        "enabled: false             # an example: set true to enroll subscribers and send", text
    )
    email = _quoted(sender.email)
    block = f"sender:\n  name: {_quoted(sender.name)}\n  email: {email}\n  reply_to: {email}\n"
    text = _SENDER_BLOCK.sub(lambda _: block, text)
    first, newline, rest = text.partition("\n")
    if first.startswith("# yaml-language-server:"):  # editors look for it on the first line
        return f"{first}{newline}{_BANNER}{rest}"
    return _BANNER + text


def settings_text(choices: ProjectChoices, secret_key: str) -> str:
    """The ``nurture.toml`` of a new folder."""
    return (
        "# nurture configuration. Any key can be overridden in the environment as\n"
        "# NURTURE_<KEY> (for example NURTURE_TRANSPORT=sendgrid). See the README.\n"
        'database_url = "sqlite:///nurture.db"\n'
        'transport = "outbox"          # outbox | sendgrid | smtp\n'
        'outbox_dir = "outbox"\n'
        "# The public address of `nurture run`, for the links in every email. Sending\n"
        "# through a real provider needs https:// (never localhost); the outbox does not.\n"
        f"base_url = {_quoted(choices.base_url)}\n"
        f'secret_key = "{secret_key}"   # signs unsubscribe links; keep it secret\n'
        "# Shown in every footer: the law (CAN-SPAM, the EU) wants your real postal address.\n"
        f"postal_address = {_quoted(choices.postal_address)}\n"
        "# An inbox that takes unsubscribe requests by email (a mailto: in List-Unsubscribe):\n"
        '# unsubscribe_mailbox = "unsubscribe@your-domain.com"\n'
        "\n"
        "# Your brand at the top of every email: a logo (https:// only), else the name;\n"
        "# the colour is the bar above it, the buttons and the links. A sequence file's\n"
        "# own brand: keys win over these (the example sets its name and colour).\n"
        "# Keep this table last: keys below [brand] belong to it.\n"
        "# [brand]\n"
        '# name = "Your Company"\n'
        '# colour = "#0b57d0"\n'
        '# logo_url = "https://www.your-domain.com/logo.png"\n'
        "# logo_width = 160\n"
        "# logo_height = 40\n"
    )


def write_project(target: Path, source: Path, choices: ProjectChoices, secret_key: str) -> None:
    """Write a working folder at ``target`` from the example content at ``source``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("sequences", "templates", "schemas"):
        shutil.copytree(source / name, target / name, dirs_exist_ok=True)
    example = target / EXAMPLE_SEQUENCE
    example.write_text(
        starter_sequence(example.read_text(encoding="utf-8"), choices.sender), encoding="utf-8"
    )
    (target / CONFIG_FILE).write_text(settings_text(choices, secret_key), encoding="utf-8")
