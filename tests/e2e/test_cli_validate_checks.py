"""The mistakes ``nurture validate`` catches before anything is sent, through
the real executable: typos in ``when`` (and what happens if one raises at send
time anyway), values that render empty for a subscriber without a name, empty
templates and HTML outside the layout, and messages a marketer can act on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.folders import enable_example
from tests.e2e.test_cli_authoring import run
from tests.e2e.test_cli_engine import run as run_with_db

SEQUENCE = Path("sequences") / "sales-process.yaml"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("checks")
    # A project past its first steps: real sender values (validate warns about
    # the example's), and the example enabled (some tests send it).
    result = run(
        "init", "work", "--from", "Acme <hello@acme-saas.com>",
        "--postal-address", "Acme Inc, 1 Main Street, Springfield, USA",
        "--base-url", "https://mail.acme-saas.com", cwd=base,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    enable_example(base / "work")
    edit(base / "work" / SEQUENCE, "  name: Exempel AB", "  name: Acme")
    edit(base / "work" / SEQUENCE, "https://shop.example.com/", "https://shop.acme-saas.com/")
    return base / "work"


@pytest.fixture
def work(fresh: Path, tmp_path: Path) -> Path:
    """A copy of a new project, to break as each test needs."""
    target = tmp_path / "work"
    shutil.copytree(fresh, target)
    return target


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def position(path: Path, line_text: str, word: str) -> str:
    """``line:column`` of ``word`` in the first line containing ``line_text``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line_text in line:
            return f"{number}:{line.index(word) + 1}"
    raise AssertionError(f"{line_text!r} not in {path}")


def add_when(work: Path, step: str, condition: str) -> None:
    """Give ``step`` the condition ``when`` (written right after its id)."""
    edit(work / SEQUENCE, f"  - id: {step}\n", f'  - id: {step}\n    when: "{condition}"\n')


# -- 1. typos in `when` --------------------------------------------------------------


def test_unknown_names_in_when_are_errors_at_the_name_with_did_you_mean(work: Path) -> None:
    # No sample subscriber has the tag "vip", so `cliked` is never evaluated
    # for them: only a check of the names themselves catches it.
    add_when(work, "three-models", "'vip' in subscriber.tags and not cliked('welcome')")
    add_when(work, "choosing", "'x' in subscribr.tags")
    edit(
        work / SEQUENCE,
        "when: \"'customer' not in subscriber.tags\"",
        "when: \"subscriber.atributes.get('plan') == 'free'\"",
    )
    result = run("validate", cwd=work)
    assert result.returncode == 1
    path = work / SEQUENCE
    expected = [
        f"{SEQUENCE}:{position(path, 'cliked(', 'cliked')}: steps[three-models].when: "
        "unknown function 'cliked' — did you mean 'clicked'?",
        f"{SEQUENCE}:{position(path, 'subscribr', 'subscribr')}: steps[choosing].when: "
        "unknown name 'subscribr' — did you mean 'subscriber'?",
        f"{SEQUENCE}:{position(path, 'atributes', 'atributes')}: steps[case-study].when: "
        "subscriber has no field 'atributes' — did you mean 'attributes'?",
    ]
    for line in expected:
        assert line in result.stdout, result.stdout


