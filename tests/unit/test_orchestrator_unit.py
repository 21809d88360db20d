"""Stage selection, transient-error classification and back-off (no database)."""

from __future__ import annotations

import psycopg2
import pytest

from dwh.exceptions import BadInputError, ConfigError, DatabaseUnavailable
from dwh.orchestrator import STAGES, backoff_delay, is_transient, select_stages


def test_select_stages_keeps_pipeline_order() -> None:
    assert select_stages() == STAGES
    assert select_stages(list(reversed(STAGES[:2]))) == STAGES[:2]
    assert select_stages(start=STAGES[1]) == STAGES[1:]
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        select_stages(["nope"])


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (psycopg2.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg2.InterfaceError("connection already closed"), True),
        (DatabaseUnavailable("cannot connect"), True),
        (BadInputError("bad file"), False),
        (ValueError("bug"), False),
        (psycopg2.ProgrammingError("syntax error"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_is_transient_by_sqlstate() -> None:
    class Fake(psycopg2.DatabaseError):
        pgcode = None

    for code, expected in [
        ("40001", True),
        ("40P01", True),
        ("57P01", True),
        ("23505", False),
        ("42601", False),
    ]:
        err = Fake("x")
        err.pgcode = code
        assert is_transient(err) is expected, code


def test_backoff_is_exponential_capped_and_jittered() -> None:
    top = lambda: 1.0  # noqa: E731 - the upper end of the jitter
    assert [backoff_delay(n, 1.0, 30.0, top) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert backoff_delay(3, 1.0, 30.0, lambda: 0.5) == 2.0
    assert backoff_delay(1, 1.0, 30.0, lambda: 0.0) == 0.0
