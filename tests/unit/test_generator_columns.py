"""Unit tests of the generator's fast paths: the vectorised CSV formatting
(`dwh.generator.columns`) and the line chunks it produces (`csvfile.Rows`) give the bytes of
Python's own formatting, the guided search gives numpy's searchsorted, and the ordered worker
jobs (`dwh.generator.workers`) keep the job order."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from dwh.generator import columns, workers
from dwh.generator.csvfile import Rows, money
from dwh.generator.orders import Guided


def _values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    edges = [0, 1, 9, 10, 99, 100, 9_999, 10_000, 99_999, 123_456_789, 10**15]
    return np.concatenate([edges, rng.integers(0, 10 ** rng.integers(1, 16, 500))])


@pytest.mark.parametrize("pad", [1, 2, 3, 5, 7, 9])
def test_numbers_and_amounts_format_like_python(pad: int) -> None:
    values = _values(pad)
    data, sizes = columns.pack(
        len(values), ["X", columns.number(values, pad), ",", *columns.amount(values), "\n"]
    )
    expected = [f"X{v:0{pad}d},{money(v)}\n" for v in values.tolist()]
    assert data.decode() == "".join(expected)
    assert sizes.tolist() == [len(e) for e in expected]


def test_negative_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        columns.number(np.array([3, -1]))


def test_tables_dates_and_utf8() -> None:
    texts = ["a", "", 'Zoë, "quoted"', "xyz"]
    rng = np.random.default_rng(1)
    index = rng.integers(0, len(texts), 200)
    days = rng.integers(-1000, 30_000, 200)
    data, sizes = columns.pack(
        200, ["[", columns.Table(texts).take(index), "|", columns.dates(days), "]\n"]
    )
    epoch = dt.date(1970, 1, 1)
    expected = [
        f"[{texts[i]}|{epoch + dt.timedelta(days=d)}]\n"
        for i, d in zip(index.tolist(), days.tolist(), strict=True)
    ]
    assert data.decode() == "".join(expected)
    assert sizes.tolist() == [len(e.encode()) for e in expected]
    assert Rows(data, sizes).lines() == expected


def test_no_rows_give_no_bytes() -> None:
    empty = np.zeros(0, dtype=np.int64)
    parts = ["a", columns.number(empty), columns.Table(["x", "yy"]).take(empty)]
    data, sizes = columns.pack(0, [*parts, columns.dates(empty), *columns.amount(empty)])
    assert data == b"" and len(sizes) == 0


def test_rows_of_lines_round_trip() -> None:
    for lines in ([], ["a,b\n", "c\n"], ["é,ü\n", "\n", "x\n"]):
        rows = Rows.of_lines(lines)
        assert len(rows) == len(lines)
        assert rows.data == "".join(lines).encode()
        assert rows.lines() == lines


@pytest.mark.parametrize("size", [1, 2, 7, 5000])
def test_guided_search_equals_searchsorted(size: int, monkeypatch) -> None:
    monkeypatch.setattr(Guided, "PLAIN_MAX", 0)  # the guided search even on short arrays
    rng = np.random.default_rng(size)
    cum = np.cumsum(np.exp(1.5 * rng.standard_normal(size)))
    x = np.concatenate([rng.random(20_000) * cum[-1], [0.0], cum, np.nextafter(cum, 0)])
    assert np.array_equal(Guided(cum).find(x), np.searchsorted(cum, x, side="right"))


def _square(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x * x


@pytest.mark.parametrize("count", [0, 1, 3])
def test_ordered_jobs_keep_the_job_order(count: int) -> None:
    jobs = list(range(40))
    with workers.OrderedJobs(_square, jobs, count) as results:
        assert list(results) == [x * x for x in jobs]


def test_ordered_jobs_raise_a_worker_error() -> None:
    with (
        workers.OrderedJobs(_square, [1, 2, -3, 4], 2) as results,
        pytest.raises(ValueError, match="negative"),
    ):
        list(results)
