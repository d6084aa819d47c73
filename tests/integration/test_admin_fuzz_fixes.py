"""What a fuzzing round of the admin side found, each answered without a 500
and without storing anything, on SQLite and PostgreSQL:

* ids no row can have (past ``2**31 - 1``, zero, negative, not digits) in a
  path are a 404 on every admin route, and in ``after=`` or a send-log cursor
  a 400 (SQLite's driver raised ``OverflowError`` past ``2**63 - 1``, PostgreSQL
  "integer out of range" past ``2**31 - 1``);
* send-log dates that are valid but outside years 1-9999 once in UTC are a 400;
* time zone names are checked as everywhere else (``check_timezone``): a
  tzdata folder (``Europe``), a name too long for a file, ``localtime`` and
  ``Factory`` are refused;
* the reason given when resolving a send is one line of at most 500 characters;
* the CSV export quotes every cell, so a ``;`` in a name cannot start a
  formula cell in a spreadsheet that splits at ``;``.
"""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import Table, func, insert, select, update

from nurture.admin.users import check_zone
from nurture.audience.subscribers import add_subscriber
from nurture.audience.tokens import create_token
from nurture.core.vocabulary import SendStatus
from nurture.errors import AmbiguousSendError
from nurture.sending.resolve import WHY_LIMIT, Resolution, ResolveError, resolve_sends
from nurture.store.db import session_factory
from nurture.store.ids import MAX_ID
from nurture.store.queries import ENROLLMENT, SEND, SUBSCRIBER
from nurture.store.tables import AdminActionRow, AdminUserRow
from tests.admin_kit import ADMIN, NOW, AdminApp, csrf_of, route_table

ADMIN_ACTION: Table = AdminActionRow.__table__  # type: ignore[attr-defined]
ADMIN_USER: Table = AdminUserRow.__table__  # type: ignore[attr-defined]
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")
NOT_IDS = (
    *(str(n) for n in (MAX_ID + 1, 2**63 - 1, 2**63, 2**64)),
    *("9" * 5000, "0", "00", "-1", "+1", "1_0", "١", "abc"),
)
"""Path ids no row can have: past PostgreSQL's INTEGER and SQLite's, not
positive, not ASCII digits."""


# ---------------------------------------------------------------------- helpers


def _token(admin: AdminApp) -> dict[str, str]:
    with session_factory(admin.engine)() as session:
        made = create_token(session, "ops", "admin", NOW)
        session.commit()
    return {"Authorization": f"Bearer {made.token}"}


def _subscriber(admin: AdminApp, email: str, name: str = "Karin") -> int:
    with session_factory(admin.engine)() as session:
        row, _ = add_subscriber(
            session, email=email, name=name, tags=("b2b",), consent_source="test", now=NOW,
            sequences=admin.runtime.registry.sequences(),
        )  # fmt: skip
        session.commit()
        assert row.id is not None
        return row.id


def _unknown_send(admin: AdminApp, email: str) -> int:
    """``email``'s welcome, dispatched into an ``unknown`` outcome; its id."""
    subscriber_id = _subscriber(admin, email)
    admin.transport.fail_next(AmbiguousSendError("timed out"))
    admin.runtime.dispatcher.dispatch(NOW)
    with admin.engine.connect() as conn:
        send_id, status = conn.execute(
            select(SEND.c.id, SEND.c.status).where(SEND.c.subscriber_id == subscriber_id)
        ).one()
    assert status == SendStatus.UNKNOWN
    return int(send_id)


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _id_routes(app: object) -> list[tuple[str, str]]:
    """(path template, method) of every admin route with a row id in its path."""
    assert isinstance(app, FastAPI)
    found = []
    for served in route_table(app):
        if not served.path.startswith("/admin") or not isinstance(served.route, APIRoute):
            continue
        if {"subscriber_id", "send_id"} & set(_PARAM.findall(served.path)):
            found += [(served.path, method) for method in sorted(served.methods)]
    return found


def _fill(template: str, row_id: str) -> str:
    others = {"sequence_id": "sales-process", "step_id": "welcome"}
    return _PARAM.sub(lambda m: others.get(m.group(1), row_id), template)


def _call(
    client: httpx.Client, method: str, url: str, csrf: str, headers: dict[str, str]
) -> httpx.Response:
    data = None if method == "GET" else {"csrf": csrf, "resolution": "as-sent", "why": "x"}
    response: httpx.Response = client.request(
        method, url, data=data, headers=headers, follow_redirects=False
    )
    return response


