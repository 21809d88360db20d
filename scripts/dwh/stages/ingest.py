"""Ingest stage: COPY every new source file of every batch folder into `staging`.

Per file, in one transaction: check the header against the contract (before any row lands),
COPY the rest of the stream into the staging table (columns mapped by name, so any order works),
hash the bytes on the way through, and record the file in ops.ingested_files. A file already
recorded is skipped; a recorded file whose bytes changed, a malformed file, or a header that
breaks the contract is a BadInputError naming the file, line and column, and leaves staging as
it was (earlier files stay loaded: each file is its own transaction).

A loaded file is re-read (sha256) on later runs to prove it did not change, unless its size and
modification time are still the ones recorded and that time was safely before the load started
(the "racily clean" rule of git: a change made after the load gets a later time, even on a file
system with coarse timestamps). A file written moments before its load is re-hashed on the next
run, and trusted from then on if it is unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import Json

from dwh.contract import MANIFEST_NAME, SOURCE_BY_NAME, SOURCE_FILES, SourceFile
from dwh.exceptions import BadInputError
from dwh.settings import Settings
from dwh.stage import RunContext, StageResult

STAGE = "ingest"
# A file modified later than this before its load started is "racy": its stat is not trusted
# (until a later run re-hashes it unchanged). Covers timestamp granularity up to 1 s.
RACY_NS = 1_000_000_000
_CONTEXT_LINE = re.compile(r"line (\d+)(?:, column (\w+))?")


class _HashingReader:
    """File-like wrapper that hashes and counts the bytes COPY reads from it."""

    def __init__(self, raw: BinaryIO, hasher: hashlib._Hash):
        self._raw = raw
        self._hasher = hasher
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self._hasher.update(chunk)
        self.bytes += len(chunk)
        return chunk

    readline = read  # psycopg2 only calls read(); keep the protocol complete


@dataclass(frozen=True)
class Header:
    columns: tuple[str, ...]
    raw: bytes


def list_batches(raw_dir: Path) -> list[Path]:
    """Batch folders in name order; hidden and temporary folders are ignored."""
    if not raw_dir.is_dir():
        return []
    return sorted(
        p for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_", "tmp"))
    )


def read_header(path: Path, source: SourceFile, handle: BinaryIO) -> Header:
    """Read and check the header line; leaves `handle` at the first data byte."""
    raw = handle.readline()
    if not raw:
        raise BadInputError(
            f"{path}: the file is empty; expected a header line "
            f"({','.join(source.columns)}) and data rows",
            stage=STAGE,
            table=source.table,
        )
    try:
        text = raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path}: line 1 (header): not UTF-8 (byte 0x{raw[exc.start]:02x} at position "
            f"{exc.start}); save the file as UTF-8",
            stage=STAGE,
            table=source.table,
        ) from None
    if "\x00" in text:
        raise BadInputError(f"{path}: line 1 (header): contains a NUL byte", stage=STAGE)
    columns = tuple(c.strip() for c in next(csv.reader([text])))
    missing = [c for c in source.columns if c not in columns]
    unknown = [c for c in columns if c not in source.columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        hint = ""
        if len(columns) == 1 and any(d in text for d in ";\t|"):
            hint = " (is the delimiter a comma? this header looks delimited by something else)"
        raise BadInputError(
            f"{path}: line 1 (header): {'; '.join(problems)}{hint}. Expected the columns "
            f"{','.join(source.columns)} (any order). Nothing was loaded from this file.",
            stage=STAGE,
            table=source.table,
        )
    return Header(columns, raw)


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _copy_error(path: Path, exc: psycopg2.Error) -> BadInputError:
    """Turn a COPY failure into a message with file, line and column."""
    primary = (exc.diag.message_primary or str(exc)).strip()
    context = exc.diag.context or ""
    where = ""
    match = _CONTEXT_LINE.search(context)
    if match:
        where = f" line {int(match.group(1)) + 1}"  # COPY counts from the first data line
        if match.group(2):
            where += f", column {match.group(2)}"
    if "unterminated CSV quoted field" in primary:
        primary += " (a field opened with a double quote is never closed before the end of the file; look for a stray quote above this line)"
    elif "invalid byte sequence" in primary:
        primary += " (the file is not valid UTF-8, or holds a NUL byte: re-save it as UTF-8)"
    return BadInputError(
        f"{path}:{where}: {primary}. Fix the file (or remove it from the batch) and run again; "
        "nothing from this file was loaded.",
        stage=STAGE,
    )


def _load_manifest(batch_dir: Path) -> dict | None:
    path = batch_dir / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable JSON manifest ({exc})", stage=STAGE) from None


def _check_batch_files(batch_dir: Path, manifest: dict | None) -> None:
    csvs = {p.name for p in batch_dir.iterdir() if p.is_file() and p.suffix.lower() == ".csv"}
    unknown = sorted(csvs - set(SOURCE_BY_NAME))
    if unknown:
        raise BadInputError(
            f"{batch_dir / unknown[0]}: not a known source file; a batch holds "
            f"{', '.join(SOURCE_BY_NAME)} (rename or remove it)",
            stage=STAGE,
        )
    if manifest is not None:
        missing = sorted(set(manifest.get("files", {})) - csvs)
        if missing:
            raise BadInputError(
                f"{batch_dir}: {missing[0]} is listed in {MANIFEST_NAME} but missing from the "
                "batch folder; restore it (or regenerate the batch) and run again",
                stage=STAGE,
            )
    elif not csvs:
        raise BadInputError(
            f"{batch_dir}: the batch folder holds no source file ({', '.join(SOURCE_BY_NAME)})",
            stage=STAGE,
        )


def _register_batch(
    conn: psycopg2.extensions.connection, batch_id: str, manifest: dict | None
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.batches (batch_id, business_date, manifest) VALUES (%s, %s, %s)"
            " ON CONFLICT (batch_id) DO NOTHING",
            (batch_id, (manifest or {}).get("business_date"), Json(manifest) if manifest else None),
        )
    conn.commit()


def _copy_file(
    conn: psycopg2.extensions.connection, path: Path, source: SourceFile, batch_id: str
) -> tuple[int, str, int]:
    """COPY one file into its staging table in the caller's transaction (not committed); returns
    its rows, sha256 and bytes. A malformed file rolls back and raises BadInputError."""
    hasher = hashlib.sha256()
    table = sql.Identifier("staging", source.table)
    with open(path, "rb") as handle:
        header = read_header(path, source, handle)
        hasher.update(header.raw)
        reader = _HashingReader(handle, hasher)
        copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')").format(
            table, sql.SQL(", ").join(map(sql.Identifier, header.columns))
        )
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s)),"
                    " set_config('dwh.batch_id', %s, true),"
                    " set_config('dwh.source_file', %s, true),"
                    " setval(%s::regclass, 1, true)",
                    (
                        f"dwh.ingest.{source.table}",
                        batch_id,
                        str(path),
                        f"staging.{source.table}_line_seq",
                    ),
                )
                cur.copy_expert(copy.as_string(conn), reader, size=1 << 20)  # 1 MiB reads
                rows = cur.rowcount
        except (
            psycopg2.DataError,
            psycopg2.errors.BadCopyFileFormat,
            psycopg2.IntegrityError,
        ) as exc:
            conn.rollback()
            raise _copy_error(path, exc) from None
        except psycopg2.Error:
            conn.rollback()
            raise
    return rows, hasher.hexdigest(), len(header.raw) + reader.bytes


def restore_lost_staging(
    conn: psycopg2.extensions.connection, settings: Settings, log: logging.LoggerAdapter
) -> list[dict]:
    """Reload from their files the batches whose staged rows are gone; returns what it reloaded.

    Staging is UNLOGGED (sql/ddl/20_staging.sql): PostgreSQL empties it when it recovers from a
    crash (a promoted standby or a restored physical backup has it empty too), while
    ops.ingested_files still records the files as loaded. staging.unlogged_canary is emptied with
    it: then every recorded file with rows of which staging holds none is copied again from the
    raw folder, after its sha256 and row count are checked against the record; a promoted batch
    whose files are gone stays out of staging (production holds its rows), an unpromoted one is
    an error. With the canary in place only the batches not yet promoted are looked at (two small
    queries when there are none). Run by each stage that reads staging, before it does, not once
    per run: the server can crash between two stages of a run, and a stage retried on a fresh
    connection after a restart finds staging emptied.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM staging.unlogged_canary)")
        intact = cur.fetchone()[0]
        cur.execute(
            "SELECT f.batch_id, f.file_name, f.table_name, f.sha256, f.row_count,"
            " r.batch_id IS NOT NULL"
            " FROM ops.ingested_files AS f"
            " LEFT JOIN ops.reconciliation AS r"
            "   ON r.table_name = f.table_name AND r.batch_id = f.batch_id"
            " WHERE f.row_count > 0 AND (r.batch_id IS NULL OR NOT %s)"
            " ORDER BY f.batch_id, f.file_name",
            (intact,),
        )
        recorded = cur.fetchall()
    restored: list[dict] = []
    for batch_id, file_name, table, sha256, row_count, promoted in recorded:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE _batch_id = %s)").format(
                    sql.Identifier("staging", table)
                ),
                (batch_id,),
            )
            if cur.fetchone()[0]:
                continue
        path = settings.raw_dir / batch_id / file_name
        lost = (
            f"staging.{table} no longer holds the {row_count} rows of {batch_id}/{file_name}"
            f"{' (promoted)' if promoted else ', not promoted yet'}; staging is unlogged, and "
            "PostgreSQL empties it when it recovers from a crash"
        )
        if not path.is_file():
            if promoted:
                log.warning("%s. %s is gone: they stay out of staging", lost, path)
                continue
            raise BadInputError(
                f"{lost}. {path} is gone: put the file back in the batch folder and run again.",
                stage=STAGE,
                table=table,
            )
        rows, digest, _ = _copy_file(conn, path, SOURCE_BY_NAME[file_name], batch_id)
        if (digest, rows) != (sha256, row_count):
            conn.rollback()
            raise BadInputError(
                f"{lost}. {path} changed since it was loaded (sha256 {sha256[:12]}…, "
                f"{row_count} rows then; {digest[:12]}…, {rows} rows now): put the loaded "
                "version back and run again.",
                stage=STAGE,
                table=table,
            )
        conn.commit()
        log.warning("%s: reloaded them from %s", lost, path)
        restored.append({"batch_id": batch_id, "file": file_name, "rows": rows})
    if not intact:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO staging.unlogged_canary DEFAULT VALUES")
    conn.commit()
    return restored


