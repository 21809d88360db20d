"""Writing one batch folder: the history batch or the next business day, its defects, its
manifest, and the temp-folder-then-rename that keeps a killed run from leaving a half batch."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dwh.contract import CUSTOMERS, MANIFEST_NAME, PRODUCTS, TRANSACTION_ITEMS, TRANSACTIONS
from dwh.defects import DEFECT_CLASSES
from dwh.exceptions import BadInputError, ConfigError
from dwh.generator import entities as ent
from dwh.generator.csvfile import CsvWriter, Rows, line
from dwh.generator.dirty import Injector, Plan, make_plan
from dwh.generator.orders import (
    Block,
    ItemDefects,
    OrderGenerator,
    TransactionDefects,
    day_weights,
    plan_blocks,
)
from dwh.generator.pools import STATES, Pools, build_pools
from dwh.generator.workers import OrderedJobs, worker_count
from dwh.settings import Settings

GENERATOR_VERSION = 1
# Rows formatted at once at most (fewer when generator.chunk_rows is lower): formatting holds
# a few hundred bytes of temporary arrays per row, so this keeps memory flat and small.
FORMAT_ROWS = 32_768
BATCH_PATTERN = re.compile(r"^batch_(\d{4,})$")
MIN_WIDTHS = {"customer": 4, "product": 4, "transaction": 5, "item": 5}
_TEMP_PREFIX = ".tmp-"
_SOURCES = {
    "customer": CUSTOMERS,
    "product": PRODUCTS,
    "transaction": TRANSACTIONS,
    "item": TRANSACTION_ITEMS,
}
log = logging.getLogger(__name__)

Chunks = Callable[[dict[str, int]], Iterator[tuple[int, Rows]]]


def batch_folders(raw_dir: Path) -> list[Path]:
    """Every visible sub-folder of raw_dir (a batch, generated or exported), sorted by name."""
    if not raw_dir.is_dir():
        return []
    return sorted(p for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def generated_batches(raw_dir: Path) -> list[Path]:
    """The generator's batch folders (batch_0001, …) in batch order."""
    found = [p for p in batch_folders(raw_dir) if BATCH_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def _today() -> dt.date:
    return dt.date.today()


@dataclass
class _Spec:
    """Everything needed to write one batch."""

    batch_number: int
    business_day: int
    seed: int
    scale: float
    rate: float
    pools: Pools
    customers: tuple[int, Chunks]  # base rows, chunk source (given the id widths)
    products: tuple[int, Chunks]
    customer_book: ent.CustomerBook
    product_book: ent.ProductBook
    blocks: list[Block]
    last_ids: dict[str, int]  # before this batch
    extra_days: tuple[int, int]  # registration days of extra (defect) customers
    widths: dict[str, int] | None  # None: choose them (history batch)
    volumes: dict[str, Any] = field(default_factory=dict)


def generate_batch(
    settings: Settings,
    *,
    scale: float = 1.0,
    seed: int | None = None,
    dirty_rate: float | None = None,
    next_batch: bool = False,
) -> Path:
    """Write the next batch folder under settings.raw_dir and return it.

    Without `next_batch`, the raw folder must hold no batch yet and the history batch
    (batch_0001, settings.generator's volumes times `scale`, start_date..end_date capped at
    today) is written. With `next_batch`, the business day after the latest generated batch is
    written (new orders, a few new and changed customers and products); when the folder holds
    no batch at all, the history batch is written instead. The same settings, seed and earlier
    batches give byte-identical files.
    """
    g = settings.generator
    seed = g.seed if seed is None else int(seed)
    rate = g.dirty_rate if dirty_rate is None else float(dirty_rate)
    if seed < 0:
        raise ConfigError(f"generator seed must be 0 or more, got {seed}")
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"dirty rate must be between 0 and 1, got {rate}")
    if not scale > 0:
        raise ConfigError(f"scale must be above 0, got {scale}")
    if g.chunk_rows < 1 or g.max_items_per_transaction < 1:
        raise ConfigError("generator.chunk_rows and max_items_per_transaction must be 1 or more")
    raw = settings.raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp(raw)
    previous = generated_batches(raw)
    others = [p.name for p in batch_folders(raw) if p not in previous]
    if next_batch and previous:
        spec = _next_spec(settings, previous, seed, scale, rate)
    elif previous or others:
        names = ", ".join(p.name for p in previous) or ", ".join(others)
        raise ConfigError(
            f"{raw} already holds batches ({names}); the history batch is written only into "
            "an empty raw folder: use --next-batch to add a business day"
            + ("" if previous else " (continuing needs a batch written by the generator)")
        )
    else:
        spec = _history_spec(settings, seed, scale, rate)
    started = time.perf_counter()
    path = _write(settings, spec)
    log.info(
        "generated %s (business date %s, %s order lines) in %.1fs",
        path.name,
        ent.from_epoch(spec.business_day),
        spec.volumes.get("transaction_items"),
        time.perf_counter() - started,
    )
    return path


