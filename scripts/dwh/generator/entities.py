"""Customers and products: rows of new ones, the state left by earlier batches, changed rows of
a next batch, the "books" orders are drawn from, and the defect handlers of both files."""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faker.providers.address.en_US import Provider as _UsAddress

from dwh.contract import AGE_GROUPS, CATEGORIES, CUSTOMERS, PRODUCTS
from dwh.exceptions import BadInputError
from dwh.generator import columns
from dwh.generator.csvfile import Rows, cents_of, money
from dwh.generator.dirty import (
    CATEGORY_VARIANTS,
    UNPARSEABLE_NUMBERS,
    VARIANT_TO_CANONICAL,
    Draws,
    bad_email,
    pad,
)
from dwh.generator.pools import (
    AGE_P,
    CATEGORY_P,
    CATEGORY_PRICE,
    STATE_ABBR,
    STATES,
    SUB_CATEGORIES,
    Pools,
    email_part,
    quote,
)

EPOCH = dt.date(1970, 1, 1)
SUPPLIERS = 40
_M64 = (1 << 64) - 1
_ZIP = {abbr: _UsAddress.states_postcode.get(abbr, (10000, 99999)) for _, abbr, _ in STATES}
_EMAIL_OK = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Flattened sub-categories and product nouns.
_SUBS = [(c, s, nouns) for c, subs in SUB_CATEGORIES.items() for s, nouns in subs.items()]
SUB_NAMES = [s for _, s, _ in _SUBS]
SUB_CAT = np.array([CATEGORIES.index(c) for c, _, _ in _SUBS])
_SUB_FIRST = np.array([int(np.argmax(i == SUB_CAT)) for i in range(len(CATEGORIES))])
_SUB_COUNT = np.bincount(SUB_CAT, minlength=len(CATEGORIES))
NOUNS = [n for _, _, nouns in _SUBS for n in nouns]
_NOUN_FIRST = np.cumsum([0] + [len(n) for _, _, n in _SUBS])[:-1]
_NOUN_COUNT = np.array([len(n) for _, _, n in _SUBS])


def epoch_day(day: dt.date) -> int:
    return (day - EPOCH).days


def from_epoch(days: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(days))


def hash_u64(values: np.ndarray, seed: int, tag: int) -> np.ndarray:
    """splitmix64 of (value, seed, tag): stable per-entity randomness across batches."""
    salt = np.uint64((seed * 0x9E3779B97F4A7C15 + tag * 0xD1B54A32D192ED03) & _M64)
    z = np.asarray(values, dtype=np.uint64) + salt
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _unit(values: np.ndarray, seed: int, tag: int) -> np.ndarray:
    return ((hash_u64(values, seed, tag) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def popularity(numbers: np.ndarray, seed: int, tag: int, sigma: float) -> np.ndarray:
    """Log-normal weights per entity number (a minority carries most of the orders)."""
    u1, u2 = _unit(numbers, seed, tag), _unit(numbers, seed, tag + 1)
    return np.exp(sigma * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))


def entity_id(prefix: str, number: int, width: int) -> str:
    return f"{prefix}{number:0{width}d}"


def _obj(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object)


# ----------------------------------------------------------------------------- customers


def _texts(pools: Pools) -> dict[str, columns.Table]:
    """The pools' texts of a customer row, as lookup tables."""
    texts = {
        "first_q": pools.first_q,
        "last_q": pools.last_q,
        "first_email": pools.first_email,
        "last_email": pools.last_email,
        "domains": pools.domains,
        "city_q": [quote(c) for c in pools.loc_city],
        "state": [STATES[i][0] for i in pools.loc_state],
        "age": list(AGE_GROUPS),
    }
    return {name: columns.Table(values) for name, values in texts.items()}


@dataclass
class CustomerRows:
    """New customers as arrays (indices into the pools), formatted in slices."""

    numbers: np.ndarray
    first: np.ndarray
    last: np.ndarray
    domain: np.ndarray
    phone: np.ndarray  # (n, 3): area, exchange, line
    reg_days: np.ndarray
    loc: np.ndarray  # index into pools.loc_*
    age: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)

    def rows(self, pools: Pools, width: int, lo: int = 0, hi: int | None = None) -> Rows:
        s = slice(lo, hi)
        first, last, loc, numbers = self.first[s], self.last[s], self.loc[s], self.numbers[s]
        area, exchange, subscriber = self.phone[s].T
        text = _texts(pools)
        number = columns.number
        return Rows(
            *columns.pack(
                len(numbers),
                [
                    "CUST", number(numbers, width),
                    ",", text["first_q"].take(first), ",", text["last_q"].take(last),
                    ",", text["first_email"].take(first), ".", text["last_email"].take(last),
                    number(numbers), "@", text["domains"].take(self.domain[s]),
                    ",", number(area, 3), "-", number(exchange, 3), "-", number(subscriber, 4),
                    ",", columns.dates(self.reg_days[s]),
                    ",", text["city_q"].take(loc), ",", text["state"].take(loc),
                    ",USA,", text["age"].take(self.age[s]), "\n",
                ],
            )
        )  # fmt: skip

    def city_state(self, pools: Pools) -> tuple[list[str], list[str]]:
        cities = [pools.loc_city[i] for i in self.loc.tolist()]
        states = [STATES[pools.loc_state[i]][0] for i in self.loc.tolist()]
        return cities, states