def ingest_file(
    conn: psycopg2.extensions.connection,
    path: Path,
    source: SourceFile,
    batch_id: str,
    run_id: int | None,
    expected: dict | None = None,
) -> dict:
    """Load one file in one transaction. Returns {"file", "status", "rows", ...}."""
    info = {"batch_id": batch_id, "file": source.name, "table": source.table}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT sha256, bytes, mtime_ns FROM ops.ingested_files"
            " WHERE batch_id = %s AND file_name = %s",
            (batch_id, source.name),
        )
        done = cur.fetchone()
    stat = path.stat()
    if done is not None:
        if done[2] is None or (stat.st_size, stat.st_mtime_ns) != done[1:3]:
            if sha256_of(path) != done[0]:
                raise BadInputError(
                    f"{path}: changed since it was loaded (sha256 {done[0][:12]}… then, differs "
                    "now). Loaded batches are immutable: put corrections in a new batch folder.",
                    stage=STAGE,
                    table=source.table,
                )
            if stat.st_size == done[1] and stat.st_mtime_ns < time.time_ns() - RACY_NS:
                with conn.cursor() as cur:  # proven unchanged and no longer racy: trust it
                    cur.execute(
                        "UPDATE ops.ingested_files SET mtime_ns = %s"
                        " WHERE batch_id = %s AND file_name = %s",
                        (stat.st_mtime_ns, batch_id, source.name),
                    )
                conn.commit()
        return {**info, "status": "already_loaded", "rows": 0}

    started_ns = time.time_ns()
    # the stat can vouch for the file later only if it was last written well before this read
    trusted_mtime = stat.st_mtime_ns if stat.st_mtime_ns < started_ns - RACY_NS else None
    rows, digest, size = _copy_file(conn, path, source, batch_id)
    if expected is not None:
        problem = None
        if expected.get("sha256") and expected["sha256"] != digest:
            problem = "its sha256 differs from the batch manifest (truncated or edited?)"
        elif expected.get("rows") is not None and int(expected["rows"]) != rows:
            problem = f"it has {rows} rows but the batch manifest says {expected['rows']}"
        if problem:
            conn.rollback()
            raise BadInputError(
                f"{path}: {problem}; nothing was loaded from it. Restore the file or regenerate "
                "the batch.",
                stage=STAGE,
                table=source.table,
            )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ops.ingested_files (batch_id, file_name, table_name, source_path,"
                " sha256, bytes, row_count, run_id, mtime_ns)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    batch_id,
                    source.name,
                    source.table,
                    str(path),
                    digest,
                    size,
                    rows,
                    run_id,
                    trusted_mtime if size == stat.st_size else None,
                ),
            )
    except psycopg2.errors.UniqueViolation:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT batch_id, file_name FROM ops.ingested_files WHERE sha256 = %s", (digest,)
            )
            twin = cur.fetchone()
        return {**info, "status": "duplicate_content", "rows": 0, "same_as": list(twin or [])}
    conn.commit()
    return {**info, "status": "loaded", "rows": rows, "sha256": digest, "bytes": size}


