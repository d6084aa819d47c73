"""Marketer files cannot hurt: templates stay in their folder, renders and
conditions have budgets, files have size caps. Every case must fail fast."""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from nurture.core.budget import CEILING, CPU_SHARE, Budget, BudgetExceeded, Limits, collector_pauses
from nurture.core.conditions import ConditionError, Engagement, compile_condition
from nurture.core.loader import MAX_SEQUENCE_BYTES, load_sequence_file, load_sequences
from nurture.core.rendering import Links, RenderedEmail, TemplateLibrary, check
from nurture.core.rendering.loader import MAX_TEMPLATE_BYTES
from nurture.core.subscriber import Subscriber
from nurture.errors import RenderError
from tests.factories import make_sequence

LAYOUT = Path(__file__).resolve().parents[2] / "templates" / "layout.html"
ADDRESS = "Exempel AB, Storgatan 1, 111 22 Stockholm"
LINKS = Links(
    unsubscribe_url="https://nurture.example.com/u/tok-1",
    preferences_url="https://nurture.example.com/p/tok-1",
)
OFFER_HTML = (
    '{% extends "layout.html" %}{% block content %}<a href="{{ offer.url }}">Buy</a>{% endblock %}'
)
ADA = Subscriber(email="ada@example.com", name="Ada Lovelace")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    (root / "en").mkdir(parents=True)
    shutil.copy(LAYOUT, root / "layout.html")
    (root / "en" / "welcome.md").write_text("Hi {{ subscriber.first_name }}\n", encoding="utf-8")
    (root / "en" / "offer.html").write_text(OFFER_HTML, encoding="utf-8")
    return root


def welcome(root: Path, body: str) -> None:
    (root / "en" / "welcome.md").write_text(body, encoding="utf-8")


def render(root: Path, *, limits: Limits | None = None, step: int = 0) -> RenderedEmail:
    seq = make_sequence()
    library = TemplateLibrary(root, limits=limits) if limits else TemplateLibrary(root)
    return library.render(seq, seq.steps[step], ADA, LINKS, ADDRESS)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.1f} s"


# -- templates stay inside templates/ -----------------------------------------


def test_a_link_out_of_the_folder_is_refused_naming_the_file(
    templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_SENDGRID_API_KEY", "SG.marker-secret")
    target = templates / "en" / "welcome.md"
    target.unlink()
    target.symlink_to("/proc/self/environ")
    with pytest.raises(RenderError) as caught:
        render(templates)
    message = str(caught.value)
    assert str(target) in message and "outside" in message
    assert "marker-secret" not in message


def test_a_link_to_a_secret_file_beside_the_folder_is_refused(templates: Path) -> None:
    secret = templates.parent / "secrets.txt"
    secret.write_text("SG.marker-secret", encoding="utf-8")
    (templates / "en" / "offer.txt").symlink_to(secret)  # the .txt sibling of a body
    with pytest.raises(RenderError, match=r"offer\.txt:1:1: refused"):
        render(templates, step=1)


def test_a_link_inside_the_folder_is_followed(templates: Path) -> None:
    shared = templates / "shared.md"
    shared.write_text("Shared hello {{ subscriber.first_name }}\n", encoding="utf-8")
    (templates / "en" / "welcome.md").unlink()
    (templates / "en" / "welcome.md").symlink_to(shared)
    assert "Shared hello Ada" in render(templates).html


def test_an_included_link_out_of_the_folder_is_refused(templates: Path) -> None:
    (templates / "en" / "partial.html").symlink_to("/etc/hostname")
    welcome(templates, 'Hi {% include "partial.html" %}\n')
    with pytest.raises(RenderError, match=r"partial\.html:1:1: refused"):
        render(templates)


@pytest.mark.parametrize("name", ["../nurture.toml", "en/../../secret", "../en/partial.html"])
def test_an_include_going_up_a_folder_says_so(templates: Path, name: str) -> None:
    (templates.parent / "nurture.toml").write_text("secret_key = 'x'\n", "utf-8")
    (templates / "en" / "partial.html").write_text("partial", "utf-8")
    welcome(templates, f'Hi {{% include "{name}" %}}\n')
    with pytest.raises(RenderError) as raised:
        render(templates)
    message = str(raised.value)
    assert f"template {name!r} goes up a folder with '..'" in message
    assert f"templates are named from {templates}" in message
    assert "secret_key" not in message


def test_a_template_too_large_is_refused(templates: Path) -> None:
    welcome(templates, "x" * (MAX_TEMPLATE_BYTES + 1))
    with pytest.raises(RenderError, match=r"welcome.md:1:1: file too large \(\d+ bytes > 524288\)"):
        render(templates)


# -- rendering budgets ----------------------------------------------------------

HOSTILE = {
    "nested ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "more than 250000 loop iterations",
    ),
    "nested loops over a string": (
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "loop iterations",
    ),
    "string times huge": ("{{ 'x' * 10**10 }}", "'*' would make a value"),
    "huge power": ("{{ 2 ** (10**9) }}", "bits"),
    "doubling through a namespace": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "'~' would make a value",
    ),
    "doubling through +": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "'+' would make a value",
    ),
    "doubling macro recursion": (
        "{% macro m(s) %}{{ m(s ~ s) }}{% endmacro %}{{ m('x') }}",
        "would make a value",
    ),
    "text piled up in a set block": (
        "{% set big %}{% for i in range(90000) %}" + "y" * 100 + "{% endfor %}{% endset %}",
        "output larger than",
    ),
    "center": ("{{ 'x'|center(10**9) }}", "center"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", "str.ljust"),
    "printf width": ("{{ '%0999999999d'|format(1) }}", "format width"),
    "printf operator": ("{{ '%0999999999d' % 1 }}", "format width"),
    "replace": ("{{ ('x' * 100000)|replace('x', 'y' * 100000) }}", "replace"),
    "join": ("{{ range(100000)|join('x' * 100000) }}", "join"),
    "lipsum": ("{{ lipsum(10**7) }}", "lipsum"),
    "sum of lists": ("{{ [[1]] * 1000|sum(start=[]) }}", "sum() adds numbers only"),
}


