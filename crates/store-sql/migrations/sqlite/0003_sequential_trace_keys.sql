-- tracelake SQLite schema, version 3: every trace gets a sequential integer key, and its spans,
-- tags, metadata and run links hang off that key. Trace ids are random, so keying child rows by
-- them scattered every insert across the B-trees (each dirty page written whole to the WAL);
-- with a sequential key, new rows append. Spans live in a rowid table: their rows are large.

CREATE TABLE traces_v3 (
    trace_key             INTEGER PRIMARY KEY,
    trace_id              TEXT    NOT NULL UNIQUE,
    experiment_id         INTEGER NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    request_time_ms       INTEGER NOT NULL,
    execution_duration_ms INTEGER,
    state                 TEXT    NOT NULL,
    client_request_id     TEXT,
    request_preview       TEXT,
    response_preview      TEXT,
    from_spans_only       INTEGER NOT NULL,
    assessments           TEXT    NOT NULL DEFAULT '[]'
);
INSERT INTO traces_v3 (trace_id, experiment_id, request_time_ms, execution_duration_ms, state, client_request_id,
                       request_preview, response_preview, from_spans_only, assessments)
    SELECT trace_id, experiment_id, request_time_ms, execution_duration_ms, state, client_request_id,
           request_preview, response_preview, from_spans_only, assessments
    FROM traces ORDER BY request_time_ms, trace_id;

CREATE TABLE trace_tags_v3 (
    trace_key INTEGER NOT NULL REFERENCES traces_v3(trace_key) ON DELETE CASCADE,
    key       TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    PRIMARY KEY (trace_key, key)
) WITHOUT ROWID;
INSERT INTO trace_tags_v3 SELECT t.trace_key, g.key, g.value FROM trace_tags g JOIN traces_v3 t USING (trace_id);

CREATE TABLE trace_metadata_v3 (
    trace_key INTEGER NOT NULL REFERENCES traces_v3(trace_key) ON DELETE CASCADE,
    key       TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    PRIMARY KEY (trace_key, key)
) WITHOUT ROWID;
INSERT INTO trace_metadata_v3 SELECT t.trace_key, m.key, m.value FROM trace_metadata m JOIN traces_v3 t USING (trace_id);

CREATE TABLE trace_runs_v3 (
    trace_key INTEGER NOT NULL REFERENCES traces_v3(trace_key) ON DELETE CASCADE,
    run_id    TEXT    NOT NULL,
    PRIMARY KEY (trace_key, run_id)
) WITHOUT ROWID;
INSERT INTO trace_runs_v3 SELECT t.trace_key, r.run_id FROM trace_runs r JOIN traces_v3 t USING (trace_id);

CREATE TABLE spans_v3 (
    trace_key       INTEGER NOT NULL REFERENCES traces_v3(trace_key) ON DELETE CASCADE,
    span_id         INTEGER NOT NULL,
    parent_span_id  INTEGER,
    name            TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    start_time_ns   INTEGER NOT NULL,
    end_time_ns     INTEGER,
    token_usage     TEXT,
    content         TEXT    NOT NULL
);
INSERT INTO spans_v3 SELECT t.trace_key, s.span_id, s.parent_span_id, s.name, s.type, s.status, s.start_time_ns,
                            s.end_time_ns, s.token_usage, s.content
    FROM spans s JOIN traces_v3 t USING (trace_id);

DROP TABLE spans;
DROP TABLE trace_runs;
DROP TABLE trace_metadata;
DROP TABLE trace_tags;
DROP TABLE traces;
ALTER TABLE traces_v3 RENAME TO traces;
ALTER TABLE trace_tags_v3 RENAME TO trace_tags;
ALTER TABLE trace_metadata_v3 RENAME TO trace_metadata;
ALTER TABLE trace_runs_v3 RENAME TO trace_runs;
ALTER TABLE spans_v3 RENAME TO spans;

CREATE INDEX traces_by_experiment_time ON traces (experiment_id, request_time_ms);
CREATE INDEX trace_tags_by_key_value ON trace_tags (key, value);
CREATE INDEX trace_metadata_by_key_value ON trace_metadata (key, value);
CREATE INDEX trace_runs_by_run ON trace_runs (run_id);
CREATE UNIQUE INDEX spans_by_trace ON spans (trace_key, span_id);
CREATE INDEX spans_by_type_status ON spans (type, status);
CREATE INDEX spans_by_name ON spans (name);