def _table_counts(admin: AdminApp) -> tuple[int, ...]:
    with admin.engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (SUBSCRIBER, ENROLLMENT, SEND, ADMIN_ACTION)
        )


# ------------------------------------------------------------------ finding 3: ids


def test_a_path_id_no_row_can_have_is_a_404_on_every_admin_route(admin: AdminApp) -> None:
    routes = _id_routes(admin.client.app)
    # Subscriber pages and actions, the send pages, the resolve form, the API.
    assert len(routes) >= 10, routes
    assert ("/admin/problems/sends/{send_id}/resolve", "POST") in routes
    _subscriber(admin, "karin@example.com")
    csrf = csrf_of(admin.client.get("/admin/problems").text)
    token = _token(admin)
    before = _table_counts(admin)
    wrong = []
    for template, method in routes:
        headers = token if template.startswith("/admin/api/") else {}
        for row_id in NOT_IDS:
            answer = _call(admin.client, method, _fill(template, row_id), csrf, headers)
            if answer.status_code != 404:
                wrong.append(f"{method} {template} with {row_id[:30]}: {answer.status_code}")
        # The largest id a row can have is an id: looked up, and not found.
        answer = _call(admin.client, method, _fill(template, str(MAX_ID)), csrf, headers)
        if answer.status_code not in (404, 409):  # 409: the resolve form's "no send"
            wrong.append(f"{method} {template} with MAX_ID: {answer.status_code}")
    assert not wrong, "\n".join(wrong)
    assert _table_counts(admin) == before


def test_the_caller_is_checked_before_the_id(admin: AdminApp) -> None:
    anonymous = admin.anonymous()
    for template, method in _id_routes(admin.client.app):
        answer = _call(anonymous, method, _fill(template, str(2**63)), "", {})
        if template.startswith("/admin/api/"):
            assert answer.status_code == 401, template
        elif method == "GET":
            assert answer.status_code == 303, template
        else:
            assert answer.status_code == 403, template


def test_a_search_page_position_out_of_range_is_a_400(admin: AdminApp) -> None:
    first = _subscriber(admin, "karin@example.com")
    token = _token(admin)
    for after in (str(2**63), "9" * 5000, "-1", "abc"):
        page = admin.client.get("/admin/subscribers", params={"after": after})
        assert page.status_code == 400, after
        api = admin.client.get("/admin/api/subscribers", params={"after": after}, headers=token)
        assert api.status_code == 400, after
    # In range, it is a page position as before.
    for after, expected in (("0", [first]), ("", [first]), (str(MAX_ID), [])):
        api = admin.client.get("/admin/api/subscribers", params={"after": after}, headers=token)
        assert api.status_code == 200
        assert [hit["id"] for hit in api.json()["subscribers"]] == expected
        assert admin.client.get("/admin/subscribers", params={"after": after}).status_code == 200


def test_a_send_log_cursor_with_an_id_out_of_range_is_a_400(admin: AdminApp) -> None:
    token = _token(admin)
    for number in (str(2**63), "9" * 5000, "-1"):
        cursor = _cursor(f"o|2026-12-02T00:00:00+00:00|{number}")
        page = admin.client.get("/admin/sends", params={"cursor": cursor})
        assert page.status_code == 400 and "damaged" in page.text
        api = admin.client.get("/admin/api/sends", params={"cursor": cursor}, headers=token)
        assert api.status_code == 400 and "damaged" in api.json()["detail"]
    cursor = _cursor(f"o|2026-12-02T00:00:00+00:00|{MAX_ID}")
    assert admin.client.get("/admin/sends", params={"cursor": cursor}).status_code == 200


# --------------------------------------------------------- finding 4: dates in UTC


@pytest.mark.parametrize(
    ("params", "in_utc_too"),
    [
        ({"to": "9999-12-31"}, True),  # through the end of that day: the day after 9999-12-31
        # Midnight in Stockholm (the admin's zone) is in year 0 in UTC; the
        # API reads dates in UTC, where it exists.
        ({"from": "0001-01-01"}, False),
        ({"from": "0001-01-01T00:00:00+14:00"}, True),
        ({"to": "9999-12-31T23:59:59-14:00"}, True),
        ({"cursor": _cursor("o|0001-01-01T00:00:00+14:00|5")}, True),
        ({"cursor": _cursor("n|9999-12-31T23:59:59-14:00|5")}, True),
    ],
)
def test_a_date_outside_years_1_to_9999_in_utc_is_a_400(
    admin: AdminApp, params: dict[str, str], in_utc_too: bool
) -> None:
    token = _token(admin)
    page = admin.client.get("/admin/sends", params=params)
    assert page.status_code == 400 and 'role="alert"' in page.text
    api = admin.client.get("/admin/api/sends", params=params, headers=token)
    assert api.status_code == (400 if in_utc_too else 200), api.text
    if "cursor" not in params:
        csv_export = admin.client.get("/admin/sends.csv", params=params)
        assert csv_export.status_code == 400 and "year from 1 to 9999" in csv_export.text