@pytest.mark.parametrize("body,reason", HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_template_is_stopped_fast_naming_it(
    templates: Path, body: str, reason: str
) -> None:
    welcome(templates, "Hello\n" + body + "\n")
    with within(3), pytest.raises(RenderError) as caught:
        render(templates)
    message = str(caught.value)
    assert "welcome.md" in message and "rendering stopped" in message, message
    assert reason in message


def test_a_slow_template_is_stopped_by_the_clock(templates: Path) -> None:
    # Few steps, each one slow: only the wall-clock deadline stops it.
    welcome(templates, "{% for i in range(100000) %}{{ range(20000)|sum }}{% endfor %}")
    limits = Limits(seconds=0.2, steps=10**9, output=10**9)
    with within(2), pytest.raises(RenderError, match=r"rendering stopped: took longer than 0.2 s"):
        render(templates, limits=limits)


def test_budgets_hold_in_worker_threads(templates: Path) -> None:
    welcome(
        templates,
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    with ThreadPoolExecutor(4) as pool, within(5):
        futures = [pool.submit(render, templates) for _ in range(4)]
        errors = [future.exception() for future in futures]
    assert all(isinstance(error, RenderError) for error in errors)


def test_the_clock_holds_in_threads_sharing_the_processor(templates: Path) -> None:
    # Four slow renders take turns on one interpreter: each gets a quarter of
    # the processor and is still stopped soon after its deadline.
    welcome(templates, "{% for i in range(100000) %}{{ range(20000)|sum }}{% endfor %}")
    limits = Limits(seconds=0.2, steps=10**9, output=10**9)
    with ThreadPoolExecutor(4) as pool, within(4):
        futures = [pool.submit(render, templates, limits=limits) for _ in range(4)]
        errors = [future.exception() for future in futures]
    assert all("took longer than 0.2 s" in str(error) for error in errors), errors


def spin(budget: Budget) -> float:
    """Step the budget in a busy loop until it stops us; the thread's CPU time then."""
    started = time.thread_time()
    with pytest.raises(BudgetExceeded, match=r"took longer than"):
        while time.thread_time() - started < 30:
            budget.step()
    return time.thread_time()


def test_a_render_waiting_for_the_processor_is_not_stopped() -> None:
    # The wall clock passes the deadline while the render's thread does not
    # run (a loaded machine): it goes on, and is stopped only once it has
    # spent a share of the deadline itself.
    cpu = time.thread_time()
    budget = Budget(Limits(seconds=0.1, steps=10**9))
    time.sleep(0.3)
    budget.step()
    assert spin(budget) - cpu >= 0.1 * CPU_SHARE


def test_a_full_garbage_collection_does_not_count() -> None:
    # A full collection of a large heap stops every thread; a render it
    # interrupted did not spend that time, wall clock or CPU.
    heap = [[[i]] for i in range(600_000)]  # a collection of it takes about 0.1 s
    budget = Budget(Limits(seconds=0.02, steps=10**9))
    before = collector_pauses()
    gc.collect()
    assert collector_pauses() - before > 0.02
    budget.step()  # past the deadline in wall and CPU time, all of it the collector's
    del heap
    spin(budget)  # and it still stops a render that spends its time


def test_a_render_starved_past_ten_deadlines_is_stopped() -> None:
    budget = Budget(Limits(seconds=0.02, steps=10**9))
    time.sleep(0.02 * CEILING + 0.05)
    with pytest.raises(BudgetExceeded, match=r"took longer than 0.02 s"):
        budget.step()


def test_an_ordinary_loop_still_renders(templates: Path) -> None:
    welcome(templates, "{% for i in range(500) %}{{ i }} {% endfor %}{{ 'ab' ~ 'cd' }}")
    html = render(templates).html
    assert "499" in html and "abcd" in html


def test_validate_reports_the_budget_at_the_template_line(templates: Path) -> None:
    welcome(
        templates,
        "Hello\n\n{% for i in range(100000) %}{% for j in range(9) %}{% endfor %}{% endfor %}\n",
    )
    seq = make_sequence()
    with within(3):
        problems = check(TemplateLibrary(templates), seq, [ADA], LINKS, ADDRESS, "s.yaml")
    assert any(
        p.file.endswith("en/welcome.md") and p.line == 3 and "rendering stopped" in p.message
        for p in problems
    ), problems


# -- conditions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "'x' * 10**10",
        "('x' * 10**5) ~ ('x' * 10**5) ~ ('x' * 10**5) ~ ('x' * 10**5) ~ ('x' * 10**5)",
        "2 ** (10**10) > 1",
        "'x'.center(10**10)",
        "range(10**10)|list",
        "(range(100000)|list) * 100000",
    ],
)
def test_a_hostile_condition_fails_fast(source: str) -> None:
    with within(2), pytest.raises(ConditionError):
        compile_condition(source).evaluate({"company": "Acme"}, Engagement())


