"""Command line of scripts/pipeline_orchestrator.py: parse arguments, call one function, map
expected failures to their exit codes with a one-line message."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

import psycopg2

from dwh import __version__
from dwh.exceptions import (
    AlreadyRunning,
    ConfigError,
    DatabaseUnavailable,
    ExitCode,
    PipelineError,
    first_line,
)
from dwh.logs import setup_logging
from dwh.settings import Settings, load_settings, mask_url
from dwh.stage import RunOptions

log = logging.getLogger("dwh")

EPILOG = """exit codes:
  0    success
  1    internal error (a bug, or a statement the database refused: see the log for the
       traceback)
  2    configuration or usage error
  3    database unavailable (cannot connect, the embedded server cannot start, or the
       database failed the run after the retries: lost connection, statement timeout)
  4    bad input file (header, encoding, quoting, field count, changed file …)
  5    data-quality gate failed
  6    another run is in progress on this database
  7    monitor: health degraded (a check is past its warning threshold)
  8    monitor: health critical (a check is past its critical threshold, or no database)
  130  interrupted
"""


def _global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="YAML settings file (default: config/config.yaml or $DWH_CONFIG)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="PostgreSQL URL to use instead of DATABASE_URL / PG* / the embedded server",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="folder for raw batches, reports and the embedded cluster (default ./data)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more log output (debug)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="only warnings and errors on the console",
    )


def _generator_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the generator's volumes (default 1.0)"
    )
    parser.add_argument("--seed", type=int, help="generator seed (default: generator.seed)")
    parser.add_argument(
        "--dirty-rate",
        type=float,
        metavar="R",
        help="share of rows (0..1) that get an injected defect (default: generator.dirty_rate)",
    )
    parser.add_argument(
        "--next-batch",
        action="store_true",
        help="write the next business day's batch (new orders, new and changed customers/products)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline_orchestrator.py",
        description="Load e-commerce CSV batches into a PostgreSQL star schema "
        "(staging → production → warehouse). Without a subcommand it runs the pipeline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the pipeline (the default)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_flags(run, suppress=True)
    _generator_flags(run)
    run.add_argument(
        "--stages", metavar="A,B", help="run only these stages (comma-separated), in pipeline order"
    )
    run.add_argument(
        "--from", dest="from_stage", metavar="STAGE", help="run from this stage onwards"
    )
    run.add_argument(
        "--full-refresh", action="store_true", help="rebuild derived layers from scratch"
    )
    run.add_argument("--json", action="store_true", help="print the run report as JSON on stdout")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest failed or cancelled run from its first unfinished stage",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print the plan (stages, database, batches) and exit"
    )

    gen = sub.add_parser(
        "generate", help="write a batch of generated CSV files into <data-dir>/raw"
    )
    _global_flags(gen, suppress=True)
    _generator_flags(gen)

    dbp = sub.add_parser("db", help="manage the embedded PostgreSQL server")
    _global_flags(dbp, suppress=True)
    dbp.add_argument(
        "action",
        choices=("start", "stop", "status", "url"),
        help="start (init if needed), stop, show status, or print the connection URL",
    )

    status = sub.add_parser("status", help="show the latest runs from the run ledger")
    _global_flags(status, suppress=True)
    status.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")

    monitor = sub.add_parser(
        "monitor",
        help="check pipeline health, write monitoring_report.json and send alerts "
        "(exit 0 healthy, 7 degraded, 8 critical)",
    )
    _global_flags(monitor, suppress=True)
    monitor.add_argument("--json", action="store_true", help="print the report as JSON")
    monitor.add_argument(
        "--no-alerts", action="store_true", help="do not send alerts (report and ops rows only)"
    )

    dictionary = sub.add_parser(
        "data-dictionary",
        help="write docs/data_dictionary.md from the database catalog (applies the DDL first)",
    )
    _global_flags(dictionary, suppress=True)
    dictionary.add_argument(
        "--output", metavar="PATH", help="file to write (default docs/data_dictionary.md)"
    )
    dictionary.add_argument(
        "--schema",
        action="append",
        metavar="NAME",
        help="schema to document; repeat for several (default: warehouse)",
    )

    bikit = sub.add_parser(
        "bi-kit",
        help="write Power BI (.pbids) and Tableau (.tds) connection files for the configured "
        "server into dashboards/powerbi and dashboards/tableau",
    )
    _global_flags(bikit, suppress=True)
    bikit.add_argument(
        "--output-dir",
        metavar="DIR",
        help="folder that receives powerbi/ and tableau/ (default: dashboards)",
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, database_url=args.database_url, data_dir=args.data_dir)


def _options(args: argparse.Namespace) -> RunOptions:
    if args.scale <= 0:
        raise _usage("--scale must be greater than 0")
    if args.dirty_rate is not None and not 0 <= args.dirty_rate <= 1:
        raise _usage("--dirty-rate must be between 0 and 1")
    return RunOptions(
        scale=args.scale,
        seed=args.seed,
        dirty_rate=args.dirty_rate,
        next_batch=args.next_batch,
        full_refresh=getattr(args, "full_refresh", False),
    )


def _usage(message: str) -> PipelineError:
    return ConfigError(message)


def cmd_run(args: argparse.Namespace) -> int:
    from dwh import db
    from dwh.orchestrator import plan, run_pipeline, select_stages

    settings = _settings(args)
    only = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    stages = select_stages(only, args.from_stage)
    if args.resume and (only or args.from_stage or args.next_batch):
        raise _usage("--resume takes the stages and options of the run it resumes")
    if args.dry_run:
        print(json.dumps(plan(settings, stages, _options(args)), indent=2))
        return ExitCode.OK
    try:
        report = run_pipeline(settings, _options(args), stages, resume=args.resume)
    except (ConfigError, DatabaseUnavailable, AlreadyRunning):
        raise  # the run never reached its database, or was refused: nothing to monitor
    except BaseException:
        _monitor_after_run(settings)
        raise
    health = _monitor_after_run(settings)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(report), indent=2, default=str))
        return ExitCode.OK
    print(f"\nRun {report.run_id}: {report.status} in {report.seconds:.1f}s")
    print("  stage          seconds     rows out")
    for stage in report.stages:
        print(f"  {stage.stage:<12} {stage.seconds:>9.2f} {stage.rows_out:>12,}")
    estimated = set(report.layer_rows_estimated)
    for schema, tables in report.layer_rows.items():
        listing = ", ".join(
            f"{t} {'~' if f'{schema}.{t}' in estimated else ''}{n:,}" for t, n in tables.items()
        )
        print(f"  {schema}: {listing}")
    url = (settings.database_url and mask_url(settings.database_url)) or db.resolve_url(
        settings, start_embedded=False
    )
    print(f"  BI connection URL: {url}")
    print(f"  report: {settings.processed_dir / 'pipeline_execution_report.json'}")
    if health:
        print(f"  health: {health}")
    return ExitCode.OK


def _monitor_after_run(settings: Settings) -> str | None:
    """Monitoring at the end of every run; it never changes the run's outcome."""
    from dwh.monitoring import run_checks

    try:
        report = run_checks(settings)
    except Exception:  # monitoring must not turn a finished run into a failure
        log.exception("monitoring after the run failed")
        return None
    return f"{report.health} (score {report.score:g}), {report.report_path}"