def draw_phones(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack(
        [rng.integers(201, 990, n), rng.integers(200, 1000, n), rng.integers(0, 10000, n)], axis=1
    ).astype(np.int16)


def draw_customers(
    rng: np.random.Generator, numbers: np.ndarray, reg_days: np.ndarray, pools: Pools
) -> CustomerRows:
    n = len(numbers)
    # small integer types: at large scales these arrays are a good part of the memory used
    return CustomerRows(
        numbers=numbers,
        first=rng.integers(0, len(pools.first), n).astype(np.int32),
        last=rng.integers(0, len(pools.last), n).astype(np.int32),
        domain=rng.choice(len(pools.domains), size=n, p=pools.domain_p).astype(np.int8),
        phone=draw_phones(rng, n),
        reg_days=np.asarray(reg_days, dtype=np.int32),
        loc=rng.integers(0, len(pools.loc_city), n).astype(np.int32),
        age=rng.choice(len(AGE_GROUPS), size=n, p=AGE_P).astype(np.int8),
    )


def history_registrations(rng: np.random.Generator, n: int, start: int, end: int) -> np.ndarray:
    """Sorted registration days: ~30% in the 3 years before start, the rest growing to end."""
    before = min(n, max(1, round(0.3 * n)))
    early = start - 1 - np.floor(rng.random(before) * 1095).astype(np.int64)
    late = start + np.floor((end - start + 1) * rng.random(n - before) ** 0.8).astype(np.int64)
    return np.sort(np.concatenate([early, late]))


@dataclass
class CustomerBook:
    """Every customer an order may come from, sorted by registration day (then number)."""

    numbers: np.ndarray
    reg_days: np.ndarray
    cum_w: np.ndarray
    loc: np.ndarray
    bnum: np.ndarray
    street: np.ndarray
    zip: np.ndarray
    loc_city_in: np.ndarray  # city per location, escaped for a quoted field
    loc_abbr: np.ndarray
    loc_zip_lo: np.ndarray
    loc_zip_hi: np.ndarray


def customer_book(
    numbers: np.ndarray,
    reg_days: np.ndarray,
    loc: np.ndarray,
    loc_city: list[str],
    loc_state: list[str],
    seed: int,
    streets: int,
) -> CustomerBook:
    order = np.lexsort((numbers, reg_days))
    numbers, reg_days, loc = numbers[order], reg_days[order], loc[order]
    abbr = [STATE_ABBR.get(s, s) for s in loc_state]
    zip_lo = np.array([_ZIP.get(a, (10000, 99999))[0] for a in abbr], dtype=np.int64)
    zip_hi = np.array([_ZIP.get(a, (10000, 99999))[1] for a in abbr], dtype=np.int64)
    h = hash_u64(numbers, seed, 21)
    span = (zip_hi - zip_lo + 1)[loc].astype(np.uint64)
    return CustomerBook(
        numbers=numbers,
        reg_days=reg_days.astype(np.int32),
        cum_w=np.cumsum(popularity(numbers, seed, 11, 1.5)),
        loc=loc.astype(np.int32),
        bnum=(np.uint64(1) + h % np.uint64(4999)).astype(np.int32),
        street=((h >> np.uint64(16)) % np.uint64(streets)).astype(np.int32),
        zip=(zip_lo[loc] + ((h >> np.uint64(32)) % span).astype(np.int64)).astype(np.int32),
        loc_city_in=_obj([c.replace('"', '""') for c in loc_city]),
        loc_abbr=_obj(abbr),
        loc_zip_lo=zip_lo,
        loc_zip_hi=zip_hi,
    )


class CustomerDefects:
    """Defect handler of customers.csv."""

    def __init__(self, pools: Pools, rng: np.random.Generator, width: int, days: tuple[int, int]):
        self.pools, self.rng, self.width, self.days = pools, Draws(rng), width, days

    def _phone(self) -> str:
        a, b, c = (
            self.rng.integers(201, 990),
            self.rng.integers(200, 1000),
            self.rng.integers(0, 10000),
        )
        return f"{a:03d}-{b:03d}-{c:04d}"

    def _location(self) -> tuple[str, str]:
        i = int(self.rng.integers(0, len(self.pools.loc_city)))
        return self.pools.loc_city[i], STATES[self.pools.loc_state[i]][0]

    def edit(self, fields: list[str], cls: str) -> list[str]:
        if cls == "bad_email":
            fields[3] = bad_email(fields[3], self.rng)
        else:  # stray_whitespace on first_name, last_name and/or city
            which = int(self.rng.integers(1, 8))
            for bit, col in enumerate((1, 2, 6)):
                if which >> bit & 1:
                    fields[col] = pad(fields[col], self.rng)
        return fields

    def conflict(self, fields: list[str]) -> list[str]:
        old = list(fields)
        while fields[4] == old[4]:
            fields[4] = self._phone()
        fields[6], fields[7] = self._location()
        return fields

    def extra(self, anchor: list[str] | None, cls: str, number: int) -> list[str]:
        p, rng = self.pools, self.rng
        f, la = int(rng.integers(0, len(p.first))), int(rng.integers(0, len(p.last)))
        domain = p.domains[int(rng.choice(len(p.domains), p=p.domain_p))]
        city, state = self._location()
        day = int(rng.integers(self.days[0], self.days[1] + 1))
        return [
            "" if cls == "missing_id" else entity_id("CUST", number, self.width),
            p.first[f],
            p.last[la],
            f"{p.first_email[f]}.{p.last_email[la]}{number}@{domain}",
            self._phone(),
            from_epoch(day).isoformat(),
            city,
            state,
            "USA",
            AGE_GROUPS[int(rng.choice(len(AGE_GROUPS), p=AGE_P))],
        ]


def change_customers(
    state: dict[int, list[str]],
    rng: np.random.Generator,
    count: int,
    pools: Pools,
    batch_number: int,
) -> list[list[str]]:
    """Re-sent customers (as full rows, by id): moved city/state, a new email, or both."""
    existing = np.array(sorted(state), dtype=np.int64)
    chosen = np.sort(rng.choice(existing, size=min(count, len(existing)), replace=False))
    rows = []
    for number in chosen.tolist():
        fields = list(state[number])
        mode = int(rng.integers(0, 3))  # 0 moved, 1 new email, 2 both
        if mode != 1:
            while True:
                i = int(rng.integers(0, len(pools.loc_city)))
                city, st = pools.loc_city[i], STATES[pools.loc_state[i]][0]
                if (city, st) != (fields[6], fields[7]):
                    break
            fields[6], fields[7] = city, st
        if mode != 0 or not _EMAIL_OK.match(fields[3]):
            domain = pools.domains[int(rng.choice(len(pools.domains), p=pools.domain_p))]
            local = f"{email_part(fields[1])}.{email_part(fields[2])}{number}.{batch_number}"
            fields[3] = f"{local}@{domain}"
        rows.append(fields)
    return rows


# ----------------------------------------------------------------------------- products


@dataclass
class ProductRows:
    """New products as arrays, formatted in slices."""

    numbers: np.ndarray
    sub: np.ndarray  # index into SUB_NAMES (gives the category)
    noun: np.ndarray  # index into NOUNS
    brand: np.ndarray
    word: np.ndarray
    price: np.ndarray  # cents
    cost: np.ndarray  # cents, below price
    stock: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)

    def lines(self, pools: Pools, width: int, lo: int = 0, hi: int | None = None) -> list[str]:
        s = slice(lo, hi)
        brand = self.brand[s]
        names = zip(
            _obj(pools.brands)[brand].tolist(),
            _obj(pools.words)[self.word[s]].tolist(),
            _obj(NOUNS)[self.noun[s]].tolist(),
            strict=True,
        )
        price_w, price_c = np.divmod(self.price[s], 100)
        cost_w, cost_c = np.divmod(self.cost[s], 100)
        fmt = f"PROD%0{width}d,%s,%s,%s,%d.%02d,%d.%02d,%s,%d,SUP%03d\n"
        rows = zip(
            self.numbers[s].tolist(),
            [quote(f"{b} {w} {n}") for b, w, n in names],
            _obj([quote(c) for c in CATEGORIES])[SUB_CAT[self.sub[s]]].tolist(),
            _obj([quote(n) for n in SUB_NAMES])[self.sub[s]].tolist(),
            price_w.tolist(),
            price_c.tolist(),
            cost_w.tolist(),
            cost_c.tolist(),
            _obj([quote(b) for b in pools.brands])[brand].tolist(),
            self.stock[s].tolist(),
            (1 + brand % SUPPLIERS).tolist(),
            strict=True,
        )
        return [fmt % r for r in rows]


