"""``nurture simulate --event`` through the real executable: an event on a
step the sequence does not have (a typo) is refused with "did you mean"; an
open or click before the step is sent (or on a step never sent) is simulated
as written, with a warning that says when the step goes out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_cli_authoring import run

START = "2026-11-27T15:30"  # Friday; 'three-models' goes out Mon 2026-11-30 09:30 CET


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("simulate")
    assert run("init", "work", cwd=base).returncode == 0
    return base / "work"


def simulate(work: Path, *events: str, data: Path | None = None) -> tuple[int, str, str]:
    args = ["simulate", "sales-process", "--start", START, "--tz", "Europe/Stockholm", "--json"]
    for event in events:
        args += ["--event", event]
    if data is not None:
        args += ["--data", str(data)]
    result = run(*args, cwd=work)
    return result.returncode, result.stdout, result.stderr


def test_an_event_on_a_misspelt_step_is_refused_with_the_nearest_step(work: Path) -> None:
    code, stdout, stderr = simulate(work, "clicked thre-models at 2026-12-01T10:00")
    assert code == 1, stderr
    assert stdout == ""
    assert "--event 'clicked thre-models at 2026-12-01T10:00'" in stderr
    assert "sales-process has no step 'thre-models'" in stderr
    assert "did you mean 'three-models'?" in stderr


def test_an_event_on_an_unknown_step_lists_the_steps(work: Path) -> None:
    code, _, stderr = simulate(work, "opened newsletter at 2026-12-01T10:00")
    assert code == 1
    assert "no step 'newsletter'" in stderr
    assert "welcome, three-models, choosing, case-study, offer" in stderr


def test_a_click_before_the_step_is_sent_warns_when_it_is_sent(work: Path) -> None:
    code, stdout, stderr = simulate(work, "clicked three-models at 2026-11-28T10:00")
    assert code == 0, stderr
    assert '"step": "three-models"' in stdout  # the timeline is still printed
    assert "warning: --event 'clicked three-models at 2026-11-28T10:00'" in stderr
    assert "'three-models' is sent on Mon 2026-11-30 09:30 CET" in stderr
    assert "clicked on Sat 2026-11-28 10:00 CET" in stderr


def test_an_open_on_a_skipped_step_is_a_warning(work: Path, tmp_path: Path) -> None:
    customer = tmp_path / "customer.yaml"
    customer.write_text(
        "email: ola@example.com\nname: Ola Berg\ntags: [b2b, customer]\n", encoding="utf-8"
    )
    code, _, stderr = simulate(work, "opened case-study at 2026-12-08T10:00", data=customer)
    assert code == 0, stderr
    assert "'case-study' is not sent in this simulation (skipped on Mon 2026-12-07" in stderr


def test_an_event_after_the_send_is_quiet(work: Path) -> None:
    code, _, stderr = simulate(work, "clicked three-models at 2026-12-01T10:00")
    assert code == 0, stderr
    assert "warning" not in stderr
