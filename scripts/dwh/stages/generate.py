"""Stage "generate": write a batch of source files with the built-in generator.

- with --next-batch: the next business day's batch (or the history batch into an empty folder);
- otherwise, when the raw folder holds no batch yet: the history batch;
- otherwise nothing, so running the pipeline twice does not create new data.
"""

from __future__ import annotations

from typing import Any

from dwh.generator import batch_folders, generate_batch, read_manifest
from dwh.settings import Settings
from dwh.stage import RunContext, StageResult


def run(conn: Any, settings: Settings, ctx: RunContext) -> StageResult:
    """Generate a batch when asked or when there is none; `conn` is not used."""
    options = ctx.options
    if not options.next_batch:
        existing = batch_folders(settings.raw_dir)
        if existing:
            reason = (
                f"{settings.raw_dir} already holds {len(existing)} batch(es), latest "
                f"{existing[-1].name}; use --next-batch to add a business day"
            )
            ctx.log.info("generate: skipped, %s", reason)
            return StageResult(details={"skipped": reason})
    path = generate_batch(
        settings,
        scale=options.scale,
        seed=options.seed,
        dirty_rate=options.dirty_rate,
        next_batch=options.next_batch,
    )
    manifest = read_manifest(path)
    files = {name: info["rows"] for name, info in manifest["files"].items()}
    ctx.log.info(
        "generate: wrote %s (business date %s): %s",
        manifest["batch_id"],
        manifest["business_date"],
        ", ".join(f"{name} {rows} rows" for name, rows in files.items()),
    )
    return StageResult(
        rows_out=files["transaction_items.csv"],
        details={
            "batch_id": manifest["batch_id"],
            "business_date": manifest["business_date"],
            "files": files,
        },
    )
