"""``nurture doctor``'s PostgreSQL maintenance check, as it reads the setting."""

from __future__ import annotations

from nurture.ops.doctor import autovacuum_check


def test_autovacuum_off_is_a_warning_that_says_how_to_turn_it_on() -> None:
    check = autovacuum_check(False)
    assert check is not None
    assert (check.name, check.status) == ("database maintenance", "warn")
    assert "autovacuum is off" in check.detail
    assert check.fix is not None and "autovacuum = on" in check.fix


def test_autovacuum_on_is_fine_and_sqlite_has_no_such_check() -> None:
    check = autovacuum_check(True)
    assert check is not None and check.status == "ok" and check.fix is None
    assert autovacuum_check(None) is None
