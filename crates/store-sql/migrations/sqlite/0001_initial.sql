-- tracelake SQLite schema, version 1. Applied by SqliteStore::open; never edit, add a new file.

CREATE TABLE experiments (
    experiment_id      INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    artifact_location  TEXT    NOT NULL,
    lifecycle_stage    TEXT    NOT NULL,
    creation_time      INTEGER NOT NULL,
    last_update_time   INTEGER NOT NULL
);

CREATE TABLE experiment_tags (
    experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    key           TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    PRIMARY KEY (experiment_id, key)
) WITHOUT ROWID;

CREATE TABLE traces (
    trace_id              TEXT    NOT NULL PRIMARY KEY,
    experiment_id         INTEGER NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    request_time_ms       INTEGER NOT NULL,
    execution_duration_ms INTEGER,
    state                 TEXT    NOT NULL,
    client_request_id     TEXT,
    request_preview       TEXT,
    response_preview      TEXT,
    -- no info was written yet: timing and state follow the spans
    from_spans_only       INTEGER NOT NULL,
    -- MLflow assessment JSON objects, as an array
    assessments           TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX traces_by_experiment_time ON traces (experiment_id, request_time_ms);

CREATE TABLE trace_tags (
    trace_id TEXT NOT NULL REFERENCES traces(trace_id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
) WITHOUT ROWID;
CREATE INDEX trace_tags_by_key_value ON trace_tags (key, value);

CREATE TABLE trace_metadata (
    trace_id TEXT NOT NULL REFERENCES traces(trace_id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (trace_id, key)
) WITHOUT ROWID;
CREATE INDEX trace_metadata_by_key_value ON trace_metadata (key, value);

CREATE TABLE trace_runs (
    trace_id TEXT NOT NULL REFERENCES traces(trace_id) ON DELETE CASCADE,
    run_id   TEXT NOT NULL,
    PRIMARY KEY (trace_id, run_id)
) WITHOUT ROWID;
CREATE INDEX trace_runs_by_run ON trace_runs (run_id);

CREATE TABLE spans (
    trace_id        TEXT    NOT NULL REFERENCES traces(trace_id) ON DELETE CASCADE,
    span_id         INTEGER NOT NULL,
    parent_span_id  INTEGER,
    name            TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    start_time_ns   INTEGER NOT NULL,
    end_time_ns     INTEGER,
    -- mlflow.chat.tokenUsage, for the trace's token total without reading content
    token_usage     TEXT,
    -- the MLflow span dict
    content         TEXT    NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX spans_by_type_status ON spans (type, status);
CREATE INDEX spans_by_name ON spans (name);