def draw_products(rng: np.random.Generator, numbers: np.ndarray, pools: Pools) -> ProductRows:
    n = len(numbers)
    cat = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_P)
    sub = _SUB_FIRST[cat] + np.floor(rng.random(n) * _SUB_COUNT[cat]).astype(np.int64)
    noun = _NOUN_FIRST[sub] + np.floor(rng.random(n) * _NOUN_COUNT[sub]).astype(np.int64)
    median = np.array([CATEGORY_PRICE[c][0] for c in CATEGORIES])[cat]
    spread = np.array([CATEGORY_PRICE[c][1] for c in CATEGORIES])[cat]
    dollars = np.clip(median * np.exp(spread * rng.standard_normal(n)), 2, 4999)
    ending = np.array([99, 49, 0, 95])[rng.choice(4, size=n, p=[0.6, 0.15, 0.15, 0.1])]
    price = np.floor(dollars).astype(np.int64) * 100 + ending
    cost = np.floor(price * rng.uniform(0.35, 0.8, n)).astype(np.int64)
    stock = np.minimum(np.round(rng.lognormal(4.5, 0.9, n)).astype(np.int64), 5000)
    stock[rng.random(n) < 0.05] = 0
    return ProductRows(
        numbers=numbers,
        sub=sub.astype(np.int32),
        noun=noun.astype(np.int32),
        brand=rng.integers(0, len(pools.brands), n).astype(np.int32),
        word=rng.integers(0, len(pools.words), n).astype(np.int32),
        price=price,
        cost=np.clip(cost, 1, price - 1),
        stock=stock.astype(np.int32),
    )