def test_the_earliest_and_latest_dates_in_range_still_filter(admin: AdminApp) -> None:
    token = _token(admin)
    for params in ({"from": "0001-01-02", "to": "9999-12-30"}, {"to": "9999-12-30T23:59:59Z"}):
        assert admin.client.get("/admin/sends", params=params).status_code == 200
    # The API reads dates in UTC, where 0001-01-01 00:00 exists.
    utc = {"from": "0001-01-01", "to": "9999-12-30"}
    assert admin.client.get("/admin/api/sends", params=utc, headers=token).status_code == 200


# ---------------------------------------------------------------- finding 5: zones

NOT_ZONES = ("Europe", "America/Argentina", "A" * 300, "localtime", "Factory", "posixrules")


@pytest.mark.parametrize("zone", [*NOT_ZONES, "Mars/Olympus", "europe/stockholm"])
def test_the_dashboard_api_refuses_what_is_not_a_time_zone(admin: AdminApp, zone: str) -> None:
    answer = admin.client.get("/admin/api/dashboard", params={"zone": zone}, headers=_token(admin))
    assert answer.status_code == 400
    assert "is not a time zone" in answer.json()["detail"]


def test_the_zone_form_refuses_what_the_rest_of_the_app_refuses(admin: AdminApp) -> None:
    csrf = csrf_of(admin.client.get("/admin/account").text)
    for zone in NOT_ZONES:
        answer = admin.client.post("/admin/zone", data={"csrf": csrf, "zone": zone})
        assert answer.status_code == 422, zone
        assert "is not a time zone" in answer.text and len(answer.text) < 200
    with admin.engine.connect() as conn:
        zones = conn.execute(select(ADMIN_USER.c.zone).where(ADMIN_USER.c.name == ADMIN)).all()
    assert zones == [("Europe/Stockholm",)]
    # What the page offers to pick from is what the form accepts.
    page = admin.client.get("/admin/account").text
    assert '<option value="Europe/Stockholm">' in page
    assert '<option value="localtime">' not in page and '<option value="Factory">' not in page
    good = admin.client.post(
        "/admin/zone", data={"csrf": csrf, "zone": "America/New_York"}, follow_redirects=False
    )
    assert good.status_code == 303


@pytest.mark.parametrize("stored", ["Factory", "localtime", "Europe"])
def test_a_zone_stored_before_it_was_refused_shows_times_in_utc(
    admin: AdminApp, stored: str
) -> None:
    _subscriber(admin, "karin@example.com")
    with admin.engine.begin() as conn:
        conn.execute(update(ADMIN_USER).values(zone=stored))
    for path in ("/admin", "/admin/sends", "/admin/subscribers"):
        page = admin.client.get(path)
        assert page.status_code == 200, path
    assert "UTC" in admin.client.get("/admin/subscribers").text


def test_creating_an_admin_checks_the_zone_the_same_way(admin: AdminApp) -> None:
    from nurture.admin.users import AdminUserError, create_user

    with session_factory(admin.engine)() as session:
        for zone in NOT_ZONES:
            with pytest.raises(AdminUserError, match="is not a time zone"):
                create_user(session, "ops", "a long enough password", now=NOW, zone=zone)
    assert check_zone("Europe/Stockholm") == "Europe/Stockholm"


# ------------------------------------------------------ finding 8: the reason given


@pytest.mark.parametrize(
    "why",
    [
        "ok\x00\x1b[2J" + "w" * 60_000,
        "w" * (WHY_LIMIT + 1),
        "checked\x1b[31m SendGrid",
        "checked\nInjected: yes",
        "checked\x00",
    ],
)
def test_a_reason_too_long_or_with_control_characters_is_refused(admin: AdminApp, why: str) -> None:
    send_id = _unknown_send(admin, "page@example.com")
    before = _table_counts(admin)
    csrf = csrf_of(admin.client.get("/admin/problems").text)
    answer = admin.client.post(
        f"/admin/problems/sends/{send_id}/resolve",
        data={"csrf": csrf, "resolution": "as-sent", "why": why},
        follow_redirects=False,
    )
    assert answer.status_code == 409 and 'role="alert"' in answer.text
    assert "why " in answer.text and "nothing was changed" in answer.text
    assert why[:100] not in answer.text
    with admin.engine.connect() as conn:
        status, resolution = conn.execute(
            select(SEND.c.status, SEND.c.resolution).where(SEND.c.id == send_id)
        ).one()
    assert (status, resolution) == (SendStatus.UNKNOWN, None)
    assert _table_counts(admin) == before
    # The command line goes through the same service.
    with pytest.raises(ResolveError, match="why "):
        resolve_sends(
            admin.engine, [str(send_id)], all_unknown=False, resolution=Resolution.GIVE_UP,
            why=why, by="ops", now=NOW,
        )  # fmt: skip


