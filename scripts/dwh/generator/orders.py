"""Transactions and their order lines, generated in blocks and written in chunks.

Each block (one day, or part of a very busy day) draws from its own random stream derived from
(seed, batch number, day, part), so the data does not depend on the chunk size, and the number
of order lines can be counted up front cheaply (it is a block's first draw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dwh.contract import DISCOUNTS, PAYMENT_METHODS
from dwh.generator.columns import Table, amount, dates, number, pack
from dwh.generator.csvfile import Rows, money
from dwh.generator.dirty import UNPARSEABLE_DATES, UNPARSEABLE_NUMBERS, Draws
from dwh.generator.entities import CustomerBook, ProductBook, entity_id, from_epoch
from dwh.generator.pools import (
    DISCOUNT_P,
    HOUR_P,
    MONTH_W,
    PAYMENT_P,
    QUANTITY_P,
    WEEKDAY_W,
    Pools,
)

BLOCK_MAX = 50_000  # transactions per block at most (a block's arrays are held at once)
AWAY_SHARE = 0.12  # orders shipped elsewhere than the customer's home
_DISCOUNTS = np.array(DISCOUNTS, dtype=np.int64)


def item_p(max_items: int) -> np.ndarray:
    """Order lines per transaction, 1..max_items, fewer more likely."""
    w = 0.7 ** np.arange(max(1, max_items))
    return w / w.sum()


def day_weights(days: np.ndarray) -> np.ndarray:
    """Relative order volume per day: weekends busier, Nov/Dec peak, slow growth."""
    dates = days.astype("datetime64[D]")
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    month = dates.astype("datetime64[M]").astype(np.int64) % 12
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    w = WEEKDAY_W[weekday] * MONTH_W[month]
    w = w * np.where((month == 10) & (dom >= 24), 1.5, 1.0)  # Black Friday week
    w = w * np.where((month == 11) & (dom <= 20), 1.2, 1.0)  # Christmas shopping
    w = w * np.where((month == 11) & (dom >= 25), 0.7, 1.0)
    return w * (1.0 + 0.25 * (days - days[0]) / 365.0)


@dataclass(frozen=True)
class Block:
    day: int
    part: int
    size: int


def plan_blocks(days: np.ndarray, counts: np.ndarray) -> list[Block]:
    blocks = []
    for day, n in zip(days.tolist(), counts.tolist(), strict=True):
        parts = -(-n // BLOCK_MAX)
        for part in range(parts):
            blocks.append(Block(day, part, n * (part + 1) // parts - n * part // parts))
    return blocks


@dataclass(frozen=True)
class Chunk:
    """Consecutive blocks formatted together; rows count from 0 in the batch's files."""

    blocks: tuple[Block, ...]
    txn_row: int
    item_row: int
    txns: int
    items: int