@dataclass
class ProductBook:
    """Every product an order line may hold, with its current price."""

    numbers: np.ndarray
    price: np.ndarray  # cents
    cum_w: np.ndarray


def product_book(numbers: np.ndarray, price: np.ndarray, seed: int) -> ProductBook:
    return ProductBook(
        numbers=numbers,
        price=price,
        cum_w=np.cumsum(popularity(numbers, seed, 31, 1.3)),
    )


def _new_price(old: int, rng: np.random.Generator | Draws) -> int:
    factor = rng.uniform(0.8, 0.95) if rng.random() < 0.4 else rng.uniform(1.05, 1.25)
    new = max(2, int(np.floor(old * factor + 0.5)))
    return new if new != old else old + 1


class ProductDefects:
    """Defect handler of products.csv."""

    def __init__(self, pools: Pools, rng: np.random.Generator, width: int):
        self.pools, self.rng, self.width = pools, Draws(rng), width

    def edit(self, fields: list[str], cls: str) -> list[str]:
        if cls == "category_variant":
            variants = CATEGORY_VARIANTS[fields[2]]
            fields[2] = variants[int(self.rng.integers(0, len(variants)))]
        else:  # stray_whitespace on product_name and/or brand
            which = int(self.rng.integers(1, 4))
            for bit, col in enumerate((1, 6)):
                if which >> bit & 1:
                    fields[col] = pad(fields[col], self.rng)
        return fields

    def conflict(self, fields: list[str]) -> list[str]:
        price = _new_price(cents_of(fields[4]), self.rng)
        cost = min(cents_of(fields[5]), price - 1)
        fields[4], fields[5] = money(price), money(max(1, cost))
        fields[7] = str(int(fields[7]) + int(self.rng.integers(1, 50)))
        return fields

    def extra(self, anchor: list[str] | None, cls: str, number: int) -> list[str]:
        row = draw_products(self.rng.generator, np.array([number]), self.pools)
        fields = next(csv.reader(row.lines(self.pools, self.width)))
        if cls == "missing_id":
            fields[0] = ""
        else:  # unparseable_number
            fields[4] = UNPARSEABLE_NUMBERS[int(self.rng.integers(0, len(UNPARSEABLE_NUMBERS)))]
        return fields


