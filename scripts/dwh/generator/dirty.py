"""Defect injection for --dirty-rate, following the catalogue and rules of `dwh.defects`.

For each file, every defect class that may touch it gets
``max(1, round(rate * base_rows / number_of_classes_for_the_file))`` rows (0 when rate is 0):

- quarantine classes add *extra* rows with fresh ids (numbers after the batch's valid ones, in
  file order) that nothing references; ``missing_id`` rows have an empty key; an
  ``orphan_reference`` row references an id numbered 0 (``CUST0000``, ``PROD0000``,
  ``TXN00000``), which is never issued;
- ``exact_duplicate`` inserts a byte-identical copy of a clean row a few lines after it;
- ``conflicting_duplicate`` inserts an altered (but valid) earlier version of a clean row right
  before it, so the later line, the true row, wins;
- default classes (``bad_email``, ``category_variant``, ``stray_whitespace``) edit clean rows.
Rows used by edits and duplicates are distinct, so no row carries two defects. Injection draws
from its own random streams, so the clean rows are the same as with rate 0 for the same seed.

Category variants written by ``category_variant`` (``CATEGORY_VARIANTS``; each differs from its
canonical name even after trimming, so it is never a mere whitespace defect):

- Electronics: ``electronics``, ``ELECTRONICS``, ``Electronic``, `` electronics``,
  ``Consumer Electronics``
- Clothing: ``clothing``, ``CLOTHING``, ``Clothes``, ``Apparel``, ``clothing `` (trailing space)
- Home & Kitchen: ``home & kitchen``, ``HOME & KITCHEN``, ``Home and Kitchen``,
  `` Home and Kitchen``, ``Home&Kitchen``, ``Home/Kitchen``
- Books: ``books``, ``BOOKS``, ``Book``, `` books``
- Sports: ``sports``, ``SPORTS``, ``Sport``, ``Sports & Outdoors``, `` sport``
- Beauty: ``beauty``, ``BEAUTY``, ``Beauty & Personal Care``, ``Beauty Products``, `` beauty``
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dwh.defects import DEFECT_CLASSES, DefectClass
from dwh.generator.csvfile import Rows, line, parse

CATEGORY_VARIANTS: dict[str, tuple[str, ...]] = {
    "Electronics": (
        "electronics",
        "ELECTRONICS",
        "Electronic",
        " electronics",
        "Consumer Electronics",
    ),
    "Clothing": ("clothing", "CLOTHING", "Clothes", "Apparel", "clothing "),
    "Home & Kitchen": (
        "home & kitchen",
        "HOME & KITCHEN",
        "Home and Kitchen",
        " Home and Kitchen",
        "Home&Kitchen",
        "Home/Kitchen",
    ),
    "Books": ("books", "BOOKS", "Book", " books"),
    "Sports": ("sports", "SPORTS", "Sport", "Sports & Outdoors", " sport"),
    "Beauty": ("beauty", "BEAUTY", "Beauty & Personal Care", "Beauty Products", " beauty"),
}
VARIANT_TO_CANONICAL: dict[str, str] = {
    v: canonical for canonical, variants in CATEGORY_VARIANTS.items() for v in variants
}
# Clearly non-numeric texts ('' is not one: an empty value is a missing value).
UNPARSEABLE_NUMBERS: tuple[str, ...] = ("abc", "12,5x", "1O.50", "ten", "12.3.4", "#VALUE!")
# Dates that are invalid in every date style.
UNPARSEABLE_DATES: tuple[str, ...] = (
    "2024-13-45",
    "2025-02-30",
    "2024-00-10",
    "2023-11-31",
    "31/31/2024",
    "not a date",
)

EDIT, CONFLICT, EXTRA, DUP = 0, 1, 2, 3
_BASE_KINDS = {"exact_duplicate": DUP, "conflicting_duplicate": CONFLICT}


def file_classes(file_name: str) -> tuple[DefectClass, ...]:
    """The defect classes that may be injected into a file, in catalogue order."""
    return tuple(d for d in DEFECT_CLASSES if file_name in d.files)


class Draws:
    """Scalar random draws for the defect handlers, buffered from a numpy Generator (one numpy
    call per 4096 draws instead of one per draw). `generator` is the Generator itself."""

    def __init__(self, generator: np.random.Generator):
        self.generator = generator
        self._buffer: list[float] = []
        self._next = 0

    def random(self) -> float:
        if self._next == len(self._buffer):
            self._buffer = self.generator.random(4096).tolist()
            self._next = 0
        self._next += 1
        return self._buffer[self._next - 1]

    def integers(self, low: int, high: int) -> int:
        """An int in [low, high)."""
        return low + min(int(self.random() * (high - low)), high - low - 1)

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def choice(self, n: int, p: np.ndarray | None = None) -> int:
        """An index in [0, n), with probabilities p when given."""
        if p is None:
            return self.integers(0, n)
        cumulative = np.cumsum(p).tolist()
        return min(bisect.bisect_right(cumulative, self.random() * cumulative[-1]), n - 1)


def bad_email(email: str, rng: Draws) -> str:
    """An invalid variant of a valid email: no '@', a space, two '@', or no domain."""
    local, _, domain = email.partition("@")
    style = int(rng.integers(0, 4))
    if style == 0:
        return f"{local}.{domain}"
    if style == 1:
        return f"{local} @{domain}"
    if style == 2:
        return f"{local}@@{domain}"
    return f"{local}@"


def pad(value: str, rng: Draws) -> str:
    """The value with 1-3 stray spaces before, after or on both sides."""
    side = int(rng.integers(0, 3))
    before = " " * int(rng.integers(1, 4)) if side != 1 else ""
    after = " " * int(rng.integers(1, 4)) if side != 0 else ""
    return before + value + after


class Handler(Protocol):
    """How a file's rows are altered; fields are raw values, the result is re-quoted."""

    def edit(self, fields: list[str], cls: str) -> list[str]: ...

    def conflict(self, fields: list[str]) -> list[str]: ...

    def extra(self, anchor: list[str] | None, cls: str, number: int) -> list[str]: ...


