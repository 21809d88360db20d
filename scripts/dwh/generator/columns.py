"""Vectorised CSV formatting: each column of a chunk becomes a byte matrix (one row per line,
the value right- or left-aligned, with its length per row), and `pack` lays the columns side by
side and keeps the used bytes, which gives the chunk's lines as one bytes object.

This is what ``"%d,%s\\n" % row`` does for one row, done with numpy for many rows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# "0000" .. "9999" as 4 bytes each, gathered as one uint32 per value.
_QUADS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype=np.uint32)
_POW10 = 10 ** np.arange(19, dtype=np.int64)


@dataclass(frozen=True)
class Column:
    """n values as bytes: `data` is (n, width) uint8, `lengths` the used bytes of each row
    (None: all of them); right-aligned values use the last bytes of a row, others the first."""

    data: np.ndarray
    lengths: np.ndarray | None = None
    right: bool = False

    def used(self) -> np.ndarray:
        """(n, width) bool: the bytes that belong to the value."""
        assert self.lengths is not None
        width = self.data.shape[1]
        if self.right:
            return np.arange(width) >= (width - self.lengths)[:, None]
        return np.arange(width) < self.lengths[:, None]


def number(values: np.ndarray, pad: int = 1) -> Column:
    """Non-negative integers in decimal, zero-padded to at least `pad` digits ("%0{pad}d")."""
    values = np.asarray(values, dtype=np.int64)
    n = len(values)
    top = int(values.max()) if n else 0
    if n and int(values.min()) < 0:
        raise ValueError("number() formats non-negative integers only")
    width = max(pad, len(str(top)))
    groups = -(-width // 4)
    quads = np.empty((n, groups), dtype=np.uint32)
    rest = values
    for g in range(groups - 1, -1, -1):
        rest, low = np.divmod(rest, 10_000)
        quads[:, g] = _QUADS[low]
    data = quads.view(np.uint8).reshape(n, groups * 4)[:, groups * 4 - width :]
    if width == pad:
        return Column(data)
    lengths = np.maximum(pad, 1 + np.searchsorted(_POW10[1:width], values, side="right"))
    return Column(data, lengths, right=True)


def amount(cents: np.ndarray) -> list[Column | str]:
    """Non-negative cents as "%d.%02d" of units and hundredths."""
    units, hundredths = np.divmod(np.asarray(cents, dtype=np.int64), 100)
    return [number(units), ".", number(hundredths, 2)]


def dates(days: np.ndarray) -> Column:
    """Days since 1970-01-01 as ISO dates."""
    days = np.asarray(days, dtype=np.int64)
    first = int(days.min()) if len(days) else 0
    span = np.arange(first, int(days.max()) + 1 if len(days) else 0)
    return Table(span.astype("datetime64[D]").astype(str).tolist()).take(days - first)


def _literal(text: str, n: int) -> Column:
    row = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return Column(np.broadcast_to(row, (n, len(row))))


class Table:
    """Fixed strings looked up by index (UTF-8, left-aligned in a byte matrix)."""

    def __init__(self, values: Sequence[str]):
        encoded = [v.encode("utf-8") for v in values]
        width = max((len(e) for e in encoded), default=0)
        self.lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        joined = b"".join(e.ljust(width, b"\0") for e in encoded)
        self.data = np.frombuffer(joined, dtype=np.uint8).reshape(len(encoded), width)
        self.same = len(set(self.lengths.tolist())) <= 1

    def take(self, index: np.ndarray) -> Column:
        data = self.data[index]
        return Column(data) if self.same else Column(data, self.lengths[index])


def pack(n: int, parts: Sequence[Column | str]) -> tuple[bytes, np.ndarray]:
    """n rows made of the parts (columns of n values, or texts repeated on every row), one after
    the other: the rows' bytes and each row's length in bytes."""
    columns = [_literal(p, n) if isinstance(p, str) else p for p in parts]
    width = sum(c.data.shape[1] for c in columns)
    out = np.empty((n, width), dtype=np.uint8)
    keep = None
    sizes = np.zeros(n, dtype=np.int32)
    at = 0
    for c in columns:
        w = c.data.shape[1]
        out[:, at : at + w] = c.data
        if c.lengths is None:
            sizes += w
        else:
            if keep is None:
                keep = np.ones((n, width), dtype=bool)
            keep[:, at : at + w] = c.used()
            sizes += c.lengths
        at += w
    data = out.tobytes() if keep is None else out[keep].tobytes()
    return data, sizes
