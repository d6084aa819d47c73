"""A sequence started by an app event (``trigger: {event: trial_started}``):
``validate`` renders it over samples that declare the event's properties, and
``simulate`` follows a sample whose ``trigger.properties`` decide a ``when``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_cli_engine import run

SAMPLES = """- name: Pro Person
  locale: en
  trigger: {event: trial_started, properties: {plan: pro}}
"""
BASIC = """name: Basic Person
locale: en
trigger: {event: trial_started, properties: {plan: basic}}
"""
TEMPLATE = "Hi,\n\nYour {{ trigger.properties.plan }} trial has started.\n"


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    folder = tmp_path / "work"
    text = (folder / "sequences" / "sales-process.yaml").read_text("utf-8")
    text = text.replace("id: sales-process", "id: trial", 1)
    text = re.sub(r"  event: subscribed\n  tags: \[b2b\]", "  event: trial_started", text, count=1)
    text = text.replace("    template: welcome.md", "    template: trial-welcome.md", 1)
    text = text.replace(
        "  - id: three-models\n",
        '  - id: three-models\n    when: trigger.properties.plan == "pro"\n',
    )
    assert "trial_started" in text and "trigger.properties.plan" in text
    (folder / "sequences" / "trial.yaml").write_text(text, "utf-8")
    for locale in ("en", "sv"):
        (folder / "templates" / locale / "trial-welcome.md").write_text(TEMPLATE, "utf-8")
    return folder


def test_validate_needs_samples_that_declare_the_event(work: Path, db_url: str) -> None:
    without = run("validate", cwd=work, db_url=db_url)
    assert without.returncode == 1
    assert "trigger.properties has no field 'plan'" in without.stdout + without.stderr

    (work / "sequences" / "trial.sample.yaml").write_text(SAMPLES, "utf-8")
    checked = run("validate", cwd=work, db_url=db_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_simulate_follows_the_event_properties(work: Path, db_url: str) -> None:
    (work / "sequences" / "trial.sample.yaml").write_text(SAMPLES, "utf-8")
    pro = run("simulate", "trial", "--start", "2026-12-01T09:00", cwd=work, db_url=db_url)
    assert pro.returncode == 0, pro.stderr
    assert re.search(r"three-models .*\bsend\b", pro.stdout), pro.stdout

    (work / "basic.yaml").write_text(BASIC, "utf-8")
    basic = run(
        "simulate", "trial", "--data", "basic.yaml", "--start", "2026-12-01T09:00",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert basic.returncode == 0, basic.stderr
    assert "condition 'trigger.properties.plan == \"pro\"' is false" in basic.stdout, basic.stdout
