"""The lake, written by clients no one here wrote and read by engines no one here wrote.

    .venv/bin/python tests/python/lake_interop.py http://127.0.0.1:5000 127.0.0.1:4317 LAKE_ROOT

LAKE_ROOT is the server's `--lake-root`: a directory, or `s3://bucket/prefix` (then the `AWS_*`
variables name the S3-compatible endpoint, as for the server).

1. The OpenTelemetry Python exporters (http/protobuf and gRPC) send OpenInference- and
   GenAI-shaped traces to `main.agents` by the `X-Tracelake-Table-Name` header.
2. The stock MLflow client logs traces into an experiment linked to `main.linked`
   (`POST /api/4.0/mlflow/traces/{id}/link-location`), then searches, reads, tags and deletes
   them through the ordinary REST API; the header-routed traces read back through it too.
3. polars and duckdb read every row and column of the tables (duckdb from the Parquet files the
   Delta log lists), types intact, and agree with the server's SQL endpoint (JSON, CSV, Arrow).

Prints `ok: N checks` or names the failing check and exits 1.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import checks  # noqa: E402
import duckdb  # noqa: E402
import mlflow  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import requests  # noqa: E402
from deltalake import DeltaTable  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter  # noqa: E402
from opentelemetry._logs import SeverityNumber  # noqa: E402
from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

SPANS = "mlflow_experiment_trace_otel_spans"
LOGS = "mlflow_experiment_trace_otel_logs"
METRICS = "mlflow_experiment_trace_otel_metrics"
INFO = "mlflow_experiment_trace_info"
HEADER = "x-tracelake-table-name"


def send(exporter, service: str, model: str) -> str:
    """One agent trace: a chain root, an LLM call with token usage, a failing tool."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("lake-interop", "1.2.3")
    with tracer.start_as_current_span("agent") as root:
        root.set_attribute("openinference.span.kind", "AGENT")
        root.set_attribute("input.value", "plan a trip")
        root.set_attribute("output.value", "done")
        root.set_attribute("session.id", "trip-1")
        with tracer.start_as_current_span("chat") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.request.model", model)
            llm.set_attribute("gen_ai.usage.input_tokens", 40)
            llm.set_attribute("gen_ai.usage.output_tokens", 8)
        with tracer.start_as_current_span("tool") as tool:
            tool.set_attribute("openinference.span.kind", "TOOL")
            try:
                raise ValueError("no flights")
            except ValueError as e:
                tool.record_exception(e)
                tool.set_status(Status(StatusCode.ERROR, "no flights"))
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


def send_logs_and_metrics(log_exporter, metric_exporter, service: str, run: str) -> None:
    """Two log records and a counter plus a histogram, tagged with `run`."""
    resource = Resource.create({"service.name": service})
    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger = logs.get_logger("lake-interop", "1.2.3")
    for level, text in [(SeverityNumber.INFO, "planning"), (SeverityNumber.ERROR, "no flights")]:
        logger.emit(severity_number=level, severity_text=level.name, body=text, attributes={"run": run})
    logs.shutdown()
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meters.get_meter("lake-interop", "1.2.3")
    meter.create_counter("llm.calls").add(3, {"run": run})
    meter.create_histogram("llm.latency", unit="ms").record(120.0, {"run": run})
    meters.shutdown()


def storage_options(root: str) -> dict[str, str]:
    if not root.startswith("s3://"):
        return {}
    keys = ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP"]
    return {k: os.environ[k] for k in keys if k in os.environ}


def table_uri(root: str, schema: str, table: str) -> str:
    catalog, name = schema.split(".")
    return f"{root.rstrip('/')}/{catalog}/{name}/{table}"


def sql(url: str, query: str, fmt: str = "json") -> requests.Response:
    r = requests.post(f"{url}/api/2.0/tracelake/sql", json={"query": query, "format": fmt}, timeout=60)
    checks.check(r.status_code == 200, f"SQL answered {r.status_code}: {r.text[:300]}")
    return r


