"""``nurture stats``'s table fits an 80-column terminal without cutting a
step id or a header short: at 80 columns it printed ``three-m…``,
``deliver…`` and ``conver…`` before. Each count has its rate on the line
below; the ``unknown`` column is there only when some outcome is unknown."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console

from nurture.admin.funnels import SequenceFunnel, StepFunnel
from nurture.cli.stats import funnel_table

STEP_IDS = ("welcome", "three-models", "choosing", "case-study-from-norrland", "offer")


def rendered(funnel: SequenceFunnel, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(funnel_table(funnel, width))
    return console.export_text().splitlines()


def funnel(*, unknown: int = 0) -> SequenceFunnel:
    steps = [
        StepFunnel(step, True, sent=12_345, delivered=12_001, opened=3_100, clicked=45)
        for step in STEP_IDS
    ]
    steps[2] = StepFunnel(
        "choosing",
        True,
        sent=6,
        unknown=unknown,
        conversions=1,
        revenue={"SEK": Decimal("4900"), "EUR": Decimal("120.5")},
    )
    return SequenceFunnel("sales-process", "Säljprocessen i fem mejl", "v1", steps)


def test_the_table_fits_80_columns_with_every_step_and_header_whole() -> None:
    lines = rendered(funnel())
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), text
    assert "…" not in text
    for word in (*STEP_IDS, "sent", "delivered", "opened", "clicked", "converted", "revenue"):
        assert word in text
    assert "unknown" not in text  # none unknown: no column for it
    # The rate sits under its count: 12,001 of 12,345 delivered is 97.2%.
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("welcome"))
    assert "12001" in lines[row] and "97.2%" in lines[row + 1]
    assert "revenue: 120.50 EUR, 4900.00 SEK" in text or "revenue: 4900.00 SEK, 120.50 EUR" in text


def test_unknown_outcomes_get_their_column() -> None:
    lines = rendered(funnel(unknown=2))
    header = next(line for line in lines if "step" in line and "sent" in line)
    assert header.split() == [
        "step", "sent", "unknown", "delivered", "opened", "clicked", "converted"
    ]  # fmt: skip
    choosing = next(line for line in lines if line.strip().startswith("choosing"))
    assert choosing.split()[:3] == ["choosing", "6", "2"]
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines) and "…" not in text, text
    # Too wide for 80 columns otherwise: the longest step id folds, whole.
    folded = next(i for i, line in enumerate(lines) if "case-study" in line)
    assert (lines[folded].split()[0] + lines[folded + 1].split()[0]).startswith(
        "case-study-from-norrland"
    ), text
    # No room left for a revenue column: the caption names it per step.
    assert "(choosing 4900.00 SEK, 120.50 EUR)" in " ".join(text.split())

    wide = rendered(funnel(unknown=2), width=120)
    assert next(line for line in wide if "unknown" in line).split()[-1] == "revenue"