def run(conn: psycopg2.extensions.connection, settings: Settings, ctx: RunContext) -> StageResult:
    restored = restore_lost_staging(conn, settings, ctx.log)
    results: list[dict] = []
    for batch_dir in list_batches(settings.raw_dir):
        manifest = _load_manifest(batch_dir)
        _check_batch_files(batch_dir, manifest)
        _register_batch(conn, batch_dir.name, manifest)
        expected_files = (manifest or {}).get("files", {})
        for source in SOURCE_FILES:
            path = batch_dir / source.name
            if not path.exists():
                continue
            outcome = ingest_file(
                conn, path, source, batch_dir.name, ctx.run_id, expected_files.get(source.name)
            )
            if outcome["status"] == "loaded":
                ctx.log.info(
                    "loaded %s: %d rows into staging.%s", path, outcome["rows"], source.table
                )
            elif outcome["status"] == "duplicate_content":
                ctx.log.warning(
                    "skipped %s: same bytes as the already loaded %s",
                    path,
                    "/".join(outcome["same_as"]),
                )
            results.append(outcome)
    loaded = [r for r in results if r["status"] == "loaded"]
    rows = sum(r["rows"] for r in loaded)
    # Fresh statistics before the checks and the promotion plan their joins on these rows, when
    # they are a tenth or more of the table (autovacuum would get to it later; a plan for 1,000
    # rows on a million is a nested loop). A small batch on a big table changes little.
    added: dict[str, int] = {}
    for r in loaded:
        added[r["table"]] = added.get(r["table"], 0) + r["rows"]
    with conn.cursor() as cur:
        for table, n in sorted(added.items()):
            cur.execute(
                "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (f"staging.{table}",)
            )
            known = cur.fetchone()[0]
            if n and (known < 0 or n >= 0.1 * known):
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("staging", table)))
    conn.commit()
    return StageResult(
        rows_in=rows,
        rows_out=rows,
        details={
            "files_loaded": len(loaded),
            "files_skipped": len(results) - len(loaded),
            "files": [r for r in results if r["status"] != "already_loaded"],
            **({"staging_restored": restored} if restored else {}),
        },
    )