def main() -> None:
    url, grpc_endpoint, lake_root = sys.argv[1], sys.argv[2], sys.argv[3]
    options = storage_options(lake_root)
    mlflow.set_tracking_uri(url)
    client = mlflow.MlflowClient()

    # 1. third-party OTLP clients write to a table by header
    table = f"main.agents.{SPANS}"
    http_id = send(HttpExporter(endpoint=f"{url}/v1/traces", headers={HEADER: table}), "shop-http", "gpt-x")
    grpc_id = send(GrpcExporter(endpoint=grpc_endpoint, insecure=True, headers={HEADER: table}), "shop-grpc", "gpt-y")
    bad = requests.post(
        f"{url}/v1/traces",
        data=b"",
        headers={"content-type": "application/x-protobuf", HEADER: "main.agents"},
        timeout=10,
    )
    checks.check(bad.status_code == 400 and "<catalog>.<schema>.<table>" in bad.text, f"bad table header: {bad.text}")

    for hex_id, service, model in [(http_id, "shop-http", "gpt-x"), (grpc_id, "shop-grpc", "gpt-y")]:
        trace = mlflow.get_trace(f"trace:/main.agents/{hex_id}")
        checks.check(trace is not None, f"trace {hex_id} readable through the MLflow client")
        checks.check(len(trace.data.spans) == 3, f"3 spans, got {len(trace.data.spans)}")
        types = {s.name: s.span_type for s in trace.data.spans}
        checks.check(types == {"agent": "AGENT", "chat": "CHAT_MODEL", "tool": "TOOL"}, f"span types {types}")
        root = next(s for s in trace.data.spans if s.parent_id is None)
        checks.check(root.inputs == "plan a trip" and root.outputs == "done", f"root io {root.inputs!r} {root.outputs!r}")
        usage = json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])
        checks.check(usage["input_tokens"] == 40 and usage["total_tokens"] == 48, f"token usage {usage}")
        checks.check(trace.info.trace_metadata.get("mlflow.trace.session") == "trip-1", "session from session.id")
        checks.check(str(trace.info.state) in ("OK", "TraceState.OK"), f"state {trace.info.state}")

    run = uuid.uuid4().hex[:8]
    logs_table, metrics_table = f"main.agents.{LOGS}", f"main.agents.{METRICS}"
    send_logs_and_metrics(
        HttpLogExporter(endpoint=f"{url}/v1/logs", headers={HEADER: logs_table}),
        HttpMetricExporter(endpoint=f"{url}/v1/metrics", headers={HEADER: metrics_table}),
        "shop-http",
        run,
    )
    send_logs_and_metrics(
        GrpcLogExporter(endpoint=grpc_endpoint, insecure=True, headers={HEADER: logs_table}),
        GrpcMetricExporter(endpoint=grpc_endpoint, insecure=True, headers={HEADER: metrics_table}),
        "shop-grpc",
        run,
    )
    ours_run = f"attributes['run'] = '\"{run}\"'"
    log_rows = sql(url, f"SELECT service_name, severity_text, body FROM {logs_table} WHERE {ours_run} ORDER BY 1, 2").json()
    checks.check(
        [(r["service_name"], r["severity_text"], r["body"]) for r in log_rows]
        == [(svc, sev, f'"{text}"') for svc in ("shop-grpc", "shop-http") for sev, text in (("ERROR", "no flights"), ("INFO", "planning"))],
        f"log rows {log_rows}",
    )
    metric_rows = sql(
        url, f"SELECT name, metric_type, value, count, sum FROM {metrics_table} WHERE {ours_run} ORDER BY name, service_name"
    ).json()
    checks.check(
        [(r["name"], r["metric_type"], r["value"], r["count"], r["sum"]) for r in metric_rows]
        == [("llm.calls", "sum", 3.0, None, None)] * 2 + [("llm.latency", "histogram", None, 1, 120.0)] * 2,
        f"metric rows {metric_rows}",
    )

    # 2. the MLflow client on an experiment linked to a lake schema
    exp = client.create_experiment(f"lake-linked-{run}")
    r = requests.post(
        f"{url}/api/4.0/mlflow/traces/{exp}/link-location",
        json={"experiment_id": exp, "uc_schema": {"catalog_name": "main", "schema_name": "linked"}},
        timeout=30,
    )
    checks.check(r.status_code == 200, f"link-location answered {r.status_code}: {r.text}")
    mlflow.set_experiment(experiment_id=exp)

    @mlflow.trace(span_type="TOOL")
    def lookup(city: str) -> str:
        return f"weather in {city}: sunny"

    @mlflow.trace(span_type="AGENT")
    def answer(question: str, n: int) -> str:
        mlflow.update_current_trace(tags={"n": str(n)})
        return lookup(question.split()[-1])

    for i in range(3):
        answer(f"weather in city{i}", i)
    mlflow.flush_trace_async_logging()

    found = client.search_traces(locations=[exp], max_results=10)
    checks.check(len(found) == 3, f"3 traces in the linked experiment, got {len(found)}")
    checks.check(all(t.info.trace_id.startswith("tr-") for t in found), "linked traces keep tr- ids")
    tagged = client.search_traces(locations=[exp], filter_string="tag.n = '1'")
    checks.check(len(tagged) == 1, f"tag filter finds 1, got {len(tagged)}")
    by_span = client.search_traces(locations=[exp], filter_string="span.type = 'TOOL'")
    checks.check(len(by_span) == 3, f"span.type filter finds 3, got {len(by_span)}")
    one = client.get_trace(tagged[0].info.trace_id)
    checks.check({s.name for s in one.data.spans} == {"answer", "lookup"}, "spans of a linked trace")
    root = next(s for s in one.data.spans if s.parent_id is None)
    checks.check(root.inputs == {"question": "weather in city1", "n": 1}, f"inputs {root.inputs}")
    checks.check(root.outputs == "weather in city1: sunny", f"outputs {root.outputs}")
    client.set_trace_tag(one.info.trace_id, "reviewed", "yes")
    checks.check(client.get_trace(one.info.trace_id).info.tags.get("reviewed") == "yes", "tag set on a lake trace")
    client.delete_trace_tag(one.info.trace_id, "reviewed")
    checks.check("reviewed" not in client.get_trace(one.info.trace_id).info.tags, "tag deleted on a lake trace")
    deleted = client.delete_traces(exp, trace_ids=[one.info.trace_id])
    checks.check(deleted == 1, f"deleted {deleted}")
    checks.check(len(client.search_traces(locations=[exp])) == 2, "2 traces left after deleting one")
    linked_traces = {t.info.trace_id[3:] for t in client.search_traces(locations=[exp])}

    # 3. outside engines read the tables; the SQL endpoint agrees
    for schema, want_traces in [("main.agents", {http_id, grpc_id}), ("main.linked", linked_traces)]:
        uri = table_uri(lake_root, schema, SPANS)
        dt = DeltaTable(uri, storage_options=options)
        files = dt.file_uris()
        frame = pl.read_delta(uri, storage_options=options)
        served = sql(url, f"SELECT * FROM {schema}.{SPANS} ORDER BY trace_id, span_id").json()
        checks.check(frame.height == len(served), f"{schema}: polars reads {frame.height} rows, SQL {len(served)}")
        checks.check(list(frame.columns) == list(served[0].keys()), f"{schema}: same columns")
        types = frame.schema
        checks.check(types["time"] == pl.Datetime("us", "UTC"), f"time is {types['time']}")
        checks.check(types["date"] == pl.Date, f"date is {types['date']}")
        checks.check(types["attributes"] == pl.Map(pl.String, pl.String), f"attributes is {types['attributes']}")
        checks.check(isinstance(types["events"], pl.List), f"events is {types['events']}")
        checks.check(types["start_time_unix_nano"] == pl.Int64, "nanosecond times are int64")
        for typed, want_type in [("span_type", pl.String), ("llm_model", pl.String), ("input_tokens", pl.Int64),
                                 ("output_tokens", pl.Int64), ("total_tokens", pl.Int64)]:
            checks.check(types[typed] == want_type, f"{typed} is {types[typed]}")
        if want_traces is not None:
            checks.check(want_traces <= set(frame["trace_id"].to_list()), "the header-routed traces are in polars")
            frame = frame.filter(pl.col("trace_id").is_in(list(want_traces)))
        if schema == "main.agents":
            errors = frame.filter(pl.col("status").struct.field("code") == "STATUS_CODE_ERROR")
            checks.check(errors.height == 2, f"two failing tool spans, got {errors.height}")
            events = errors["events"].to_list()[0]
            checks.check(events[0]["name"] == "exception", f"exception event {events}")
        if schema == "main.agents":
            services = set(frame["service_name"].to_list())
            checks.check(services == {"shop-http", "shop-grpc"}, f"service names {services}")
            scopes = {s["name"] for s in frame["instrumentation_scope"].to_list()}
            checks.check(scopes == {"lake-interop"}, f"scopes {scopes}")
            llm = frame.filter(pl.col("llm_model").is_not_null()).sort("llm_model")
            checks.check(
                llm.select("llm_model", "input_tokens", "output_tokens", "total_tokens").rows()
                == [("gpt-x", 40, 8, 48), ("gpt-y", 40, 8, 48)],
                f"typed GenAI columns {llm.select('llm_model', 'input_tokens', 'output_tokens', 'total_tokens').rows()}",
            )
            checks.check(set(llm["span_type"].to_list()) == {"CHAT_MODEL"}, f"span types {llm['span_type'].to_list()}")
            pairs = [
                (k, dict(a).get("mlflow.spanType"))
                for k, a in zip(frame["span_type"].to_list(), frame["attributes"].to_list())
            ]
            checks.check(
                all((k is None and v is None) or (v is not None and json.loads(v) == k) for k, v in pairs),
                f"span_type copies mlflow.spanType: {pairs}",
            )
        if not options:
            # duckdb reads the Parquet files the Delta log lists (its delta extension downloads
            # at run time, which these machines cannot)
            con = duckdb.connect()
            rows = con.execute(
                "SELECT trace_id, span_id, name, attributes, typeof(attributes), typeof(time), typeof(events), "
                "typeof(input_tokens) "
                "FROM read_parquet(?, hive_partitioning = true) ORDER BY trace_id, span_id",
                [files],
            ).fetchall()
            checks.check(len(rows) == len(served), f"{schema}: duckdb reads {len(rows)} rows")
            checks.check(
                [(r[0], r[1], r[2]) for r in rows] == [(s["trace_id"], s["span_id"], s["name"]) for s in served],
                f"{schema}: duckdb rows match",
            )
            checks.check(rows[0][4] == "MAP(VARCHAR, VARCHAR)", f"duckdb map type {rows[0][4]}")
            checks.check(rows[0][5] == "TIMESTAMP WITH TIME ZONE", f"duckdb time type {rows[0][5]}")
            checks.check(rows[0][6].endswith("[]"), f"duckdb events type {rows[0][6]}")
            checks.check(rows[0][7] == "BIGINT", f"duckdb token count type {rows[0][7]}")

    for table, want in [(LOGS, 4), (METRICS, 4)]:
        frame = pl.read_delta(table_uri(lake_root, "main.agents", table), storage_options=options)
        mine = frame.filter(pl.col("attributes").map_elements(lambda m: dict(m).get("run") == f'"{run}"', return_dtype=pl.Boolean))
        checks.check(mine.height == want, f"polars reads {mine.height} rows of {table}, want {want}")
    info = pl.read_delta(table_uri(lake_root, "main.linked", INFO), storage_options=options)
    latest = info.sort("version").group_by("trace_id").last().filter(pl.col("trace_id").is_in(list(linked_traces)))
    checks.check(latest.height == 2, f"2 traces in the info table, got {latest.height}")
    checks.check(set(latest["experiment_id"].to_list()) == {exp}, "infos name their experiment")
    ours = f"trace_id IN ('{http_id}', '{grpc_id}')"
    tokens = sql(
        url,
        f"SELECT attributes['gen_ai.request.model'] AS model, date, "
        f"sum(CAST(attributes['gen_ai.usage.input_tokens'] AS BIGINT)) AS input_tokens "
        f"FROM main.agents.{SPANS} WHERE {ours} AND attributes['gen_ai.request.model'] IS NOT NULL "
        f"GROUP BY 1, 2 ORDER BY 1",
    ).json()
    checks.check([(t["model"], t["input_tokens"]) for t in tokens] == [('"gpt-x"', 40), ('"gpt-y"', 40)], f"{tokens}")
    typed = sql(
        url,
        f"SELECT llm_model, date, sum(input_tokens) AS input_tokens, sum(total_tokens) AS total_tokens "
        f"FROM main.agents.{SPANS} WHERE {ours} AND llm_model IS NOT NULL GROUP BY 1, 2 ORDER BY 1",
    ).json()
    checks.check(
        [(t["llm_model"], t["input_tokens"], t["total_tokens"]) for t in typed] == [("gpt-x", 40, 48), ("gpt-y", 40, 48)],
        f"the GROUP BY on typed columns: {typed}",
    )
    csv = sql(url, f"SELECT trace_id, name FROM main.agents.{SPANS} WHERE {ours} ORDER BY trace_id, name", "csv").text
    checks.check(csv.splitlines()[0] == "trace_id,name" and len(csv.splitlines()) == 7, f"csv {csv!r}")
    count = f"SELECT count(*) AS n FROM main.agents.{SPANS} WHERE {ours}"
    arrow = pa.ipc.open_stream(io.BytesIO(sql(url, count, "arrow").content))
    checks.check(arrow.read_all().column("n").to_pylist() == [6], "arrow IPC result")
    bad = requests.post(f"{url}/api/2.0/tracelake/sql", json={"query": "SELECT name FROM t WHERE )"}, timeout=30)
    checks.check(bad.status_code == 400 and "Line: 1, Column: 26" in bad.text, f"bad SQL: {bad.status_code} {bad.text}")
    missing = requests.post(f"{url}/api/2.0/tracelake/sql", json={"query": "SELECT * FROM main.nope.t"}, timeout=30)
    checks.check(missing.status_code == 400 and "main.nope.t" in missing.text, f"unknown table: {missing.text}")
    print(f"ok: {checks.passed} checks")


if __name__ == "__main__":
    main()
    # deltalake's runtime can abort while the interpreter tears down; the checks are done
    sys.stdout.flush()
    os._exit(0)