def _cdf(p: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(p)
    return cdf / cdf[-1]


def _pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn with the probabilities of `cdf`: rng.choice(len(cdf), n, p=p), the same
    draws without its per-call checks."""
    return cdf.searchsorted(rng.random(n), side="right")


class Guided:
    """``np.searchsorted(cum, x, side="right")`` for many x at once, with the same results.

    On a long array (beyond the CPU's fast caches) plain binary searches are slow; there a guide
    table, where each of len(cum) equal slices of [0, cum[-1]) starts in cum, narrows each
    search to a few entries, which is about three times faster."""

    PLAIN_MAX = 65_536  # entries up to which plain searchsorted is the faster

    def __init__(self, cum: np.ndarray):
        self.cum = cum
        self.slices = len(cum)
        self.scale = self.slices / cum[-1]
        if self.slices > self.PLAIN_MAX:
            edges = np.arange(self.slices + 2) / self.scale
            self.guide = np.searchsorted(cum, edges, side="right")

    def find(self, x: np.ndarray) -> np.ndarray:
        if self.slices <= self.PLAIN_MAX:
            return np.searchsorted(self.cum, x, side="right")
        # x lies in slice b, give or take one for rounding: its answer is between the guide's
        # entries of slices b - 1 and b + 2; a binary search of all of them at once finds it.
        b = np.minimum((x * self.scale).astype(np.int64), self.slices)
        lo = self.guide[np.maximum(b - 1, 0)]
        hi = self.guide[np.minimum(b + 2, self.slices + 1)]
        last = len(self.cum) - 1
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) >> 1
            right = self.cum[np.minimum(mid, last)] <= x
            lo = np.where(open_ & right, mid + 1, lo)
            hi = np.where(open_ & ~right, mid, hi)


_HOUR_CDF = _cdf(HOUR_P)
_PAYMENT_CDF = _cdf(PAYMENT_P)
_QUANTITY_CDF = _cdf(QUANTITY_P)
_DISCOUNT_CDF = _cdf(DISCOUNT_P)


class OrderGenerator:
    """Draws blocks of transactions and formats them with their order lines."""

    def __init__(
        self,
        *,
        seed: int,
        batch_number: int,
        max_items: int,
        customers: CustomerBook,
        products: ProductBook,
        pools: Pools,
        first_txn: int,
        first_item: int,
    ):
        self.seed, self.batch_number = seed, batch_number
        self.first_txn, self.first_item = first_txn, first_item
        self.items_v = np.arange(1, max(1, max_items) + 1)
        self.items_cdf = _cdf(item_p(max_items))
        self.customers, self.products, self.pools = customers, products, pools
        self.customer_w, self.product_w = Guided(customers.cum_w), Guided(products.cum_w)
        self.streets = Table(pools.street_in)
        self.cities = Table(customers.loc_city_in.tolist())
        self.abbrs = Table(customers.loc_abbr.tolist())
        self.pay = Table(PAYMENT_METHODS)
        self.widths: dict[str, int] = {}

    def set_widths(self, w: dict[str, int]) -> None:
        """The id widths; needed before formatting."""
        self.widths = dict(w)

    def _rng(self, block: Block) -> np.random.Generator:
        return np.random.default_rng(
            [self.seed, self.batch_number, 11, block.day + 10**6, block.part]
        )

    def item_counts(self, block: Block, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self._rng(block)
        return self.items_v[_pick(rng, self.items_cdf, block.size)]

    def plan(self, blocks: list[Block], chunk_rows: int) -> list[Chunk]:
        """Consecutive blocks grouped into chunks of about chunk_rows order lines (the last
        may be smaller), with the rows each chunk starts at."""
        chunks: list[Chunk] = []
        pending: list[Block] = []
        txns = items = txn_row = item_row = 0
        for i, block in enumerate(blocks):
            if block.size:
                pending.append(block)
                txns += block.size
                items += int(self.item_counts(block).sum())
            if pending and (items >= chunk_rows or i == len(blocks) - 1):
                chunks.append(Chunk(tuple(pending), txn_row, item_row, txns, items))
                txn_row, item_row = txn_row + txns, item_row + items
                pending, txns, items = [], 0, 0
        return chunks

    def draw(self, block: Block) -> dict[str, np.ndarray]:
        """One block's transactions (sorted by time) and order lines, as arrays."""
        rng = self._rng(block)
        n = block.size
        counts = self.item_counts(block, rng)
        secs = np.sort(_pick(rng, _HOUR_CDF, n) * 3600 + rng.integers(0, 3600, n))
        c = self.customers
        k = int(np.searchsorted(c.reg_days, block.day, side="right"))
        if k == 0:
            raise RuntimeError(f"no customer is registered on day {from_epoch(block.day)}")
        ci = self.customer_w.find(rng.random(n) * c.cum_w[k - 1])
        ci = np.minimum(ci, k - 1)
        pay = _pick(rng, _PAYMENT_CDF, n)
        away = rng.random(n) < AWAY_SHARE
        alt_loc = rng.integers(0, len(c.loc_city_in), n)
        alt_street = rng.integers(0, len(self.streets.lengths), n)
        alt_bnum = rng.integers(1, 5000, n)
        alt_span = c.loc_zip_hi[alt_loc] - c.loc_zip_lo[alt_loc] + 1
        alt_zip = c.loc_zip_lo[alt_loc] + np.floor(rng.random(n) * alt_span).astype(np.int64)
        # order lines
        m = int(counts.sum())
        txn_of = np.repeat(np.arange(n), counts)
        p = self.products
        cum, top = p.cum_w, len(p.cum_w) - 1
        prod = np.minimum(self.product_w.find(rng.random(m) * cum[-1]), top)
        for _ in range(3):  # the same product twice in one order is redrawn (where possible)
            key = txn_of * (top + 1) + prod
            order = np.argsort(key, kind="stable")
            again = np.zeros(m, dtype=bool)
            again[order[1:][key[order][1:] == key[order][:-1]]] = True
            if not again.any():
                break
            redraw = rng.random(int(again.sum())) * cum[-1]
            prod[again] = np.minimum(self.product_w.find(redraw), top)
        qty = _pick(rng, _QUANTITY_CDF, m) + 1
        disc = _DISCOUNTS[_pick(rng, _DISCOUNT_CDF, m)]
        line = (qty * p.price[prod] * (100 - disc) + 50) // 100  # cents, half up
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, np.int64)
        total = np.add.reduceat(line, starts) if m else np.zeros(0, np.int64)
        return {
            "day": np.full(n, block.day),
            "counts": counts,
            "secs": secs,
            "cust": c.numbers[ci],
            "pay": pay,
            "bnum": np.where(away, alt_bnum, c.bnum[ci]),
            "street": np.where(away, alt_street, c.street[ci]),
            "loc": np.where(away, alt_loc, c.loc[ci]),
            "zip": np.where(away, alt_zip, c.zip[ci]),
            "total": total,
            "prod": prod,
            "qty": qty,
            "disc": disc,
            "line": line,
        }

    def rows(self, chunk: Chunk) -> tuple[Rows, Rows]:
        """The CSV lines of a chunk's transactions and of its order lines."""
        parts = [self.draw(block) for block in chunk.blocks]
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._format(arrays, chunk.txn_row, chunk.item_row)

    def _format(self, a: dict[str, np.ndarray], txn_row: int, item_row: int) -> tuple[Rows, Rows]:
        """CSV lines of a chunk's transactions and order lines."""
        w, n, m = self.widths, len(a["secs"]), len(a["line"])
        txn_no = np.arange(self.first_txn + txn_row, self.first_txn + txn_row + n)
        hour, minute = np.divmod(a["secs"], 3600)
        minute, second = np.divmod(minute, 60)
        loc = a["loc"]
        txn = pack(
            n,
            [
                "TXN", number(txn_no, w["transaction"]),
                ",CUST", number(a["cust"], w["customer"]),
                ",", dates(a["day"]),
                ",", number(hour, 2), ":", number(minute, 2), ":", number(second, 2),
                ",", self.pay.take(a["pay"]),
                ',"', number(a["bnum"]), " ", self.streets.take(a["street"]),
                ", ", self.cities.take(loc), ", ", self.abbrs.take(loc),
                " ", number(a["zip"], 5),
                '",', *amount(a["total"]), "\n",
            ],
        )  # fmt: skip
        p = self.products
        prod = a["prod"]
        items = pack(
            m,
            [
                "ITEM", number(np.arange(m) + self.first_item + item_row, w["item"]),
                ",TXN", number(np.repeat(txn_no, a["counts"]), w["transaction"]),
                ",PROD", number(p.numbers[prod], w["product"]),
                ",", number(a["qty"]),
                ",", *amount(p.price[prod]),
                ",", number(a["disc"]),
                ",", *amount(a["line"]), "\n",
            ],
        )  # fmt: skip
        return Rows(*txn), Rows(*items)


class TransactionDefects:
    """Defect handler of transactions.csv: extra rows built from a neighbouring transaction."""

    def __init__(self, rng: np.random.Generator, widths: dict[str, int], business_day: int):
        self.rng, self.widths, self.business_day = Draws(rng), widths, business_day

    def edit(self, fields: list[str], cls: str) -> list[str]:  # no default-class defects
        raise AssertionError(cls)

    conflict = edit

    def extra(self, anchor: list[str] | None, cls: str, number: int) -> list[str]:
        assert anchor is not None
        rng, fields = self.rng, list(anchor)
        fields[0] = (
            "" if cls == "missing_id" else entity_id("TXN", number, self.widths["transaction"])
        )
        hour, minute, second = rng.integers(0, 24), rng.integers(0, 60), rng.integers(0, 60)
        fields[3] = f"{hour:02d}:{minute:02d}:{second:02d}"
        fields[4] = PAYMENT_METHODS[int(rng.integers(0, len(PAYMENT_METHODS)))]
        if cls == "unparseable_date":
            fields[2] = UNPARSEABLE_DATES[int(rng.integers(0, len(UNPARSEABLE_DATES)))]
        elif cls == "future_date":
            fields[2] = from_epoch(self.business_day + int(rng.integers(1, 31))).isoformat()
        elif cls == "orphan_reference":
            fields[1] = entity_id("CUST", 0, self.widths["customer"])
        return fields


class ItemDefects:
    """Defect handler of transaction_items.csv: extra lines of a neighbouring transaction."""

    def __init__(self, rng: np.random.Generator, widths: dict[str, int], products: ProductBook):
        self.rng, self.widths, self.products = Draws(rng), widths, products

    def edit(self, fields: list[str], cls: str) -> list[str]:  # no default-class defects
        raise AssertionError(cls)

    conflict = edit

    def extra(self, anchor: list[str] | None, cls: str, number: int) -> list[str]:
        assert anchor is not None
        rng, w = self.rng, self.widths
        i = int(rng.integers(0, len(self.products.numbers)))
        price = int(self.products.price[i])
        qty = int(rng.integers(1, 6))
        disc = int(_DISCOUNTS[int(rng.integers(0, len(_DISCOUNTS)))])
        if cls == "negative_quantity":
            qty = -int(rng.integers(0, 4))
        exact = abs(qty) * price * (100 - disc)
        line = (exact + 50) // 100 * (1 if qty >= 0 else -1)  # half away from zero
        fields = [
            "" if cls == "missing_id" else entity_id("ITEM", number, w["item"]),
            anchor[1],
            entity_id("PROD", int(self.products.numbers[i]), w["product"]),
            str(qty),
            money(price),
            str(disc),
            money(line),
        ]
        if cls == "unparseable_number":
            bad = UNPARSEABLE_NUMBERS[int(rng.integers(0, len(UNPARSEABLE_NUMBERS)))]
            fields[3 if rng.random() < 0.5 else 4] = bad
        elif cls == "orphan_reference":
            if rng.random() < 0.5:
                fields[1] = entity_id("TXN", 0, w["transaction"])
            else:
                fields[2] = entity_id("PROD", 0, w["product"])
        elif cls == "line_total_mismatch":
            delta = int(rng.integers(5, 500))
            fields[6] = money(
                line - delta if line - delta > 0 and rng.random() < 0.5 else line + delta
            )
        return fields
