"""Checking a sequence's emails before they are sent: ``nurture validate``.

Every step is rendered for every sample subscriber in every locale the
templates offer; the footer, every link and the offer link are checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from markupsafe import escape

from nurture.core.model import Sequence
from nurture.core.rendering.links import Links, footer_problem, hrefs, link_problem, offer_url
from nurture.core.rendering.message import RenderedEmail
from nurture.core.rendering.templates import KeyPath, RenderFailure, RenderPlan, TemplateLibrary
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic

Positions = Mapping[KeyPath, tuple[int, int]] | Callable[[KeyPath], tuple[int, int]]


def check(
    library: TemplateLibrary,
    sequence: Sequence,
    subscribers: list[Subscriber],
    links: Links,
    postal_address: str,
    sequence_file: str,
    *,
    positions: Positions | None = None,
) -> list[Diagnostic]:
    """Render every step for every sample subscriber in every locale; list the problems.

    ``positions`` maps a key path such as ``("steps", 2, "template")`` to its
    (line, column) in ``sequence_file``; ``LoadedSequence.positions.of`` fits.
    Without samples, one made-up subscriber is used.
    """

    def at(key: KeyPath) -> tuple[int, int]:
        if positions is None:
            return 1, 1
        if isinstance(positions, Mapping):  # the deepest key it knows
            for end in range(len(key), 0, -1):
                if key[:end] in positions:
                    return positions[key[:end]]
            return 1, 1
        return positions(key)

    found: dict[Diagnostic, None] = {}  # ordered, without repeats
    samples = subscribers or [Subscriber(email="sample@example.com", name="Sam Sample")]
    locales = library.locales_for(sequence)
    for index, step in enumerate(sequence.steps):
        try:
            library.plan(step.template, None, sequence.locale)
        except RenderFailure as failure:
            key = ("steps", index, "template")
            found[Diagnostic(sequence_file, *at(key), failure.diagnostic.message)] = None
            continue
        offer_link = None
        if step.offer is not None:
            offer_link = offer_url(step.offer.checkout_url, campaign=sequence.id, content=step.id)
        for locale in locales:
            for sample in samples:
                try:
                    email, plan = library.render_with_plan(
                        sequence,
                        step,
                        replace(sample, locale=locale),
                        links,
                        postal_address,
                        check_footer=False,
                    )
                except RenderFailure as failure:
                    problem = failure.diagnostic
                    if failure.key is not None:
                        problem = Diagnostic(sequence_file, *at(failure.key), problem.message)
                    found[problem] = None
                    continue
                for problem in _email_problems(
                    library, plan, email, links, postal_address, offer_link
                ):
                    found[problem] = None
    return list(found)


def _email_problems(
    library: TemplateLibrary,
    plan: RenderPlan,
    email: RenderedEmail,
    links: Links,
    postal_address: str,
    offer_link: str | None,
) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    missing = footer_problem(email.html, links, postal_address)
    if missing:
        problems.append(Diagnostic(plan.source, 1, 1, missing))
    targets = hrefs(email.html)
    for href in targets:
        problem = link_problem(href, links)
        if problem:
            file, line = library.locate(plan, (href, str(escape(href))))
            problems.append(Diagnostic(file, line, 1, problem))
    if offer_link is not None and offer_link not in targets:
        message = (
            "the offer email does not link to the offer: link to {{ offer.url }} "
            "(the checkout address with tracking added)"
        )
        problems.append(Diagnostic(plan.source, 1, 1, message))
    return problems