def cmd_generate(args: argparse.Namespace) -> int:
    from dwh.generator import generate_batch

    settings = _settings(args)
    opts = _options(args)
    batch = generate_batch(
        settings,
        scale=opts.scale,
        seed=opts.seed,
        dirty_rate=opts.dirty_rate,
        next_batch=opts.next_batch,
    )
    print(batch)
    return ExitCode.OK


def cmd_db(args: argparse.Namespace) -> int:
    from dwh.embedded import EmbeddedServer

    settings = _settings(args)
    if not settings.uses_embedded:
        if args.action == "url":
            print(mask_url(settings.database_url or ""))
            return ExitCode.OK
        raise _usage(
            "a database URL is configured (--database-url, DATABASE_URL or PGHOST): "
            "`db` manages only the embedded server"
        )
    server = EmbeddedServer(settings)
    if args.action == "url":
        print(server.url())
    elif args.action == "start":
        print(server.start().describe())
        print(f"connect with: {server.url()}")
    elif args.action == "stop":
        print(server.stop().describe())
    else:
        status = server.status()
        print(status.describe())
        return ExitCode.OK if status.running else ExitCode.DATABASE_UNAVAILABLE
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    from dwh import db

    settings = _settings(args)
    conn = db.connect(db.resolve_url(settings))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('ops.pipeline_runs') IS NOT NULL")
            if not cur.fetchone()[0]:
                print("no run recorded yet: run `python scripts/pipeline_orchestrator.py`")
                return ExitCode.OK
            cur.execute(
                "SELECT run_id, status, started_at, finished_at - started_at, coalesce(error, '')"
                " FROM ops.pipeline_runs ORDER BY run_id DESC LIMIT %s",
                (args.limit,),
            )
            for run_id, status, started, took, error in cur.fetchall():
                took_s = f"{took.total_seconds():.1f}s" if took else "-"
                print(
                    f"{run_id:>6}  {status:<9} {started:%Y-%m-%d %H:%M:%S}  {took_s:>8}  {error[:80]}"
                )
    finally:
        conn.close()
    return ExitCode.OK