@dataclass
class Plan:
    """Where each defect of one file goes; events are sorted by (row, kind, sequence)."""

    file_name: str
    base_rows: int
    counts: dict[str, int]
    classes: tuple[str, ...]
    ev_pos: np.ndarray
    ev_kind: np.ndarray
    ev_cls: np.ndarray
    ev_arg: np.ndarray
    dup_src: np.ndarray  # sorted rows whose copy is inserted later
    last_number: int  # highest fresh number taken by an extra row (or first_fresh - 1)

    @property
    def extra_rows(self) -> int:
        return int(np.count_nonzero(self.ev_kind == EXTRA))

    def expected(self) -> dict:
        """The pipeline's expected outcome for the file: staged = accepted + quarantined +
        duplicates."""
        quarantined: dict[str, int] = {}
        defaults: dict[str, int] = {}
        duplicates = 0
        for d in file_classes(self.file_name):
            n = self.counts[d.name]
            if d.outcome == "quarantine":
                quarantined[d.reason] = quarantined.get(d.reason, 0) + n
            elif d.outcome == "duplicate":
                duplicates += n
            else:
                defaults[d.reason] = defaults.get(d.reason, 0) + n
        return {
            "staged": self.base_rows + sum(quarantined.values()) + duplicates,
            "accepted": self.base_rows,
            "quarantined": quarantined,
            "duplicates": duplicates,
            "defaults": defaults,
        }


