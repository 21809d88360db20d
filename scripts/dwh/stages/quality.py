"""Quality stage: run the staging checks before promotion (config/quality_checks.yaml and
sql/checks/assert_*.sql of layer `staging`).

Staging holds raw text, and bad rows are quarantined by the production stage, so staging checks
are mostly warnings that measure the input; a failed check of severity error still stops the run
(QualityGateFailed, exit code 5). The production stage runs the production checks after
promoting, through the same library (dwh.quality), before the warehouse.

With quality.scope `new` (the default) the checks look only at the batches ingested and not yet
promoted; when there are none, no check runs ("no new batches: staging checks skipped").
--full-refresh or quality.scope `all` checks the whole staging tables.
"""

from __future__ import annotations

import psycopg2

from dwh import quality
from dwh.settings import Settings
from dwh.stage import RunContext, StageResult
from dwh.stages.ingest import restore_lost_staging

STAGE = "quality"
LAYER = "staging"


def run(conn: psycopg2.extensions.connection, settings: Settings, ctx: RunContext) -> StageResult:
    restored = restore_lost_staging(conn, settings, ctx.log)
    report = quality.check_layer(
        conn,
        settings,
        ctx.run_id,
        LAYER,
        stage=STAGE,
        full_refresh=ctx.options.full_refresh,
        logger=ctx.log,
    )
    scope = report["scopes"][LAYER]
    layer = report["layer_results"]
    details = {"layer": LAYER, "scope": scope["mode"]}
    if restored:
        details["staging_restored"] = restored
    if layer is None:  # nothing new: skipped (check_layer logged it)
        details.update(batches=[], checks=0, failed=[], skipped=scope["skipped"])
        return StageResult(rows_in=0, rows_out=0, details=details)
    failed = [c["name"] for c in report["checks"] if c["layer"] == LAYER and not c["passed"]]
    if failed:
        ctx.log.warning("%d staging check(s) failed (warnings): %s", len(failed), ", ".join(failed))
    ctx.log.info("staging quality score %.2f (%s)", layer["overall_score"], layer["grade"])
    details.update(
        batches=scope["checked_batches"],
        checks=scope["checks_run"],
        failed=failed,
        score=layer["overall_score"],
        grade=layer["grade"],
    )
    return StageResult(rows_in=0, rows_out=0, details=details)