def cmd_monitor(args: argparse.Namespace) -> int:
    """Exit 0 healthy, 7 degraded, 8 critical (an unreachable database is critical)."""
    from dataclasses import asdict

    from dwh.monitoring import describe, run_checks

    settings = _settings(args)
    report = run_checks(settings, send_alerts=not args.no_alerts)
    print(json.dumps(asdict(report), indent=2, default=str) if args.json else describe(report))
    return report.exit_code


def cmd_data_dictionary(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dwh import data_dictionary, db

    settings = _settings(args)
    conn = db.connect(db.resolve_url(settings))
    try:
        db.apply_ddl(conn)
        path = data_dictionary.write(
            conn,
            Path(args.output) if args.output else data_dictionary.DEFAULT_PATH,
            tuple(args.schema or data_dictionary.DEFAULT_SCHEMAS),
        )
    finally:
        conn.close()
    print(f"wrote {path}")
    return ExitCode.OK


def cmd_bi_kit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dwh import bikit

    settings = _settings(args)
    target = bikit.configured_target(settings)
    output = Path(args.output_dir) if args.output_dir else bikit.DEFAULT_OUTPUT
    for path in bikit.write_kit(target, output):
        print(f"wrote {path}")
    print(
        f"server {target.server}, database {target.database}, user {bikit.BI_USER} "
        "(the tool asks for the password): see docs/bi_guide.md"
    )
    return ExitCode.OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "generate": cmd_generate,
    "db": cmd_db,
    "status": cmd_status,
    "monitor": cmd_monitor,
    "data-dictionary": cmd_data_dictionary,
    "bi-kit": cmd_bi_kit,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not any(a in COMMANDS for a in argv) and not {"-h", "--help", "--version"} & set(argv):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    verbosity = -1 if args.quiet else args.verbose
    setup_logging(verbosity)

    def command() -> int:
        if args.command == "run":
            setup_logging(verbosity, _settings(args).log_dir)
        return COMMANDS[args.command](args)

    return run_guarded(command)


def run_guarded(command: Callable[[], int]) -> int:
    """Run an entry point's work; expected failures become one `error:` line and their exit
    code, anything else a logged traceback and exit 1. Shared by every script in scripts/."""
    try:
        return command()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        # Still failing after the stage's retries (server gone, statement timeout, connection
        # killed): the database failed the run. Committed work stays; run again (or --resume).
        reason = first_line(exc)
        print(
            f"error: the database failed the run: {reason}. What was committed stays; check "
            "the server (and statement_timeout of the pipeline's role), then run again "
            "(`run --resume` continues from the failed stage)",
            file=sys.stderr,
        )
        return ExitCode.DATABASE_UNAVAILABLE
    except psycopg2.Error as exc:
        # Refused rather than lost (a table or column of the pipeline's schemas changed by hand,
        # or a bug): one line on the console, the traceback in the log file (and with -v).
        log.debug("the database refused a statement", exc_info=True)
        reason = first_line(exc)
        detail = exc.diag.message_detail  # e.g. the objects that depend on one being dropped
        if detail:
            reason += f" ({'; '.join(detail.splitlines())})"
        print(
            f"error: the database refused a statement: {reason}. What was committed stays. If "
            "a table or column of the pipeline's schemas was changed by hand, restore it; if "
            "an object of yours depends on one the pipeline's DDL changes, drop it and create "
            "it again after the run; otherwise this is a bug: the traceback is in the log file "
            "(log_dir, default ./logs/pipeline.log)",
            file=sys.stderr,
        )
        return ExitCode.INTERNAL_ERROR
    except Exception:
        log.exception("internal error")
        return ExitCode.INTERNAL_ERROR