def test_a_when_that_fails_at_send_time_pauses_and_shows_in_the_log(
    work: Path, db_url: str
) -> None:
    # Valid for the samples (they all get a plan), but raises for a subscriber
    # without one: the step is held and the sequence paused, never skipped.
    add_when(work, "three-models", "subscriber.attributes.plan == 'free'")
    sample = work / "sequences" / "sales-process.sample.yaml"
    text = sample.read_text(encoding="utf-8")
    text = text.replace("  attributes:\n", "  attributes:\n    plan: free\n")
    sample.write_text(text.replace("attributes: {}", "attributes: {plan: pro}"), encoding="utf-8")
    assert run("validate", cwd=work).returncode == 0
    friday, monday = "2026-11-27T14:30:00Z", "2026-11-30T09:00:00Z"
    added = run_with_db(
        "--now", friday, "subscribers", "add", "karin@example.com", "--name", "Karin",
        "--tz", "Europe/Stockholm", "--locale", "sv", "--tag", "b2b", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "sent 1," in run_with_db("--now", friday, "dispatch", cwd=work,
                                    db_url=db_url).stdout  # fmt: skip
    held = run_with_db("--now", monday, "dispatch", cwd=work, db_url=db_url)
    # A held step is something gone wrong: dispatch says so in its exit code.
    assert held.returncode == 1, held.stderr
    assert "sent 0, skipped 0," in held.stdout
    log = run_with_db("log", "--email", "karin@example.com", cwd=work, db_url=db_url)
    flat = " ".join(log.stdout.replace("│", " ").split())
    assert "three-models" in flat and "retry" in flat
    assert "held: condition" in flat and "subscriber.attributes has no 'plan'" in flat
    assert "nurture resume sales-process" in flat
    later = run_with_db("--now", "2026-12-03T09:00:00Z", "dispatch", cwd=work,
                        db_url=db_url)  # fmt: skip
    assert "sent 0," in later.stdout  # paused: nothing more from it
    resumed = run_with_db("resume", "sales-process", cwd=work, db_url=db_url)
    assert resumed.returncode == 0 and "sales-process resumed" in resumed.stdout


def test_simulate_shows_where_a_failing_when_would_pause(work: Path, tmp_path: Path) -> None:
    add_when(work, "three-models", "subscriber.attributes.plan == 'free'")
    data = tmp_path / "karin.yaml"
    data.write_text("email: karin@example.com\nname: Karin\nattributes: {plan: free}\n")
    ok = run("simulate", "sales-process", "--start", "2026-11-27T15:30", "--data", str(data),
             "--json", cwd=work)  # fmt: skip
    assert [e["action"] for e in json.loads(ok.stdout)][:2] == ["send", "send"]
    data.write_text("email: karin@example.com\nname: Karin\n")
    result = run("simulate", "sales-process", "--start", "2026-11-27T15:30", "--data", str(data),
                 "--json", cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr
    timeline = json.loads(result.stdout)
    assert [(e["step"], e["action"]) for e in timeline] == [
        ("welcome", "send"),
        ("three-models", "paused"),
    ]
    assert "subscriber.attributes has no 'plan'" in timeline[-1]["reason"]


# -- 2. values that render empty -------------------------------------------------------


def test_values_that_render_empty_without_a_name_are_warnings(work: Path) -> None:
    edit(
        work / SEQUENCE,
        'en: "Welcome{% if subscriber.first_name %}, {{ subscriber.first_name }}{% endif %}!"',
        'en: "Your Acme trial is live, {{ subscriber.first_name }}"',
    )
    welcome = work / "templates" / "sv" / "welcome.md"
    lines = welcome.read_text(encoding="utf-8").splitlines()
    welcome.write_text("\n".join(["Hej {{ subscriber.first_name }},", *lines[1:]]) + "\n")
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr  # warnings only
    where = position(work / SEQUENCE, "Your Acme trial", "en:")
    assert (
        f"{SEQUENCE}:{where}: warning: the subject of step 'welcome' reads "
        "'Your Acme trial is live,' for a subscriber with only an email address"
    ) in result.stdout, result.stdout
    assert (
        "templates/sv/welcome.md:1:1: warning: the first line of step 'welcome' reads 'Hej ,'"
    ) in result.stdout
    assert '{{ subscriber.first_name or "there" }}' in result.stdout
    assert "ok: 1 file(s)" in result.stdout and "2 warning(s)" in result.stderr


def test_the_documented_fallback_silences_the_warning(work: Path) -> None:
    edit(
        work / SEQUENCE,
        'en: "Welcome{% if subscriber.first_name %}, {{ subscriber.first_name }}{% endif %}!"',
        'en: "Your Acme trial is live, {{ subscriber.first_name or \\"there\\" }}"',
    )
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout
    assert "warning" not in result.stdout + result.stderr


# -- 3. empty templates, HTML outside the layout ------------------------------------------


def test_empty_templates_and_html_outside_the_layout_are_refused(work: Path) -> None:
    templates = work / "templates"
    (templates / "en" / "choosing.md").write_text("  \n\n\t\n", encoding="utf-8")
    (templates / "sv" / "offer.html").write_text(
        '<p>Hej! <a href="{{ offer.url }}">Köp</a></p>\n', encoding="utf-8"
    )
    result = run("validate", cwd=work)
    assert result.returncode == 1
    assert "templates/en/choosing.md:1:1: the template is empty" in result.stdout
    assert (
        'templates/sv/offer.html:1:1: an .html template must start with {% extends "layout.html" %}'
    ) in result.stdout
    assert "unsubscribe link" not in result.stdout.replace("adds the unsubscribe link", "")


# -- 5. messages a marketer can act on -------------------------------------------------------


def test_schema_errors_in_plain_words(work: Path) -> None:
    path = work / SEQUENCE
    edit(path, "id: sales-process ", "id: Sales Process ")
    choosing = "  - id: choosing\n    wait: 2 days\n"
    edit(path, f"{choosing}    subject:", f"{choosing}    subjct:")
    three = "  - id: three-models\n"
    edit(path, f"{three}    wait: 2 days", f"{three}    wait: 2 fortnights")
    result = run("validate", cwd=work)
    assert result.returncode == 1
    out = result.stdout
    assert (
        f"{SEQUENCE}:{position(path, 'id: Sales', 'id')}: id: 'Sales Process' is not an id: "
        "use lowercase letters, digits, - and _"
    ) in out, out
    assert "pattern" not in out and "^" not in out
    assert (
        f"{SEQUENCE}:{position(path, 'subjct:', 'subjct')}: steps[choosing].subjct: "
        "unknown key 'subjct' — did you mean 'subject'?"
    ) in out
    assert "missing required key 'subject'" not in out
    assert "steps[three-models].wait: invalid wait '2 fortnights'" in out
    assert "steps.1" not in out and "steps.2" not in out


@pytest.mark.parametrize(
    ("old", "new", "hint"),
    [
        ('  start: "08:00"\n', '\tstart: "08:00"\n', "a tab character: indent with spaces"),
        ('  start: "08:00"\n', ' start: "08:00"\n', "the indentation does not line up"),
    ],
)
def test_yaml_errors_get_a_plain_hint(work: Path, old: str, new: str, hint: str) -> None:
    edit(work / SEQUENCE, old, new)
    result = run("validate", cwd=work)
    assert result.returncode == 1
    assert hint in result.stdout, result.stdout


def test_template_messages_name_the_object_and_the_encoding(work: Path) -> None:
    templates = work / "templates"
    case = templates / "en" / "case-study.md"
    lines = case.read_text(encoding="utf-8").splitlines()
    case.write_text("\n".join([lines[0], "", "Hi {{ subscriber.frist_name }}", *lines[1:]]) + "\n")
    (templates / "sv" / "choosing.md").write_bytes("Hej!\n\nHälsningar\n".encode("latin-1"))
    result = run("validate", cwd=work)
    assert result.returncode == 1
    assert (
        "templates/en/case-study.md:3:18: subscriber has no field 'frist_name' — "
        "did you mean 'first_name'?"
    ) in result.stdout, result.stdout
    assert (
        "templates/sv/choosing.md:3:2: not UTF-8 text: save the file with the UTF-8 encoding"
    ) in result.stdout


def test_a_fixed_offset_timezone_is_a_warning(work: Path) -> None:
    edit(work / SEQUENCE, "timezone: Europe/Stockholm", "timezone: EST")
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout
    where = position(work / SEQUENCE, "timezone: EST", "EST")
    assert (
        f"{SEQUENCE}:{where}: warning: timezone 'EST' is a fixed UTC-5 offset that never "
        "changes for daylight saving time"
    ) in result.stdout
    assert "America/New_York" in result.stdout


# -- 6. languages: footer texts, a subject without its template -----------------------------


def test_a_language_without_footer_texts_is_one_warning_at_its_first_use(work: Path) -> None:
    templates = work / "templates"
    shutil.copytree(templates / "sv", templates / "cs")  # Czech: no footer texts shipped
    (templates / "cs-CZ").mkdir()
    shutil.copy(templates / "sv" / "offer.html", templates / "cs-CZ" / "offer.html")
    edit(
        work / SEQUENCE,
        "      en: Three ways",
        "      cs: Tři způsoby nákupu\n      en: Three ways",
    )
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a problem
    where = position(work / SEQUENCE, "template: welcome.md", "welcome.md")
    assert (
        f"{SEQUENCE}:{where}: warning: no footer texts in 'cs' (emails in cs get the Swedish "
        "footer): copy templates/layout.html to templates/cs/layout.html and write the footer "
        "in cs there, in place of {{ t.reason }}, {{ t.unsubscribe }} and {{ t.preferences }}"
    ) in result.stdout, result.stdout
    assert result.stdout.count("no footer texts") == 1, result.stdout  # once, not per step
    assert "1 warning(s)" in result.stderr

    # The documented workaround: the layout of Czech emails with the footer written out.
    layout = (templates / "layout.html").read_text(encoding="utf-8")
    czech = {
        "{{ t.reason }}": "Tento e-mail dostáváte, protože jste se k jeho odběru přihlásili.",
        "{{ t.unsubscribe }}": "Odhlásit se",
        "{{ t.preferences }}": "Nastavení e-mailů",
    }
    for variable, text in czech.items():
        layout = layout.replace(variable, text)
    (templates / "cs" / "layout.html").write_text(layout, encoding="utf-8")
    fixed = run("validate", cwd=work)
    assert fixed.returncode == 0, fixed.stdout
    assert "warning" not in fixed.stdout + fixed.stderr


def test_a_sequence_in_a_language_without_footer_texts_names_its_locale(work: Path) -> None:
    path = work / SEQUENCE
    path.write_text(
        path.read_text(encoding="utf-8")
        .replace("locale: sv", "locale: is")
        .replace("      sv: ", "      is: "),
        encoding="utf-8",
    )
    (work / "templates" / "sv").rename(work / "templates" / "is")
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    where = position(path, "locale: is", "is")
    assert (
        f"{SEQUENCE}:{where}: warning: no footer texts in 'is' (emails in is get the English "
        "footer)"
    ) in result.stdout, result.stdout


def test_german_emails_get_the_german_footer(work: Path, tmp_path: Path) -> None:
    templates = work / "templates"
    shutil.copytree(templates / "sv", templates / "de")
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout
    assert "warning" not in result.stdout + result.stderr
    out = tmp_path / "out"
    shown = run(
        "preview", "sales-process", "--step", "welcome", "--locale", "de-AT", "--out", str(out),
        cwd=work,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    html = (out / "sales-process" / "welcome.de-AT.html").read_text(encoding="utf-8")
    text = (out / "sales-process" / "welcome.de-AT.txt").read_text(encoding="utf-8")
    assert "Sie erhalten diese E-Mail, weil Sie sich dafür angemeldet haben." in html
    assert ">Abmelden</a>" in html and ">E-Mail-Einstellungen</a>" in html
    assert "Abmelden" in text and "Unsubscribe" not in html + text


def test_a_subject_in_a_language_without_its_template_is_a_warning(work: Path) -> None:
    (work / "templates" / "en" / "choosing.md").unlink()
    # A regional subject whose language has the template is fine: en-GB finds en/.
    edit(
        work / SEQUENCE,
        "      en: Three ways",
        "      en-GB: Three ways to buy – which one do your customers use?\n      en: Three ways",
    )
    result = run("validate", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    where = position(work / SEQUENCE, "en: Which sales process", "en:")
    assert (
        f"{SEQUENCE}:{where}: warning: step 'choosing' has an 'en' subject but no "
        "templates/en/choosing.md: en subscribers get the sv email"
    ) in result.stdout, result.stdout
    assert "1 warning(s)" in result.stderr, result.stdout + result.stderr
