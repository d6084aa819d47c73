"""The funnel drawn as a server-rendered SVG: one group of horizontal bars per
step (sent, delivered, opened, clicked, converted), each with a ``<title>``
and its number as text, so it reads without JavaScript or colour.

Only geometry is computed here; ``sequence.html`` writes the elements (the
template escapes every label).
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture.admin.funnels import SequenceFunnel

__all__ = ["Bar", "Chart", "funnel_chart"]

LABEL_WIDTH = 150
BAR_AREA = 420
BAR_HEIGHT = 14
GAP = 3
GROUP_GAP = 16
SERIES = (
    ("sent", "#1f4e8c"),
    ("delivered", "#2e7d32"),
    ("opened", "#6a1b9a"),
    ("clicked", "#e65100"),
    ("converted", "#b00020"),
)


@dataclass(frozen=True)
class Bar:
    y: int
    width: int
    colour: str
    series: str
    value: int
    title: str


@dataclass(frozen=True)
class Group:
    step_id: str
    y: int
    bars: list[Bar]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    label_width: int
    groups: list[Group]
    summary: str  # the aria-label: the whole chart in words


def funnel_chart(funnel: SequenceFunnel) -> Chart:
    most = max([step.sent for step in funnel.steps] + [1])
    groups: list[Group] = []
    y = 24
    words: list[str] = []
    for step in funnel.steps:
        values = {
            "sent": step.sent,
            "delivered": step.delivered,
            "opened": step.opened,
            "clicked": step.clicked,
            "converted": step.conversions,
        }
        bars = []
        for index, (series, colour) in enumerate(SERIES):
            value = values[series]
            width = round(BAR_AREA * min(value, most) / most)
            bars.append(
                Bar(
                    y + index * (BAR_HEIGHT + GAP),
                    max(width, 1 if value else 0),
                    colour,
                    series,
                    value,
                    f"{step.step_id}: {value} {series}",
                )
            )
        groups.append(Group(step.step_id, y, bars))
        words.append(
            f"{step.step_id}: {step.sent} sent, {step.delivered} delivered, "
            f"{step.opened} opened, {step.clicked} clicked, {step.conversions} converted"
        )
        y += len(SERIES) * (BAR_HEIGHT + GAP) + GROUP_GAP
    summary = f"Funnel of {funnel.sequence_id} per step. " + "; ".join(words)
    return Chart(LABEL_WIDTH + BAR_AREA + 140, max(y, 40), LABEL_WIDTH, groups, summary)
