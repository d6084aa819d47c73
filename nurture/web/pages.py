"""The pages subscribers see: templates, their language, and CSRF tokens.

* **Templates** are Jinja2 files with autoescaping on (subscriber data is
  always escaped). The working folder's ``templates/web/`` comes first, so a
  project overrides any page by dropping a file of the same name there; the
  shipped ones are in ``nurture/web/templates/``.
* **Language.** Every page speaks the subscriber's locale when nurture knows
  it, else the browser's (``Accept-Language``), else English. The words come
  from ``messages.<lang>.json`` (English, Swedish, Danish, Dutch, Finnish,
  French, German, Italian, Norwegian Bokmål, Polish, Portuguese and Spanish
  shipped); a project's ``templates/web/messages.<lang>.json`` overrides them
  key by key, or adds a language. A catalog is a language (a regional tag
  such as ``de-AT`` or ``pt-BR`` uses its language's), and ``no`` is Bokmål,
  ``nb``, as for the email footers.
* **CSRF.** State-changing HTML forms carry a signed token bound to what the
  form acts on (purpose :data:`nurture.core.tokens.API_CSRF`); it expires
  after :data:`CSRF_MAX_AGE`. The RFC 8058 one-click POST is the exception: it
  must work without a session or a page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from nurture.core import tokens
from nurture.core.rendering.context import FOOTER_ALIASES

__all__ = ["CSRF_MAX_AGE", "DEFAULT_LANGUAGE", "Pages"]

DEFAULT_LANGUAGE = "en"
CSRF_MAX_AGE = timedelta(hours=2)


def _language(tag: str) -> str:
    language = tag.strip().replace("_", "-").split("-")[0].lower()
    return FOOTER_ALIASES.get(language, language)


class Pages:
    """Renders the subscriber-facing pages of one working folder."""

    def __init__(self, templates_dir: Path | None, keys: Sequence[str]) -> None:
        self._override = templates_dir / "web" if templates_dir is not None else None
        self._keys = list(keys)
        loaders: list[Any] = []
        if self._override is not None:
            loaders.append(FileSystemLoader(str(self._override)))
        loaders.append(PackageLoader("nurture.web", "templates"))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # ------------------------------------------------------------------ language

    @cached_property
    def catalogs(self) -> dict[str, dict[str, str]]:
        """The words of every language: the shipped ones, overridden key by key."""
        found: dict[str, dict[str, str]] = {}
        shipped = resources.files("nurture.web") / "templates"
        for entry in shipped.iterdir():
            _merge_catalog(found, entry.name, entry.read_text(encoding="utf-8"))
        if self._override is not None and self._override.is_dir():
            for path in sorted(self._override.glob("messages.*.json")):
                _merge_catalog(found, path.name, path.read_text(encoding="utf-8"))
        return found

    def language(self, *preferred: str | None, accept_language: str | None = None) -> str:
        """The first of ``preferred`` (a subscriber's locale, a form's) that has
        a catalog, else the browser's best, else English."""
        for tag in preferred:
            if tag and _language(tag) in self.catalogs:
                return _language(tag)
        for tag in _accepted(accept_language or ""):
            if tag in self.catalogs:
                return tag
        return DEFAULT_LANGUAGE

    def words(self, language: str) -> dict[str, str]:
        """The catalog of ``language``, with English for any key it lacks."""
        base = dict(self.catalogs.get(DEFAULT_LANGUAGE, {}))
        base.update(self.catalogs.get(language, {}))
        return base

    # ------------------------------------------------------------------ rendering

    def render(
        self,
        template: str,
        /,
        *,
        language: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """``template`` rendered in ``language``; the words are ``t`` in it."""
        html = self.env.get_template(template).render(
            lang=language, t=self.words(language), **context
        )
        response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
        response.headers["Cache-Control"] = "no-store"
        return response

    # ------------------------------------------------------------------ CSRF

    def csrf_token(self, scope: str, *, now: datetime) -> str:
        """A token for a form that acts on ``scope`` (e.g. ``prefs:<subscriber id>``)."""
        return tokens.sign(self._keys, tokens.API_CSRF, {"s": scope}, now=now)

    def csrf_ok(self, scope: str, token: str | None, *, now: datetime) -> bool:
        """Whether ``token`` was made for ``scope`` by us within :data:`CSRF_MAX_AGE`."""
        if not token:
            return False
        payload = tokens.verify(self._keys, tokens.API_CSRF, token, now=now, max_age=CSRF_MAX_AGE)
        return payload is not None and payload.get("s") == scope


def _merge_catalog(found: dict[str, dict[str, str]], filename: str, text: str) -> None:
    parts = filename.split(".")
    if len(parts) != 3 or parts[0] != "messages" or parts[2] != "json":
        return
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{filename}: expected a JSON object of words")
    found.setdefault(_language(parts[1]), {}).update({str(k): str(v) for k, v in data.items()})


def _accepted(header: str) -> list[str]:
    """The languages of an ``Accept-Language`` header, best first."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        pieces = part.strip().split(";")
        tag = _language(pieces[0])
        if not tag or tag == "*":
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(ranked)]