@pytest.mark.parametrize(
    "source",
    [
        "('%0200000d'|format(1))|length > 0",
        "('x'|center(200000))|length > 0",
        "('ab' * 60000)|length > 0",
        "('{:0>200000}'.format(1))|length > 0",
    ],
)
def test_a_constant_the_compiler_folds_has_the_condition_limits(source: str) -> None:
    """Jinja computes constant parts while compiling, outside any evaluation:
    they are held to a condition's value limit (100,000), not a render's
    (500,000)."""
    with pytest.raises(ConditionError, match=r"limit 100000"):
        compile_condition(source).evaluate({}, Engagement())


def test_a_folded_constant_under_the_condition_limit_is_allowed() -> None:
    condition = compile_condition("('%090000d'|format(1))|length == 90000")
    assert condition.evaluate({}, Engagement()) is True


def test_an_ordinary_condition_still_evaluates() -> None:
    condition = compile_condition("subscriber.company ~ '!' == 'Acme!' and 2 ** 10 == 1024")
    assert condition.evaluate({"company": "Acme"}, Engagement()) is True


# -- sequence files -------------------------------------------------------------


def test_a_50_mb_sequence_file_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id: huge\n")
        handle.write(("# " + "x" * 1000 + "\n") * 50_000)
    with within(1):
        loaded, problems = load_sequence_file(path)
    assert loaded is None
    assert len(problems) == 1
    text = str(problems[0])
    assert text.endswith(
        f"huge.yaml:1:1: file too large ({path.stat().st_size} bytes > {MAX_SEQUENCE_BYTES})"
    )


def test_a_sequence_file_linking_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "sequences"
    folder.mkdir()
    (folder / "env.yaml").symlink_to("/proc/self/environ")
    (folder / "zero.yaml").symlink_to("/dev/zero")
    with within(2):
        loaded, problems = load_sequences([folder])
    assert loaded == {}
    assert [p.message.split(":")[0] for p in problems] == ["refused", "refused"]


def test_a_named_sequence_file_may_not_be_a_system_file(tmp_path: Path) -> None:
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    with within(2):
        loaded, problems = load_sequence_file(link)
    assert loaded is None and "system file" in problems[0].message
