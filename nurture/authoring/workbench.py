"""The marketer's commands as functions: validate, find, preview (no database)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from nurture.app.settings import Settings
from nurture.authoring.checks import example_values
from nurture.authoring.locales import locale_warnings
from nurture.core.conditions import ConditionError, Engagement, compile_condition
from nurture.core.loader import (
    BrokenFile,
    LoadedSequence,
    Sequences,
    load_sequence_file,
    load_sequences,
    sequence_files,
)
from nurture.core.places import check_locale, timezone_warning
from nurture.core.rendering import SPARSE_SUBSCRIBER, TemplateLibrary, check, sparse_warnings
from nurture.core.rendering.compiled import RenderFailure
from nurture.core.samples import samples_for
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic, NurtureError, SequenceError
from nurture.sending.composer import Composer, build_links

SAMPLE_KEY = "preview"


@dataclass
class ValidationResult:
    files: int = 0
    # The valid sequences; ``sequences.broken`` lists the files that are not.
    sequences: Sequences = field(default_factory=Sequences)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Likely mistakes that do not stop a sequence from running.
    warnings: list[Diagnostic] = field(default_factory=list)


def condition_problems(loaded: LoadedSequence, samples: list[Subscriber]) -> list[Diagnostic]:
    """Evaluate every ``when`` for every sample subscriber, with no engagement and
    with everything earlier opened, clicked and converted; a condition that
    fails (a missing attribute, a budget exceeded) is a diagnostic at its line."""
    sequence = loaded.sequence
    problems: dict[Diagnostic, None] = {}
    earlier: list[str] = []
    for index, step in enumerate(sequence.steps):
        if step.when is not None:
            try:
                condition = compile_condition(step.when)
            except ConditionError:
                continue  # already reported by the loader
            engaged = Engagement(frozenset(earlier), frozenset(earlier), converted=True)
            for sample in samples:
                context = sample.template_context(sequence.locale, sequence.timezone)
                for engagement in (Engagement(), engaged):
                    try:
                        condition.evaluate(context, engagement, sample.trigger_context())
                    except ConditionError as exc:
                        message = f"when of step {step.id!r} fails for {sample.email}: {exc}"
                        where = ("steps", index, "when")
                        line, column = (
                            loaded.positions.value_of(where)
                            if exc.offset is None
                            else loaded.positions.within(where, step.when, exc.offset)
                        )
                        problem = Diagnostic(loaded.display, line, column, message)
                        problems[problem] = None
                        break
        earlier.append(step.id)
    return list(problems)


def validate_loaded(
    settings: Settings, library: TemplateLibrary, loaded: LoadedSequence
) -> list[Diagnostic]:
    """Evaluate every condition and render every step in every locale against
    the sample subscribers."""
    try:
        samples = samples_for(loaded.sequence, loaded.path)
    except SequenceError as exc:
        return exc.diagnostics
    problems: list[Diagnostic] = condition_problems(loaded, samples)
    for sample in samples:
        links = build_links(
            settings.base_url,
            settings.secret_key,
            sample.email,
            loaded.sequence.id,
            now=datetime.now(UTC),  # only the links' shape is checked, not their age
        )
        problems.extend(
            check(
                library,
                loaded.sequence,
                [sample],
                links,
                settings.postal_address,
                loaded.display,
                positions=loaded.positions.of,
            )
        )
    return list(dict.fromkeys(_relative(problem) for problem in problems))


def timezone_warnings(loaded: LoadedSequence) -> list[Diagnostic]:
    """A time zone that is valid but probably not meant (``EST``: a fixed offset)."""
    warning = timezone_warning(loaded.sequence.timezone)
    return [] if warning is None else [loaded.value_diagnostic(("timezone",), warning)]


def sparse_sample_warnings(
    settings: Settings, library: TemplateLibrary, loaded: LoadedSequence
) -> list[Diagnostic]:
    """Values that render empty (``Hi ,``) for a subscriber who gave only an
    email address, in subjects, preheaders and first lines."""
    links = build_links(
        settings.base_url,
        settings.secret_key,
        SPARSE_SUBSCRIBER.email,
        loaded.sequence.id,
        now=datetime.now(UTC),  # only the links' shape matters here
    )
    found = sparse_warnings(
        library,
        loaded.sequence,
        links,
        settings.postal_address,
        loaded.display,
        positions=loaded.positions.of,
    )
    return list(dict.fromkeys(_relative(problem) for problem in found))


def _relative(problem: Diagnostic) -> Diagnostic:
    """Show template paths relative to the working folder, like sequence paths."""
    path = Path(problem.file)
    if not path.is_absolute():
        return problem
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        return problem
    return Diagnostic(str(shown), problem.line, problem.column, problem.message)


def validate_paths(settings: Settings, paths: list[Path]) -> ValidationResult:
    """Everything ``nurture validate`` checks, as data."""
    result = ValidationResult(files=len(sequence_files(paths)))
    loaded, diagnostics = load_sequences(paths)
    result.diagnostics.extend(diagnostics)
    library = TemplateLibrary(settings.templates_dir, brand=settings.brand)
    broken = list(loaded.broken)
    for seq_id, item in loaded.items():
        problems = validate_loaded(settings, library, item)
        result.diagnostics.extend(problems)
        result.warnings.extend(timezone_warnings(item))
        if not problems:  # a template that fails for everyone is already reported
            result.warnings.extend(sparse_sample_warnings(settings, library, item))
        if not problems:
            result.sequences[seq_id] = item
        else:
            broken.append(BrokenFile(item.path, item.display, seq_id))
    result.sequences.broken = tuple(broken)
    result.warnings.extend(locale_warnings(library, result.sequences.values()))
    result.warnings.extend(example_values(settings, result.sequences.values()))
    # Sequences that share a template or a layout share its problems: each is
    # reported once, where it is written.
    result.diagnostics = list(dict.fromkeys(result.diagnostics))
    result.warnings = list(dict.fromkeys(result.warnings))
    return result


def find_sequence(settings: Settings, folder: Path, name: str) -> LoadedSequence:
    """A sequence by id (in the sequences folder) or by file path."""
    candidate = folder / name
    # is_symlink: a link that cannot be followed (a loop) is reported as such,
    # not looked up as a sequence id.
    try:
        named = candidate.is_file() or candidate.is_symlink()
    except OSError:  # a name no file system can hold (too long): not a file
        named = False
    if candidate.suffix in (".yaml", ".yml") and named:
        item, problems = load_sequence_file(candidate)
    else:
        loaded, problems = load_sequences([settings.sequences_dir])
        item = loaded.get(name)
        if item is None and not problems:
            known = ", ".join(sorted(loaded)) or "none"
            raise NurtureError(f"no sequence {name!r} in {settings.sequences_dir} (known: {known})")
        if item is not None:
            # Its own file's problems, and any other file that uses its id:
            # which of the two the marketer meant is not for us to guess.
            mine = {item.display, *loaded.duplicates.get(name, ())}
            problems = [p for p in problems if p.file in mine]
    if item is None or problems:
        raise SequenceError(problems or [Diagnostic(name, 1, 1, "not found")])
    return item


def preview_sequence(
    settings: Settings,
    loaded: LoadedSequence,
    out_dir: Path,
    *,
    step_id: str | None = None,
    locale: str | None = None,
    subscriber: Subscriber | None = None,
    now: datetime | None = None,
    library: TemplateLibrary | None = None,
) -> list[Path]:
    """Write ``<step>.html``, ``.txt`` and ``.eml`` per step; return the paths.
    ``library``: templates already compiled (by :func:`preview_locales`, for
    each of its languages), else the project's, compiled here."""
    sequence = loaded.sequence
    steps = sequence.steps
    if step_id is not None:
        steps = [s for s in steps if s.id == step_id]
        if not steps:
            known = ", ".join(s.id for s in sequence.steps)
            raise NurtureError(f"no step {step_id!r} in {sequence.id} (steps: {known})")
    person = subscriber or samples_for(sequence, loaded.path)[0]
    if locale is not None:
        person = replace(person, locale=locale)
    # The locale names the output files: checked here whatever the caller did,
    # so no value ("../../x") can put a file outside ``out_dir``.
    try:
        shown_locale = check_locale(person.locale or sequence.locale)
    except ValueError as exc:
        raise NurtureError(f"preview of {sequence.id}: {exc}") from exc
    person = replace(person, locale=shown_locale)
    templates = library or TemplateLibrary(settings.templates_dir, brand=settings.brand)
    composer = Composer(
        lambda: templates,
        base_url=settings.base_url,
        secret_key=settings.secret_key,
        postal_address=settings.postal_address,
        unsubscribe_mailbox=settings.unsubscribe_mailbox,
    )
    target = out_dir / sequence.id
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    moment = now or datetime.now(UTC)
    for step in steps:
        try:
            composed = composer(loaded, step, person, SAMPLE_KEY, moment)
            message = composed.message
        except RenderFailure as failure:
            if failure.key is None:  # a template's own file and line
                raise
            # A key of the sequence file (a subject, a missing template):
            # where it is written, as validate says it.
            line, column = loaded.positions.of(failure.key)
            where = Diagnostic(loaded.display, line, column, failure.diagnostic.message)
            raise SequenceError([_relative(where)]) from None
        html_part = message.get_body(("html",))
        text_part = message.get_body(("plain",))
        assert html_part is not None and text_part is not None
        stem = target / f"{step.id}.{shown_locale}"
        for suffix, content in (
            (".html", html_part.get_content()),
            (".txt", text_part.get_content()),
        ):
            path = stem.with_name(stem.name + suffix)
            path.write_text(content, encoding="utf-8")
            written.append(path)
        eml = stem.with_name(stem.name + ".eml")
        # The bytes the outbox writes (and a provider gets), not a re-encoding.
        eml.write_bytes(composed.raw_utf8 if composed.needs_smtputf8 else composed.raw)
        written.append(eml)
    return written


