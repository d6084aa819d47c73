"""The core's side of app-event triggers: the trigger's event name, and
``trigger.properties`` in ``when`` conditions and the decision function."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from nurture.core.conditions import Engagement, compile_condition, name_problems
from nurture.core.loader import load_sequence_file
from nurture.core.model import Trigger
from nurture.core.simulation import simulate
from nurture.core.subscriber import Subscriber

ROOT = Path(__file__).resolve().parents[2]


def test_a_trigger_names_subscribed_or_an_app_event() -> None:
    assert Trigger().on_subscribe
    trial = Trigger.model_validate({"event": "trial_started"})
    assert trial.event == "trial_started" and not trial.on_subscribe
    for bad in ("Trial Started", "", "1st", "x" * 101):
        with pytest.raises(ValidationError):
            Trigger.model_validate({"event": bad})


def test_conditions_read_trigger_properties() -> None:
    condition = compile_condition('trigger.properties.plan == "pro"')
    assert name_problems('trigger.properties.plan == "pro"') == []
    person = Subscriber(email="a@example.com", trigger_properties={"plan": "pro"})
    context = person.template_context("en", "UTC")
    assert condition.evaluate(context, Engagement(), person.trigger_context())
    other = replace(person, trigger_properties={"plan": "basic"})
    assert not condition.evaluate(context, Engagement(), other.trigger_context())


def test_the_decision_skips_a_step_whose_when_reads_the_trigger() -> None:
    loaded, _ = load_sequence_file(ROOT / "sequences" / "sales-process.yaml")
    assert loaded is not None
    steps = list(loaded.sequence.steps)
    steps[1] = steps[1].model_copy(update={"when": 'trigger.properties.plan == "pro"'})
    sequence = loaded.sequence.model_copy(update={"steps": steps})
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    pro = Subscriber(email="a@example.com", trigger_properties={"plan": "pro"})
    basic = replace(pro, trigger_properties={"plan": "basic"})
    [pro_step] = [e for e in simulate(sequence, pro, start) if e.step == steps[1].id]
    [basic_step] = [e for e in simulate(sequence, basic, start) if e.step == steps[1].id]
    assert pro_step.action == "send"
    assert basic_step.action == "skip"