def change_products(
    state: dict[int, list[str]], rng: np.random.Generator, count: int
) -> list[list[str]]:
    """Re-sent products (as full rows, by id): a new price (cost stays below) or a new
    category and sub-category."""
    existing = np.array(sorted(state), dtype=np.int64)
    chosen = np.sort(rng.choice(existing, size=min(count, len(existing)), replace=False))
    rows = []
    for number in chosen.tolist():
        fields = list(state[number])
        if rng.random() < 0.6:
            price = _new_price(cents_of(fields[4]), rng)
            cost = cents_of(fields[5])
            if cost >= price:
                cost = max(1, int(price * rng.uniform(0.4, 0.8)))
            fields[4], fields[5] = money(price), money(min(cost, price - 1))
        else:
            old = CATEGORIES.index(fields[2])
            cat = (old + int(rng.integers(1, len(CATEGORIES)))) % len(CATEGORIES)
            sub = int(_SUB_FIRST[cat] + rng.integers(0, _SUB_COUNT[cat]))
            fields[2], fields[3] = CATEGORIES[cat], SUB_NAMES[sub]
        rows.append(fields)
    return rows


# ----------------------------------------------------------------------------- earlier batches


def _canonical_category(value: str) -> str | None:
    if value in CATEGORIES:
        return value
    if value in VARIANT_TO_CANONICAL:
        return VARIANT_TO_CANONICAL[value]
    folded = {c.lower(): c for c in CATEGORIES}
    return folded.get(value.strip().lower())


def number_of(value: str, prefix: str) -> int | None:
    digits = value[len(prefix) :]
    if value.startswith(prefix) and digits.isdigit() and int(digits) > 0:
        return int(digits)
    return None


def _rows(path: Path, columns: tuple[str, ...]):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        if tuple(next(reader, ())) != columns:
            raise BadInputError(
                f"{path}: header is not {','.join(columns)}; cannot continue from this batch"
            )
        for row in reader:
            if len(row) == len(columns):
                yield row


def read_state(batch_dirs: list[Path]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """The current customers and products after the given batches (later rows win), as the
    pipeline would accept them: rows it would quarantine are skipped, stray whitespace is
    trimmed and category variants are mapped back."""
    customers: dict[int, list[str]] = {}
    products: dict[int, list[str]] = {}
    for folder in batch_dirs:
        for row in _rows(folder / CUSTOMERS.name, CUSTOMERS.columns):
            row = [v.strip() for v in row]
            number = number_of(row[0], "CUST")
            try:
                dt.date.fromisoformat(row[5])
            except ValueError:
                continue
            if number is not None:
                customers[number] = row
        for row in _rows(folder / PRODUCTS.name, PRODUCTS.columns):
            row = [v.strip() for v in row]
            number = number_of(row[0], "PROD")
            category = _canonical_category(row[2])
            try:
                price, cost = cents_of(row[4]), cents_of(row[5])
                int(row[7])
            except ValueError:
                continue
            if number is not None and category is not None and 0 < cost < price:
                row[2] = category
                products[number] = row
    return customers, products


def email_is_valid(value: str) -> bool:
    return bool(_EMAIL_OK.match(value))
