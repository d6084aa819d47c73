"""Languages a sequence is written in that its emails would not fully speak:
``validate`` warns about them.

* **Footer texts.** The footer of every email (why it came, unsubscribe, email
  preferences) is in the words nurture ships for its language
  (:data:`nurture.core.rendering.context.FOOTER_STRINGS`). An email in a
  language without them gets the sequence's language's, else English: one
  warning per language, where a sequence file first uses it, saying how to
  write that footer in the language's own layout. A layout that writes its
  footer itself (no ``t``) needs none.
* **A subject without its template.** A subscriber gets the email of their
  language only when the step's template is in their folder; otherwise they
  get the email of the sequence's locale, subject and preheader included. A
  step whose subject (or preheader) has a text for a language whose folder
  lacks the template meant otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nurture.core.loader import LoadedSequence
from nurture.core.places import check_locale
from nurture.core.rendering import TemplateLibrary, footer_language
from nurture.core.rendering.context import FOOTER_LANGUAGE_NAMES
from nurture.errors import Diagnostic

FOOTER_VARIABLES = "{{ t.reason }}, {{ t.unsubscribe }} and {{ t.preferences }}"


def locale_warnings(
    library: TemplateLibrary, sequences: Iterable[LoadedSequence]
) -> list[Diagnostic]:
    """Languages without footer texts (once each) and subjects in a language
    whose template is missing, at their place in the sequence files."""
    found: list[Diagnostic] = []
    warned: set[str] = set()  # languages already named: one warning each
    for loaded in sequences:
        found.extend(_subjects_without_template(library, loaded))
        found.extend(_footers_in_english(library, loaded, warned))
    return found


def _footers_in_english(
    library: TemplateLibrary, loaded: LoadedSequence, warned: set[str]
) -> list[Diagnostic]:
    sequence = loaded.sequence
    fallback = footer_language(sequence.locale) or "en"
    fallback_name = FOOTER_LANGUAGE_NAMES.get(fallback.split("-")[0], fallback)
    found = []
    for locale in library.locales_for(sequence):
        language = locale.replace("_", "-").split("-")[0].lower()
        if language in warned or footer_language(locale) is not None:
            continue
        layout = library.footer_layout(locale, sequence.locale)
        if layout is None:  # its layout writes the footer itself
            continue
        warned.add(language)
        target = library.templates_dir / language / "layout.html"
        if layout == target:
            how = f"write the footer of {_shown(target)} in {language}"
        else:
            how = (
                f"copy {_shown(layout)} to {_shown(target)} and write the footer in "
                f"{language} there"
            )
        message = (
            f"no footer texts in {language!r} (emails in {language} get the {fallback_name} "
            f"footer): {how}, in place of {FOOTER_VARIABLES}"
        )
        line, column = _first_use(library, loaded, locale)
        found.append(Diagnostic(loaded.display, line, column, message))
    return found


def _first_use(library: TemplateLibrary, loaded: LoadedSequence, locale: str) -> tuple[int, int]:
    """Where the sequence file first writes for ``locale``: a subject or
    preheader in it, or a step whose template is in its folder; its own
    ``locale`` when it is the sequence's."""
    sequence = loaded.sequence
    if _same(locale, sequence.locale):
        return loaded.positions.value_of(("locale",))
    for index, step in enumerate(sequence.steps):
        for field in ("subject", "preheader"):
            value = getattr(step, field)
            if isinstance(value, dict):
                key = next((k for k in value if _same(k, locale)), None)
                if key is not None:
                    return loaded.positions.of(("steps", index, field, key))
        if library.own_template(step.template, locale) == library.templates_dir.joinpath(
            locale, *step.template.split("/")
        ):
            return loaded.positions.value_of(("steps", index, "template"))
    return loaded.positions.value_of(("locale",))


def _subjects_without_template(
    library: TemplateLibrary, loaded: LoadedSequence
) -> list[Diagnostic]:
    sequence = loaded.sequence
    found = []
    for index, step in enumerate(sequence.steps):
        named: set[str] = set()
        for field in ("subject", "preheader"):
            value = getattr(step, field)
            if not isinstance(value, dict):
                continue
            for key in value:
                if key in named or _same(key, sequence.locale) or not _is_locale(key):
                    continue
                named.add(key)
                if library.own_template(step.template, key) is not None:
                    continue
                if library.find(step.template, key, sequence.locale) is None:
                    continue  # found nowhere: an error of its own
                missing = _shown(library.templates_dir.joinpath(key, *step.template.split("/")))
                message = (
                    f"step {step.id!r} has {_article(key)} {key!r} {field} but no {missing}: "
                    f"{key} subscribers get the {sequence.locale} email"
                )
                found.append(loaded.diagnostic(("steps", index, field, key), message))
    return found


def _same(one: str, other: str) -> bool:
    return one.replace("_", "-").lower() == other.replace("_", "-").lower()


def _is_locale(text: str) -> bool:
    try:
        check_locale(text)
    except ValueError:
        return False
    return True


def _article(tag: str) -> str:
    """``an 'en'``, ``a 'de'``: as the first letter's name is said."""
    return "an" if tag[:1].lower() in "aefhilmnorsx" else "a"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder, as validate shows template paths."""
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else str(path)
    except ValueError:  # outside it: the whole path
        return str(path)
