-- Operations: the scheduler's state and heartbeat, health reports and alerts. Idempotent.

-- One row per scheduler (name 'default' unless several daemons share a database).
CREATE TABLE IF NOT EXISTS ops.scheduler_state (
    scheduler_name  text        PRIMARY KEY,
    last_tick_at    timestamptz,              -- when the last tick started (any outcome)
    last_slot_at    timestamptz,              -- the scheduled slot the last tick served
    last_status     text,                     -- success, failed, skipped
    last_run_id     bigint,                   -- ops.pipeline_runs.run_id of the last tick, if any
    last_error      text,
    last_success_at timestamptz,
    next_due_at     timestamptz,              -- the next slot of any configured schedule
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE ops.scheduler_state IS 'Last tick and next due slot of each scheduler daemon; read at start to catch up a missed slot.';

CREATE TABLE IF NOT EXISTS ops.scheduler_heartbeat (
    scheduler_name  text        PRIMARY KEY,
    state           text        NOT NULL
                    CHECK (state IN ('starting', 'idle', 'running', 'stopping', 'stopped')),
    host            text,
    pid             integer,
    started_at      timestamptz,
    beat_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    interval_s      integer     NOT NULL,
    next_due_at     timestamptz
);
COMMENT ON TABLE ops.scheduler_heartbeat IS 'Liveness of each scheduler daemon: updated every heartbeat_seconds.';

CREATE TABLE IF NOT EXISTS ops.health_reports (
    report_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    checked_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    health      text        NOT NULL CHECK (health IN ('healthy', 'degraded', 'critical')),
    score       numeric(5,1) NOT NULL CHECK (score BETWEEN 0 AND 100),
    checks      jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS health_reports_checked_idx ON ops.health_reports (checked_at);
COMMENT ON TABLE ops.health_reports IS 'One row per monitoring run: overall health, health score and every check.';

CREATE TABLE IF NOT EXISTS ops.alerts (
    alert_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_name    text        NOT NULL,
    severity      text        NOT NULL CHECK (severity IN ('warning', 'critical')),
    message       text        NOT NULL,
    opened_at     timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    notified_at   timestamptz,
    resolved_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_uq ON ops.alerts (check_name) WHERE resolved_at IS NULL;
COMMENT ON TABLE ops.alerts IS 'Alerts raised by monitoring and the scheduler: at most one open alert per check.';
