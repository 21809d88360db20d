"""CSV output: RFC 4180 fields (minimal quoting, "" escaping), "\\n" line ends, UTF-8, and a
writer that counts rows and bytes and hashes the file while it streams it in chunks."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable
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


def split_cents(cents: np.ndarray) -> tuple[list[int], list[int]]:
    """Non-negative cents → (whole units, hundredths) as lists, for '%d.%02d' formatting."""
    whole, part = np.divmod(cents, 100)
    return whole.tolist(), part.tolist()


def day_strings(days: np.ndarray) -> list[str]:
    """Days since 1970-01-01 → ISO dates."""
    return np.asarray(days, dtype="datetime64[D]").astype(str).tolist()


class CsvWriter:
    """Writes the header, then chunks of ready-made lines; `close` returns rows, sha256, bytes."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self.rows = 0
        self.bytes = 0
        self._put(",".join(columns) + "\n")

    def _put(self, text: str) -> None:
        data = text.encode("utf-8")
        self._sha.update(data)
        self._file.write(data)
        self.bytes += len(data)

    def write(self, lines: list[str]) -> None:
        if lines:
            self._put("".join(lines))
            self.rows += len(lines)

    def close(self) -> dict[str, Any]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"rows": self.rows, "sha256": self._sha.hexdigest(), "bytes": self.bytes}

    def abort(self) -> None:
        self._file.close()
