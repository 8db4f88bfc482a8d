-- tracelake SQLite schema, version 2: runs, as far as tracing needs them.

CREATE TABLE runs (
    run_id          TEXT    NOT NULL PRIMARY KEY,
    experiment_id   INTEGER NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    run_name        TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    start_time      INTEGER NOT NULL,
    end_time        INTEGER,
    lifecycle_stage TEXT    NOT NULL,
    artifact_uri    TEXT    NOT NULL
);
CREATE INDEX runs_by_experiment ON runs (experiment_id);

CREATE TABLE run_tags (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