def make_plan(
    file_name: str,
    base_rows: int,
    rate: float,
    rng: np.random.Generator,
    first_fresh: int,
    *,
    anchored: bool,
) -> Plan:
    """Choose the rows of every defect. `anchored` files (transactions, items) build extra rows
    from a neighbouring row, so they get no extra rows when they have no rows."""
    classes = file_classes(file_name)
    names = tuple(d.name for d in classes)
    counts = dict.fromkeys(names, 0)
    if rate > 0:
        per_class = max(1, math.floor(rate * base_rows / len(classes) + 0.5))
        counts = dict.fromkeys(names, per_class)
    base_classes = [d for d in classes if d.outcome != "quarantine"]
    available = base_rows
    for d in base_classes:  # rows carry one defect at most: cap when the file is tiny
        counts[d.name] = min(counts[d.name], available)
        available -= counts[d.name]
    if anchored and base_rows == 0:
        counts = dict.fromkeys(names, 0)
    chosen = rng.choice(base_rows, size=base_rows - available, replace=False)
    pos, kind, cls, arg = [], [], [], []
    dup_src = np.zeros(0, dtype=np.int64)
    taken = 0
    for d in classes:
        code = names.index(d.name)
        n = counts[d.name]
        if d.outcome == "quarantine":
            anchors = rng.integers(0, base_rows, n) if base_rows else np.full(n, -1)
            pos.append(anchors)
            kind.append(np.full(n, EXTRA))
            arg.append(np.zeros(n, dtype=np.int64))
        else:
            rows = chosen[taken : taken + n]
            taken += n
            if d.name == "exact_duplicate":
                dup_src = np.sort(rows)
                after = np.minimum(rows + rng.integers(0, 25, n), base_rows - 1)
                pos.append(after)
                arg.append(rows)
            else:
                pos.append(rows)
                arg.append(np.zeros(n, dtype=np.int64))
            kind.append(np.full(n, _BASE_KINDS.get(d.name, EDIT)))
        cls.append(np.full(n, code))
    ev_pos = np.concatenate(pos).astype(np.int64) if pos else np.zeros(0, np.int64)
    ev_kind = np.concatenate(kind).astype(np.int8) if kind else np.zeros(0, np.int8)
    ev_cls = np.concatenate(cls).astype(np.int16) if cls else np.zeros(0, np.int16)
    ev_arg = np.concatenate(arg).astype(np.int64) if arg else np.zeros(0, np.int64)
    order = np.lexsort((np.arange(len(ev_pos)), ev_kind, ev_pos))
    ev_pos, ev_kind, ev_cls, ev_arg = ev_pos[order], ev_kind[order], ev_cls[order], ev_arg[order]
    is_extra = ev_kind == EXTRA
    ev_arg[is_extra] = first_fresh + np.arange(int(is_extra.sum()))
    return Plan(
        file_name=file_name,
        base_rows=base_rows,
        counts=counts,
        classes=names,
        ev_pos=ev_pos,
        ev_kind=ev_kind,
        ev_cls=ev_cls,
        ev_arg=ev_arg,
        dup_src=dup_src,
        last_number=first_fresh - 1 + int(is_extra.sum()),
    )


class Injector:
    """Applies a plan to consecutive chunks of a file's clean lines."""

    def __init__(self, plan: Plan, handler: Handler):
        self.plan = plan
        self.handler = handler
        self._pending: dict[int, str] = {}
        self._done = 0

    def apply(self, start: int, rows: Rows) -> Rows:
        """The chunk of clean rows start.. with its defects, ready to write (the same object
        when no defect touches it)."""
        plan = self.plan
        end = start + len(rows)
        lo_src, hi_src = (int(i) for i in np.searchsorted(plan.dup_src, [start, end]))
        lo = int(np.searchsorted(plan.ev_pos, start if start > 0 else -1))
        hi = int(np.searchsorted(plan.ev_pos, end))
        if lo == hi and lo_src == hi_src:
            return rows
        lines = rows.lines()
        for src in plan.dup_src[lo_src:hi_src].tolist():
            self._pending[src] = lines[src - start]
        inserts: dict[int, list[str]] = defaultdict(list)
        events = zip(
            plan.ev_pos[lo:hi].tolist(),
            plan.ev_kind[lo:hi].tolist(),
            plan.ev_cls[lo:hi].tolist(),
            plan.ev_arg[lo:hi].tolist(),
            strict=True,
        )
        for pos, kind, cls, arg in events:
            local = pos - start
            name = plan.classes[cls]
            if kind == EDIT:
                lines[local] = line(self.handler.edit(parse(lines[local]), name))
            elif kind == CONFLICT:
                inserts[local].append(line(self.handler.conflict(parse(lines[local]))))
            elif kind == EXTRA:
                anchor = parse(lines[local]) if pos >= 0 else None
                inserts[local + 1].append(line(self.handler.extra(anchor, name, arg)))
            else:
                inserts[local + 1].append(self._pending.pop(arg))
        self._done += hi - lo
        if not inserts:
            return Rows.of_lines(lines)
        out: list[str] = []
        prev = 0
        for slot in sorted(inserts):
            out.extend(lines[prev:slot])
            out.extend(inserts[slot])
            prev = slot
        out.extend(lines[prev:])
        return Rows.of_lines(out)

    def check_done(self) -> None:
        if self._done != len(self.plan.ev_pos) or self._pending:
            raise RuntimeError(f"defect plan of {self.plan.file_name} was not fully applied")
