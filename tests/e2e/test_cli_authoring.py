"""The marketer's commands through the real ``nurture`` executable."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NURTURE = [sys.executable, "-m", "nurture"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    full_env.update(env or {})
    full_env["COLUMNS"] = "200"
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    result = run("init", "work", cwd=base)
    assert result.returncode == 0, result.stderr
    return base / "work"


def test_init_creates_a_ready_folder(workdir: Path) -> None:
    assert (workdir / "nurture.toml").is_file()
    assert (workdir / "sequences" / "sales-process.yaml").is_file()
    assert (workdir / "templates" / "layout.html").is_file()
    config = (workdir / "nurture.toml").read_text()
    assert 'secret_key = "' in config and "change-me" not in config
    again = run("init", str(workdir), cwd=workdir.parent)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_validate_ok(workdir: Path) -> None:
    result = run("validate", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 1 file(s), sequences: sales-process" in result.stdout


def test_validate_reports_file_line_column(workdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    path = broken / "sequences" / "sales-process.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith("wait: 2 days"))
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    lines[index] = f"{indent}wait: 2 fortnights"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("validate", cwd=broken)
    assert result.returncode == 1
    expected = f"sequences/sales-process.yaml:{index + 1}:{len(indent) + 1}: "
    assert expected in result.stdout, result.stdout


def test_validate_reports_template_line(workdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    template = broken / "templates" / "en" / "choosing.md"
    lines = template.read_text(encoding="utf-8").splitlines()
    lines.insert(2, "Hello {{ subscriber.nickname }}")
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("validate", cwd=broken)
    assert result.returncode == 1
    assert "templates/en/choosing.md:3:" in result.stdout, result.stdout
    assert "nickname" in result.stdout


def test_validate_catches_removed_unsubscribe_link(workdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    layout = broken / "templates" / "layout.html"
    text = layout.read_text(encoding="utf-8")
    assert "unsubscribe_url" in text
    layout.write_text(
        text.replace("{{ unsubscribe_url }}", "https://example.com/"), encoding="utf-8"
    )
    result = run("validate", cwd=broken)
    assert result.returncode == 1
    assert "unsubscribe" in result.stdout.lower()


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


UNSUBSCRIBE = '<a href="{{ unsubscribe_url }}">{{ t.unsubscribe }}</a>'


@pytest.mark.parametrize(
    ("link", "why"),
    [
        ("", "has no unsubscribe link"),
        (f"<!-- {UNSUBSCRIBE} -->", "the unsubscribe link is inside an HTML comment"),
        (
            '<a href="{{ unsubscribe_url }}" style="display:none">x</a>',
            "the unsubscribe link is hidden",
        ),
    ],
    ids=["removed", "commented-out", "hidden"],
)
def test_validate_reports_the_layouts_unsubscribe_link_once_at_the_layout(
    workdir: Path, tmp_path: Path, link: str, why: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    layout = broken / "templates" / "layout.html"
    footer = line_of(layout, 'class="footer"')
    layout.write_text(layout.read_text(encoding="utf-8").replace(UNSUBSCRIBE, link), "utf-8")
    result = run("validate", cwd=broken)
    assert result.returncode == 1
    [problem] = [line for line in result.stdout.splitlines() if "warning:" not in line]
    line = line_of(layout, "unsubscribe_url") if link else footer
    assert problem.startswith(f"templates/layout.html:{line}:"), result.stdout
    assert why in problem
    assert "1 problem(s)" in result.stderr


def test_validate_puts_a_bad_link_at_the_link(workdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    tips = "## Tips (en)\n\nOne #1 tip, then a link.\n\n[Book a class](#)\n"
    (broken / "templates" / "en" / "welcome.md").write_text(tips, encoding="utf-8")
    result = run("validate", cwd=broken)
    assert result.returncode == 1
    assert (
        "templates/en/welcome.md:5:1: link '#' is not an absolute https:// address\n"
    ) in result.stdout, result.stdout


def test_validate_reports_a_shared_templates_problem_once(workdir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    sequences = broken / "sequences"
    for suffix in (".yaml", ".sample.yaml"):
        text = (sequences / f"sales-process{suffix}").read_text(encoding="utf-8")
        (sequences / f"copy{suffix}").write_text(
            text.replace("id: sales-process", "id: copy", 1), encoding="utf-8"
        )
    offer = broken / "templates" / "en" / "offer.html"
    offer.write_text(
        offer.read_text(encoding="utf-8").replace("{{ offer.price }}", "{{ offer.price }"), "utf-8"
    )
    result = run("validate", cwd=broken)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if "warning:" not in line]
    assert problems == [
        f"templates/en/offer.html:{line_of(offer, '{{ offer.price }')}:1: syntax error: "
        "unexpected '}'"
    ], result.stdout
    assert "1 problem(s) in 2 file(s)" in result.stderr


def test_preview_writes_html_txt_eml(workdir: Path) -> None:
    result = run("preview", "sales-process", "--step", "offer", "--locale", "en", cwd=workdir)
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert paths == [
        "preview/sales-process/offer.en.html",
        "preview/sales-process/offer.en.txt",
        "preview/sales-process/offer.en.eml",
    ]
    message = email.message_from_bytes(
        (workdir / paths[2]).read_bytes(), policy=email.policy.default
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://localhost:8000/unsubscribe/")
    html = message.get_body(("html",))
    assert html is not None
    content = html.get_content()
    assert "utm_source=nurture" in content and "utm_content=offer" in content
    assert "Sales process review" in content


def test_preview_all_steps_in_every_language_the_sequence_is_written_in(workdir: Path) -> None:
    result = run("preview", "sales-process", "--out", "all", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 30  # 5 steps, sv and en, .html .txt .eml
    assert "all/sales-process/welcome.sv.eml" in result.stdout
    assert "all/sales-process/welcome.en.eml" in result.stdout
    english = (workdir / "all" / "sales-process" / "welcome.en.html").read_text(encoding="utf-8")
    assert "Welcome" in english  # the English sample subscriber, in English
    # The .eml is the outbox's bytes: List-Unsubscribe readable, not RFC 2047 words.
    eml = (workdir / "all" / "sales-process" / "welcome.en.eml").read_bytes()
    [header] = [line for line in eml.splitlines() if line.startswith(b"List-Unsubscribe:")]
    assert header.startswith(b"List-Unsubscribe: <http") and b"=?" not in header


def test_preview_in_a_language_nothing_is_written_in_says_which_one_is_shown(
    workdir: Path,
) -> None:
    result = run("preview", "sales-process", "--step", "welcome", "--locale", "fr", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (
        "warning: no template of sales-process is written in 'fr': subscribers in fr get "
        "the sv emails, as shown"
    ) in " ".join(result.stderr.split())
    regional = run(
        "preview", "sales-process", "--step", "welcome", "--locale", "en-GB", cwd=workdir
    )
    assert regional.returncode == 0 and "warning" not in regional.stderr  # en/ is its language


def test_preview_unknown_step(workdir: Path) -> None:
    result = run("preview", "sales-process", "--step", "nope", cwd=workdir)
    assert result.returncode == 1
    assert "no step 'nope'" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("template: welcome.md", "template: nosuch.md", "template 'nosuch.md' not found"),
        ('sv: "Välkommen{% if', 'sv: "Hej {{ subscriber.nope }}{% if', "subscriber has no field"),
    ],
)
def test_preview_names_the_sequence_files_line_as_validate_does(
    tmp_path: Path, old: str, new: str, where: str
) -> None:
    assert run("init", "work", cwd=tmp_path).returncode == 0
    work = tmp_path / "work"
    sequence = work / "sequences" / "sales-process.yaml"
    sequence.write_text(sequence.read_text().replace(old, new, 1))
    checked = run("validate", cwd=work)
    [problem] = [line for line in checked.stdout.splitlines() if where in line]
    assert problem.startswith("sequences/sales-process.yaml:"), problem
    previewed = run("preview", "sales-process", "--step", "welcome", cwd=work)
    assert previewed.returncode == 1
    assert f"error: {problem}" in " ".join(previewed.stderr.split()), previewed.stderr


def test_simulate_json(workdir: Path) -> None:
    result = run(
        "simulate",
        "sales-process",
        "--start",
        "2026-11-27T15:30",
        "--tz",
        "Europe/Stockholm",
        "--event",
        "purchased sales-audit at 2026-12-08T12:00",
        "--json",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    timeline = json.loads(result.stdout)
    assert [(e["step"], e["action"]) for e in timeline] == [
        ("welcome", "send"),
        ("three-models", "send"),
        ("choosing", "send"),
        ("case-study", "send"),
        (None, "exit"),
    ]
    assert timeline[0]["at"] == "2026-11-27T15:30:00+01:00"
    assert timeline[0]["at_utc"] == "2026-11-27T14:30:00Z"
    assert timeline[1]["at"] == "2026-11-30T09:30:00+01:00"
    assert timeline[-1]["reason"] == "goal reached: purchased sales-audit"
    assert set(timeline[0]) == {"step", "action", "at", "at_utc", "reason"}


def test_simulate_table_and_data(workdir: Path, tmp_path: Path) -> None:
    data = tmp_path / "ola.yaml"
    data.write_text(
        "email: ola@example.com\nname: Ola Berg\nlocale: sv\ntimezone: America/New_York\n"
        "tags: [b2b, customer]\n",
        encoding="utf-8",
    )
    result = run(
        "simulate", "sales-process", "--start", "2026-11-27T09:00", "--data", str(data), cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert "case-study" in result.stdout and "skip" in result.stdout
    assert "America/New_York" in result.stdout


def test_simulate_bad_event(workdir: Path) -> None:
    result = run(
        "simulate", "sales-process", "--start", "2026-11-27T09:00", "--event", "danced", cwd=workdir
    )
    assert result.returncode == 1
    assert "--event" in result.stderr


def test_schema_command_matches_committed_file(workdir: Path) -> None:
    result = run("schema", cwd=workdir)
    assert result.returncode == 0
    assert result.stdout == (workdir / "schemas" / "sequence.schema.json").read_text(
        encoding="utf-8"
    )