def _volume(value: int, scale: float, minimum: int = 0) -> int:
    return max(minimum, int(np.floor(value * scale + 0.5)))


def _history_spec(settings: Settings, seed: int, scale: float, rate: float) -> _Spec:
    g = settings.generator
    end_date = min(g.end_date, _today())
    if g.start_date > end_date:
        raise ConfigError(
            f"generator.start_date {g.start_date} is after end_date {end_date} "
            "(end_date is capped at today)"
        )
    start, end = ent.epoch_day(g.start_date), ent.epoch_day(end_date)
    pools = build_pools(seed)
    rng = np.random.default_rng(seed)
    n_c = _volume(g.customers, scale, 1)
    n_p = _volume(g.products, scale, 1)
    n_t = _volume(g.transactions, scale)
    cust = ent.draw_customers(
        rng, np.arange(1, n_c + 1), ent.history_registrations(rng, n_c, start, end), pools
    )
    prod = ent.draw_products(rng, np.arange(1, n_p + 1), pools)
    days = np.arange(start, end + 1)
    weights = day_weights(days)
    counts = rng.multinomial(n_t, weights / weights.sum())
    chunk = min(g.chunk_rows, FORMAT_ROWS)

    def customer_chunks(widths: dict[str, int]) -> Iterator[tuple[int, Rows]]:
        for lo in range(0, n_c, chunk):
            yield lo, cust.rows(pools, widths["customer"], lo, lo + chunk)

    def product_chunks(widths: dict[str, int]) -> Iterator[tuple[int, Rows]]:
        for lo in range(0, n_p, chunk):
            yield lo, Rows.of_lines(prod.lines(pools, widths["product"], lo, lo + chunk))

    return _Spec(
        batch_number=1,
        business_day=end,
        seed=seed,
        scale=scale,
        rate=rate,
        pools=pools,
        customers=(n_c, customer_chunks),
        products=(n_p, product_chunks),
        customer_book=ent.customer_book(
            cust.numbers,
            cust.reg_days,
            cust.loc,
            pools.loc_city,
            [STATES[i][0] for i in pools.loc_state],
            seed,
            len(pools.street_in),
        ),
        product_book=ent.product_book(prod.numbers, prod.price, seed),
        blocks=plan_blocks(days, counts),
        last_ids=dict.fromkeys(MIN_WIDTHS, 0),
        extra_days=(start, end),
        widths=None,
        volumes={"customers": {"new": n_c, "changed": 0}, "products": {"new": n_p, "changed": 0}},
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for key in ("batch_number", "business_date", "id_widths", "last_ids"):
            manifest[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(
            f"{path}: missing or incomplete generator manifest ({exc}); the next batch continues "
            "only from a batch the generator wrote"
        ) from None
    return manifest


def _next_spec(
    settings: Settings, previous: list[Path], seed: int, scale: float, rate: float
) -> _Spec:
    nb = settings.generator.next_batch
    manifest = read_manifest(previous[-1])
    batch_number = int(previous[-1].name.split("_")[1]) + 1
    business = dt.date.fromisoformat(manifest["business_date"]) + dt.timedelta(days=1)
    if business > _today():
        raise ConfigError(
            f"the next batch would be dated {business}, after today ({_today()}): orders are "
            "never in the future; start from an earlier generator.end_date"
        )
    day = ent.epoch_day(business)
    last_ids = {k: int(manifest["last_ids"][k]) for k in MIN_WIDTHS}
    widths = {k: int(manifest["id_widths"][k]) for k in MIN_WIDTHS}
    pools = build_pools(seed)
    rng = np.random.default_rng([seed, batch_number])
    state_c, state_p = ent.read_state(previous)
    changed_c = ent.change_customers(
        state_c, rng, _volume(nb.changed_customers, scale), pools, batch_number
    )
    n_new_c = _volume(nb.new_customers, scale)
    first_c = last_ids["customer"] + 1
    new_c = ent.draw_customers(
        rng, np.arange(first_c, first_c + n_new_c), np.full(n_new_c, day), pools
    )
    changed_p = ent.change_products(state_p, rng, _volume(nb.changed_products, scale))
    n_new_p = _volume(nb.new_products, scale)
    first_p = last_ids["product"] + 1
    new_p = ent.draw_products(rng, np.arange(first_p, first_p + n_new_p), pools)
    n_t = _volume(nb.transactions, scale)

    # the customers and products orders are drawn from: all known, as of this batch
    for fields in changed_c:
        state_c[ent.number_of(fields[0], "CUST")] = fields  # type: ignore[index]
    for fields in changed_p:
        state_p[ent.number_of(fields[0], "PROD")] = fields  # type: ignore[index]
    numbers_c = sorted(state_c)
    new_cities, new_states = new_c.city_state(pools)
    cities = [state_c[n][6] for n in numbers_c] + new_cities
    states = [state_c[n][7] for n in numbers_c] + new_states
    locations: dict[tuple[str, str], int] = {}
    loc = np.array(
        [locations.setdefault(pair, len(locations)) for pair in zip(cities, states, strict=True)]
    )
    reg_days = [ent.epoch_day(dt.date.fromisoformat(state_c[n][5])) for n in numbers_c]
    customer_book = ent.customer_book(
        np.array(numbers_c + new_c.numbers.tolist(), dtype=np.int64),
        np.array(reg_days + new_c.reg_days.tolist(), dtype=np.int64),
        loc.astype(np.int64),
        [c for c, _ in locations],
        [s for _, s in locations],
        seed,
        len(pools.street_in),
    )
    numbers_p = sorted(state_p)
    product_book = ent.product_book(
        np.array(numbers_p + new_p.numbers.tolist(), dtype=np.int64),
        np.array([ent.cents_of(state_p[n][4]) for n in numbers_p] + new_p.price.tolist()),
        seed,
    )

    def customer_chunks(widths: dict[str, int]) -> Iterator[tuple[int, Rows]]:
        new_lines = new_c.rows(pools, widths["customer"]).lines()
        yield 0, Rows.of_lines([line(f) for f in changed_c] + new_lines)

    def product_chunks(widths: dict[str, int]) -> Iterator[tuple[int, Rows]]:
        yield 0, Rows.of_lines([line(f) for f in changed_p] + new_p.lines(pools, widths["product"]))

    return _Spec(
        batch_number=batch_number,
        business_day=day,
        seed=seed,
        scale=scale,
        rate=rate,
        pools=pools,
        customers=(len(changed_c) + n_new_c, customer_chunks),
        products=(len(changed_p) + n_new_p, product_chunks),
        customer_book=customer_book,
        product_book=product_book,
        blocks=plan_blocks(np.array([day]), np.array([n_t])),
        last_ids=last_ids,
        extra_days=(day, day),
        widths=widths,
        volumes={
            "customers": {"new": n_new_c, "changed": len(changed_c)},
            "products": {"new": n_new_p, "changed": len(changed_p)},
        },
    )


def _width(kind: str, count: int) -> int:
    """Id digits: as many as the highest id needs, at least the minimum (CUST0001, TXN00001)."""
    return max(MIN_WIDTHS[kind], len(str(max(1, count))))


def _write(settings: Settings, spec: _Spec) -> Path:
    g = settings.generator
    name = f"batch_{spec.batch_number:04d}"
    raw = settings.raw_dir
    final = raw / name
    orders = OrderGenerator(
        seed=spec.seed,
        batch_number=spec.batch_number,
        max_items=g.max_items_per_transaction,
        customers=spec.customer_book,
        products=spec.product_book,
        pools=spec.pools,
        first_txn=spec.last_ids["transaction"] + 1,
        first_item=spec.last_ids["item"] + 1,
    )
    # Order chunks are drawn and formatted by worker processes when that is possible, while
    # this process writes.
    order_chunks = orders.plan(spec.blocks, min(g.chunk_rows, FORMAT_ROWS))
    workers = worker_count() if len(order_chunks) > 1 else 0
    spec.volumes["transactions"] = sum(c.txns for c in order_chunks)
    spec.volumes["transaction_items"] = sum(c.items for c in order_chunks)
    base = {  # clean rows per file
        "customer": spec.customers[0],
        "product": spec.products[0],
        "transaction": spec.volumes["transactions"],
        "item": spec.volumes["transaction_items"],
    }
    new = dict(base)  # rows with new ids (next batches also re-send changed rows)
    new["customer"] = spec.volumes["customers"]["new"]
    new["product"] = spec.volumes["products"]["new"]
    files = {kind: source.name for kind, source in _SOURCES.items()}
    plans: dict[str, Plan] = {}
    rngs: dict[str, np.random.Generator] = {}
    for i, kind in enumerate(files):
        rngs[kind] = np.random.default_rng([spec.seed, spec.batch_number, 1000 + i])
        plans[kind] = make_plan(
            files[kind],
            base[kind],
            spec.rate,
            rngs[kind],
            spec.last_ids[kind] + new[kind] + 1,
            anchored=kind in ("transaction", "item"),
        )
    last_ids = {k: max(spec.last_ids[k] + new[k], plans[k].last_number) for k in files}
    if spec.widths is None:
        widths = {k: _width(k, last_ids[k]) for k in files}
    else:
        # Ids widen when a later batch needs more digits; numbers stay unique either way.
        widths = {k: max(spec.widths[k], _width(k, last_ids[k])) for k in files}
    orders.set_widths(widths)
    handlers = {
        "customer": ent.CustomerDefects(
            spec.pools, rngs["customer"], widths["customer"], spec.extra_days
        ),
        "product": ent.ProductDefects(spec.pools, rngs["product"], widths["product"]),
        "transaction": TransactionDefects(rngs["transaction"], widths, spec.business_day),
        "item": ItemDefects(rngs["item"], widths, spec.product_book),
    }
    injectors = {k: Injector(plans[k], handlers[k]) for k in files}

    tmp = raw / f"{_TEMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    writers: dict[str, CsvWriter] = {}
    try:
        # The workers start on the first order chunks while the customers and products are
        # written; they are forked before the writers start their threads.
        with OrderedJobs(orders.rows, order_chunks, workers) as order_rows:
            for k, source in _SOURCES.items():
                writers[k] = CsvWriter(tmp / source.name, source.columns)
            for kind, (_, chunks) in (("customer", spec.customers), ("product", spec.products)):
                wrote = False
                for start, rows in chunks(widths):
                    writers[kind].write(injectors[kind].apply(start, rows))
                    wrote = True
                if not wrote:
                    writers[kind].write(injectors[kind].apply(0, Rows.of_lines([])))
            for chunk, (txn_rows, item_rows) in zip(order_chunks, order_rows, strict=True):
                txn_rows = injectors["transaction"].apply(chunk.txn_row, txn_rows)
                writers["transaction"].write(txn_rows)
                writers["item"].write(injectors["item"].apply(chunk.item_row, item_rows))
        for injector in injectors.values():
            injector.check_done()
        stats = {files[k]: writers.pop(k).close() for k in files}
        manifest = _manifest(spec, name, widths, last_ids, stats, plans, files)
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            raise ConfigError(f"{final} appeared while the generator was writing it")
        os.rename(tmp, final)
        _fsync_dir(raw)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _manifest(
    spec: _Spec,
    name: str,
    widths: dict[str, int],
    last_ids: dict[str, int],
    stats: dict[str, dict[str, Any]],
    plans: dict[str, Plan],
    files: dict[str, str],
) -> dict[str, Any]:
    by_file = {plans[k].file_name: plans[k] for k in files}
    defects = {d.name: {f: by_file[f].counts[d.name] for f in d.files} for d in DEFECT_CLASSES}
    return {
        "batch_id": name,
        "batch_number": spec.batch_number,
        "business_date": ent.from_epoch(spec.business_day).isoformat(),
        "seed": spec.seed,
        "scale": spec.scale,
        "dirty_rate": spec.rate,
        "generator_version": GENERATOR_VERSION,
        "id_widths": widths,
        "last_ids": last_ids,
        "files": stats,
        "defects": defects,
        "expected": {f: p.expected() for f, p in by_file.items()},
        "volumes": spec.volumes,
    }


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temp(raw: Path) -> None:
    """Remove temp folders left by a generator process that no longer runs."""
    for tmp in raw.glob(f"{_TEMP_PREFIX}batch_*"):
        parts = tmp.name.split("-")
        try:
            pid = int(parts[2])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's
