-- tracelake PostgreSQL schema, version 1. Applied by PostgresStore::connect (sqlx migrations,
-- recorded in _sqlx_migrations); never edit, add a new file.
--
-- The tables and columns are the SQLite store's, so both answer the same search SQL. Text that is
-- compared or sorted is in the "C" collation: byte order, as SQLite and the reference evaluator
-- compare. Traces get a sequential key that their child rows hang off.

CREATE TABLE experiments (
    experiment_id     BIGINT PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL UNIQUE,
    artifact_location TEXT   NOT NULL,
    lifecycle_stage   TEXT   NOT NULL,
    creation_time     BIGINT NOT NULL,
    last_update_time  BIGINT NOT NULL
);
INSERT INTO experiments
    VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active',
            (extract(epoch FROM now()) * 1000)::BIGINT, (extract(epoch FROM now()) * 1000)::BIGINT);

CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    key           TEXT COLLATE "C" NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE runs (
    run_id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    experiment_id   BIGINT NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    run_name        TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    start_time      BIGINT NOT NULL,
    end_time        BIGINT,
    lifecycle_stage TEXT   NOT NULL,
    artifact_uri    TEXT   NOT NULL
);
CREATE INDEX runs_by_experiment ON runs (experiment_id);

CREATE TABLE run_tags (
    run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    key    TEXT COLLATE "C" NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE traces (
    trace_key             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trace_id              TEXT COLLATE "C" NOT NULL UNIQUE,
    experiment_id         BIGINT  NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    request_time_ms       BIGINT  NOT NULL,
    execution_duration_ms BIGINT,
    state                 TEXT COLLATE "C" NOT NULL,
    client_request_id     TEXT COLLATE "C",
    request_preview       TEXT COLLATE "C",
    response_preview      TEXT COLLATE "C",
    -- no info was written yet: timing and state follow the spans
    from_spans_only       BOOLEAN NOT NULL,
    -- MLflow assessment JSON objects, as an array
    assessments           TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX traces_by_experiment_time ON traces (experiment_id, request_time_ms);

-- Tag and metadata values are indexed by their first 256 characters (a B-tree entry has a size
-- limit that a whole value may pass); equality searches compare that prefix, then the value.
CREATE TABLE trace_tags (
    trace_key BIGINT NOT NULL REFERENCES traces (trace_key) ON DELETE CASCADE,
    key       TEXT COLLATE "C" NOT NULL,
    value     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (trace_key, key)
);
CREATE INDEX trace_tags_by_key_value ON trace_tags (key, left(value, 256));

CREATE TABLE trace_metadata (
    trace_key BIGINT NOT NULL REFERENCES traces (trace_key) ON DELETE CASCADE,
    key       TEXT COLLATE "C" NOT NULL,
    value     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (trace_key, key)
);
CREATE INDEX trace_metadata_by_key_value ON trace_metadata (key, left(value, 256));

CREATE TABLE trace_runs (
    trace_key BIGINT NOT NULL REFERENCES traces (trace_key) ON DELETE CASCADE,
    run_id    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (trace_key, run_id)
);
CREATE INDEX trace_runs_by_run ON trace_runs (run_id);

CREATE TABLE spans (
    trace_key       BIGINT NOT NULL REFERENCES traces (trace_key) ON DELETE CASCADE,
    span_id         BIGINT NOT NULL,
    parent_span_id  BIGINT,
    name            TEXT COLLATE "C" NOT NULL,
    type            TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    start_time_ns   BIGINT NOT NULL,
    end_time_ns     BIGINT,
    -- mlflow.chat.tokenUsage, for the trace's token total without reading content
    token_usage     TEXT,
    -- the MLflow span dict, as JSON text
    content         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (trace_key, span_id)
);
-- Span filters are answered per trace, through the primary key: no index on span fields.

-- A span attribute as the search reads it: the text of a JSON string, else the raw JSON.
CREATE FUNCTION tl_json_text(raw TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF raw IS NULL OR left(raw, 1) <> '"' THEN
        RETURN raw;
    END IF;
    RETURN raw::jsonb #>> '{}';
EXCEPTION WHEN invalid_text_representation THEN
    RETURN raw;
END;
$$;