def test_a_reason_of_the_longest_length_is_kept(admin: AdminApp) -> None:
    send_id = _unknown_send(admin, "page@example.com")
    why = "checked SendGrid: " + "å" * (WHY_LIMIT - 18)
    csrf = csrf_of(admin.client.get("/admin/problems").text)
    answer = admin.client.post(
        f"/admin/problems/sends/{send_id}/resolve",
        data={"csrf": csrf, "resolution": "as-sent", "why": f"  {why}  "},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    with admin.engine.connect() as conn:
        resolution = conn.execute(select(SEND.c.resolution).where(SEND.c.id == send_id)).scalar()
    assert resolution == f"as-sent: {why}"


# ------------------------------------------------------------ the CSV, every cell quoted

_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _cells_split_at_either_separator(text: str) -> list[str]:
    """The cells a spreadsheet would see if it split at ``,`` or ``;`` (its list
    separator) outside double quotes, as Excel does; quotes are honoured."""
    cells, cell, quoted, at = [], [], False, 0
    while at < len(text):
        char = text[at]
        if quoted:
            if char == '"' and text[at + 1 : at + 2] == '"':
                cell.append('"')
                at += 1
            elif char == '"':
                quoted = False
            else:
                cell.append(char)
        elif char == '"':
            quoted = True
        elif char in ",;\n":
            cells.append("".join(cell).rstrip("\r"))
            cell = []
        else:
            cell.append(char)
        at += 1
    return [*cells, "".join(cell)]


def test_the_csv_quotes_every_cell_so_a_semicolon_cannot_start_a_formula(
    admin: AdminApp,
) -> None:
    name = "Anna;=cmd|' /C calc'!A0"
    subscriber_id = _subscriber(admin, "csvinj3@example.com", name=name)
    with admin.engine.begin() as conn:
        enrollment_id = conn.execute(
            select(ENROLLMENT.c.id).where(ENROLLMENT.c.subscriber_id == subscriber_id)
        ).scalar_one()
        conn.execute(
            insert(SEND).values(
                key="csv-1", enrollment_id=enrollment_id, subscriber_id=subscriber_id,
                sequence_id="sales-process", sequence_version="v1", step_id="welcome",
                status=SendStatus.SENT, due_at=NOW, decided_at=NOW - timedelta(minutes=1),
                attempts=1, subject=f"Välkommen {name} (x;@SUM(A1)) !", reason='=1+1;"q"',
            )
        )  # fmt: skip
    answer = admin.client.get("/admin/sends.csv")
    assert answer.status_code == 200
    text = answer.text
    formulas = [cell for cell in _cells_split_at_either_separator(text) if cell.startswith(_LEADS)]
    assert formulas == []
    lines = text.splitlines()
    assert lines[0].startswith('"id","decided_at",')
    assert f',"{name}",' in lines[1]
    assert lines[1].endswith(',"\'=1+1;""q"""')  # still neutralised, now quoted too
    assert all(line.startswith('"') and line.endswith('"') for line in lines)


@pytest.mark.parametrize(
    "payload", [{"u": 10**30, "e": 0}, {"u": True, "e": 0}, {"u": 1, "e": 2**40}]
)
def test_a_signed_session_naming_no_possible_admin_is_logged_out_not_a_500(
    admin: AdminApp, payload: dict[str, object]
) -> None:
    """Only our key signs these, but the payload is still read like input."""
    from nurture.core import tokens
    from nurture.web.admin.auth import COOKIE

    cookie = tokens.sign(
        admin.settings.secret_keys, tokens.ADMIN_SESSION, payload, now=admin.clock()
    )
    client = admin.anonymous()
    client.cookies.set(COOKIE, cookie)
    answer = client.get("/admin", follow_redirects=False)
    assert answer.status_code == 303 and "/admin/login" in answer.headers["location"]