def preview_locales(
    settings: Settings,
    loaded: LoadedSequence,
    out_dir: Path,
    *,
    step_id: str | None = None,
    now: datetime | None = None,
) -> list[Path]:
    """:func:`preview_sequence` in every language the sequence is written in (its
    locale, then each locale folder holding its templates), each for the first
    sample subscriber in that language (else the first one, in it)."""
    library = TemplateLibrary(settings.templates_dir, brand=settings.brand)
    samples = samples_for(loaded.sequence, loaded.path)
    written: list[Path] = []
    for locale in library.locales_for(loaded.sequence):
        person = next(
            (s for s in samples if (s.locale or loaded.sequence.locale).lower() == locale.lower()),
            samples[0],
        )
        written += preview_sequence(
            settings,
            loaded,
            out_dir,
            step_id=step_id,
            locale=locale,
            subscriber=person,
            now=now,
            library=library,
        )
    return written


def locale_fallback(settings: Settings, loaded: LoadedSequence, locale: str) -> str | None:
    """The locale whose emails a subscriber in ``locale`` gets when no template
    of the sequence is written in it (or a language of it), else None."""
    library = TemplateLibrary(settings.templates_dir, brand=settings.brand)
    sequence = loaded.sequence
    if any(library.own_template(step.template, locale) for step in sequence.steps):
        return None
    return sequence.locale
