"""CSV output: RFC 4180 fields (minimal quoting, "" escaping), "\\n" line ends, UTF-8, chunks of
ready-made lines (`Rows`), and a writer that counts rows and bytes and hashes the file while it
streams it in chunks (hashing and writing in a background thread, next to the formatting)."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dwh.generator.pools import quote


def line(fields: Iterable[str]) -> str:
    """One CSV line from raw field values."""
    return ",".join(quote(f) for f in fields) + "\n"


def parse(text: str) -> list[str]:
    """The raw field values of one CSV line written by `line` or a fast formatter."""
    return next(csv.reader([text]))


def money(cents: int) -> str:
    """Cents as a 2-decimal amount: 1250 → '12.50', -5 → '-0.05'."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{part:02d}"


def cents_of(text: str) -> int:
    """'12.50' → 1250 (raises ValueError on anything else than a plain decimal amount)."""
    whole, _, part = text.strip().partition(".")
    if not whole.lstrip("-").isdigit() or (part and not part.isdigit()) or len(part) > 2:
        raise ValueError(f"not an amount: {text!r}")
    value = int(whole.lstrip("-")) * 100 + int(part.ljust(2, "0") or 0)
    return -value if whole.startswith("-") else value


def day_strings(days: np.ndarray) -> list[str]:
    """Days since 1970-01-01 → ISO dates."""
    return np.asarray(days, dtype="datetime64[D]").astype(str).tolist()


@dataclass(frozen=True)
class Rows:
    """A chunk of CSV lines: their UTF-8 bytes, one after the other, and each line's length."""

    data: bytes
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.sizes)

    def lines(self) -> list[str]:
        ends = np.cumsum(self.sizes, dtype=np.int64).tolist()
        starts = [0, *ends][:-1]
        return [self.data[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)]

    @classmethod
    def of_lines(cls, lines: list[str]) -> Rows:
        text = "".join(lines)
        data = text.encode("utf-8")
        if len(data) == len(text):  # ASCII: a character is a byte
            return cls(data, np.array([len(s) for s in lines], dtype=np.int32))
        return cls(data, np.array([len(s.encode("utf-8")) for s in lines], dtype=np.int32))


class CsvWriter:
    """Writes the header, then chunks of lines; `close` returns rows, sha256, bytes.

    A chunk is hashed and written by a background thread (both release the GIL) while the
    caller prepares the next one; at most one chunk waits, and its error is raised by the next
    `write` or by `close`."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csv-writer")
        self._pending: Future[None] | None = None
        self.rows = 0
        self.bytes = 0
        self._put((",".join(columns) + "\n").encode("utf-8"))

    def _store(self, data: bytes) -> None:
        self._sha.update(data)
        self._file.write(data)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _put(self, data: bytes) -> None:
        self._wait()
        self._pending = self._thread.submit(self._store, data)
        self.bytes += len(data)

    def write(self, rows: Rows) -> None:
        if len(rows):
            self._put(rows.data)
            self.rows += len(rows)

    def close(self) -> dict[str, Any]:
        try:
            self._wait()
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._thread.shutdown()
            self._file.close()
        return {"rows": self.rows, "sha256": self._sha.hexdigest(), "bytes": self.bytes}

    def abort(self) -> None:
        self._thread.shutdown()  # a chunk being written ends first
        self._file.close()
