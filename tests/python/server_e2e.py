"""Drive a tracking server with the stock MLflow client and check every answer.

    .venv/bin/python tests/python/server_e2e.py http://127.0.0.1:5000 [--sync]

Run against `tracelake server`, and (as a differential test) against `mlflow server`: the
same calls must give the same answers. Prints `ok: N checks` and exits 0, or names the first
failing check and exits 1.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import checks  # noqa: E402
import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback, SpanType  # noqa: E402

@mlflow.trace(span_type=SpanType.RETRIEVER)
def retrieve(query: str, k: int = 2) -> list[dict]:
    return [{"id": f"doc-{i}", "text": f"{query} {i}"} for i in range(k)]


@mlflow.trace(span_type=SpanType.TOOL, attributes={"tool.version": 2})
def failing_tool(x: int) -> int:
    raise ValueError(f"bad input {x}")


@mlflow.trace(name="agent", span_type=SpanType.AGENT)
def agent(question: str, run: str) -> str:
    docs = retrieve(question)
    try:
        failing_tool(3)
    except ValueError:
        pass
    with mlflow.start_span("llm", span_type=SpanType.CHAT_MODEL) as span:
        span.set_inputs({"messages": [{"role": "user", "content": question}]})
        span.set_attribute("mlflow.chat.tokenUsage", {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7})
        span.set_outputs({"choices": [{"message": {"role": "assistant", "content": "fine"}}]})
    mlflow.update_current_trace(tags={"run": run, "env": "test"})
    return f"{len(docs)} docs"


def flush() -> None:
    mlflow.flush_trace_async_logging(terminate=False)


def wait_for(search, expected: int, what: str):
    """Spans and infos are written in the background: poll (bounded) until they are in."""
    deadline = time.time() + 30
    while True:
        found = search()
        if len(found) >= expected or time.time() > deadline:
            checks.check(len(found) == expected, f"{what}: expected {expected} traces, found {len(found)}")
            return found
        time.sleep(0.2)


def assessments(exp_id: str, trace_id: str) -> None:
    """Feedback and expectations on a trace: logged, read, updated, overridden, found, deleted."""
    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="reviewer")
    fb = mlflow.log_feedback(trace_id=trace_id, name="helpful", value=True, rationale="clear", source=source)
    got = mlflow.get_assessment(trace_id, fb.assessment_id)
    checks.check(got.value is True and got.rationale == "clear", f"feedback read back: {got}")
    checks.check(got.source.source_id == "reviewer" and got.valid is not False, "feedback source and validity")
    mlflow.update_assessment(trace_id, fb.assessment_id, Feedback(name="helpful", value=False))
    got = mlflow.get_assessment(trace_id, fb.assessment_id)
    checks.check(got.value is False and got.rationale == "clear", f"feedback updated, rationale kept: {got}")
    expected = mlflow.log_expectation(trace_id=trace_id, name="expected", value={"answer": 42}, source=source)
    names = sorted(a.name for a in mlflow.get_trace(trace_id).info.assessments)
    checks.check(names == ["expected", "helpful"], f"the trace carries its assessments: {names}")
    found = mlflow.search_traces(locations=[exp_id], filter_string="feedback.helpful = 'false'", return_type="list")
    checks.check([t.info.trace_id for t in found] == [trace_id], "search by feedback")
    newer = mlflow.override_feedback(trace_id=trace_id, assessment_id=fb.assessment_id, value=True, rationale="on reflection")
    checks.check(mlflow.get_assessment(trace_id, fb.assessment_id).valid is False, "an overridden feedback is not valid")
    checks.check(mlflow.get_assessment(trace_id, newer.assessment_id).value is True, "the overriding feedback")
    mlflow.delete_assessment(trace_id, expected.assessment_id)
    mlflow.delete_assessment(trace_id, newer.assessment_id)
    left = [(a.name, a.valid) for a in mlflow.get_trace(trace_id).info.assessments]
    checks.check(left == [("helpful", True)], f"deleting the override makes the first valid again: {left}")
    try:
        mlflow.get_assessment(trace_id, expected.assessment_id)
        checks.check(False, "a deleted assessment is gone")
    except mlflow.exceptions.MlflowException as e:
        checks.check(e.error_code == "RESOURCE_DOES_NOT_EXIST", f"deleted assessment: {e.error_code}")


def search_experiments(client: MlflowClient, run: str) -> None:
    """search_experiments with MLflow's filter grammar, order_by, pages and view types."""
    ids = {}
    for name, team in [("alpha", "search"), ("Beta", "chat"), ("gamma", "search")]:
        ids[name] = client.create_experiment(f"{name}-{run}", tags={"team": team, "run": run})
        time.sleep(0.005)  # distinct creation times, so "newest first" has one answer
    client.delete_experiment(ids["gamma"])

    def names(**kwargs) -> list[str]:
        found = mlflow.search_experiments(**kwargs)
        return [e.name.removesuffix(f"-{run}") for e in found]

    mine = f"tags.run = '{run}'"
    checks.check(names(filter_string=mine) == ["Beta", "alpha"], f"newest first by default: {names(filter_string=mine)}")
    checks.check(names(filter_string=mine, order_by=["name ASC"]) == ["Beta", "alpha"], "order by name")
    checks.check(
        names(filter_string=f"{mine} AND tags.team = 'search'", view_type=mlflow.entities.ViewType.ALL)
        == ["gamma", "alpha"],
        "tag filter over active and deleted",
    )
    checks.check(names(filter_string=f"name LIKE 'alpha-{run}'") == ["alpha"], "name LIKE")
    checks.check(names(filter_string=f"name LIKE 'beta-{run}'") == [], "LIKE is case-sensitive")
    checks.check(names(filter_string=f"name ILIKE 'beta-{run}'") == ["Beta"], "ILIKE is not")
    checks.check(
        names(filter_string=mine, view_type=mlflow.entities.ViewType.DELETED_ONLY) == ["gamma"],
        "deleted experiments only",
    )
    alpha = client.get_experiment(ids["alpha"])
    checks.check(
        names(filter_string=f"{mine} AND creation_time < {alpha.creation_time}") == [],
        "creation_time filter",
    )
    id_filter = f"experiment_id IN ('{ids['alpha']}', '{ids['gamma']}')"
    checks.check(names(filter_string=id_filter) == ["alpha"], "experiment_id IN")

    page = client.search_experiments(filter_string=mine, max_results=1, order_by=["name DESC"])
    checks.check([e.name for e in page] == [f"alpha-{run}"] and page.token, "a first page and its token")
    page = client.search_experiments(filter_string=mine, max_results=1, order_by=["name DESC"], page_token=page.token)
    checks.check([e.name for e in page] == [f"Beta-{run}"] and not page.token, "the last page has no token")

    client.set_experiment_tag(ids["alpha"], "owner", "me")
    checks.check(client.get_experiment(ids["alpha"]).tags.get("owner") == "me", "set_experiment_tag")
    client.delete_experiment_tag(ids["alpha"], "owner")
    checks.check("owner" not in client.get_experiment(ids["alpha"]).tags, "delete_experiment_tag")
    try:
        client.delete_experiment_tag(ids["alpha"], "owner")
        checks.check(False, "deleting a missing experiment tag is refused")
    except mlflow.exceptions.MlflowException as e:
        checks.check(e.error_code == "RESOURCE_DOES_NOT_EXIST", f"missing experiment tag: {e.error_code}")

    for bad in ["name = 'x' OR name = 'y'", "owner = 'me'", "creation_time > 'yesterday'"]:
        try:
            mlflow.search_experiments(filter_string=bad)
            checks.check(False, f"a bad experiment filter is refused: {bad}")
        except mlflow.exceptions.MlflowException as e:
            checks.check(e.error_code == "INVALID_PARAMETER_VALUE", f"{bad}: {e.error_code}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tracking_uri")
    parser.add_argument("--sync", action="store_true", help="turn async trace logging off")
    args = parser.parse_args()
    if args.sync:
        os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

    mlflow.set_tracking_uri(args.tracking_uri)
    client = MlflowClient()
    run = uuid.uuid4().hex[:8]
    experiment = mlflow.set_experiment(f"e2e-{run}")
    exp_id = experiment.experiment_id
    checks.check(client.get_experiment_by_name(f"e2e-{run}").experiment_id == exp_id, "experiment found by name")

    search_experiments(client, run)

    for i in range(3):
        agent(f"question {i}", run)
    wrapped = mlflow.trace(pow)
    checks.check(wrapped(2, 5) == 32, "a wrapped function still works")
    root = client.start_trace("client-root", inputs={"x": 1})
    child = client.start_span("client-child", trace_id=root.trace_id, parent_id=root.span_id, inputs={"y": 2})
    client.end_span(trace_id=root.trace_id, span_id=child.span_id, outputs={"z": 3})
    client.end_trace(trace_id=root.trace_id, outputs={"done": True})
    flush()

    tagged = wait_for(
        lambda: mlflow.search_traces(
            locations=[exp_id], filter_string=f"tag.run = '{run}'", return_type="list", order_by=["timestamp_ms ASC"]
        ),
        3,
        "search by tag",
    )
    for trace in tagged:
        names = sorted(s.name for s in trace.data.spans)
        checks.check(names == ["agent", "failing_tool", "llm", "retrieve"], f"all spans of the trace are stored: {names}")
        root_span = next(s for s in trace.data.spans if s.parent_id is None)
        checks.check(root_span.span_type == SpanType.AGENT, "span type round-trips")
        checks.check(root_span.inputs["question"].startswith("question"), "root inputs round-trip")
        checks.check(trace.info.response_preview is not None, "response preview is set")
        bad = next(s for s in trace.data.spans if s.name == "failing_tool")
        checks.check(bad.status.status_code == "ERROR", "the failing span is ERROR")
        checks.check(any(e.name == "exception" for e in bad.events), "the exception event is stored")
        checks.check(bad.attributes.get("tool.version") == 2, "decorator attributes round-trip")
        retr = next(s for s in trace.data.spans if s.name == "retrieve")
        checks.check(retr.outputs[0]["id"] == "doc-0", "outputs round-trip")
        checks.check(trace.info.tags.get("env") == "test", "update_current_trace tags are stored")
        checks.check(trace.info.token_usage and trace.info.token_usage.get("total_tokens") == 7, "token usage is summed")

    first = tagged[0].info.trace_id
    got = mlflow.get_trace(first)
    checks.check(got is not None and got.info.trace_id == first, "get_trace finds the trace")
    checks.check(len(got.data.spans) == 4, "get_trace returns every span")

    # 3 agent traces, 1 wrapped pow, 1 client-API trace
    seen: list[str] = []
    token = None
    while True:
        page = client.search_traces(locations=[exp_id], max_results=2, order_by=["timestamp_ms DESC"], page_token=token)
        checks.check(len(page) <= 2, "a page holds at most max_results traces")
        seen.extend(t.info.trace_id for t in page)
        token = page.token
        if not token:
            break
    checks.check(len(seen) == 5 and len(set(seen)) == 5, f"pages cover every trace once: {seen}")

    ok = mlflow.search_traces(locations=[exp_id], filter_string="status = 'OK'", return_type="list")
    checks.check(len(ok) == 5, f"status filter found {len(ok)}")
    pow_traces = mlflow.search_traces(locations=[exp_id], filter_string="name = 'pow'", return_type="list")
    checks.check(len(pow_traces) == 1 and pow_traces[0].data.spans[0].outputs == 32, "the wrapped function's trace")
    client_traces = mlflow.search_traces(locations=[exp_id], filter_string="name = 'client-root'", return_type="list")
    checks.check(len(client_traces) == 1, "client-API trace is found by name")
    checks.check(client_traces[0].data.spans and len(client_traces[0].data.spans) == 2, "client-API trace has both spans")

    client.set_trace_tag(first, "reviewed", "yes")
    checks.check(mlflow.get_trace(first).info.tags.get("reviewed") == "yes", "set_trace_tag")
    client.delete_trace_tag(first, "reviewed")
    checks.check("reviewed" not in mlflow.get_trace(first).info.tags, "delete_trace_tag")

    assessments(exp_id, first)

    try:
        mlflow.search_traces(locations=[exp_id], filter_string="tag.run = unquoted")
        checks.check(False, "a bad filter is refused")
    except Exception as e:  # noqa: BLE001 - the client raises MlflowException
        checks.check("INVALID_PARAMETER_VALUE" in str(e) or "invalid" in str(e).lower(), f"a bad filter names the problem: {e}")

    deleted = client.delete_traces(exp_id, trace_ids=[first])
    checks.check(deleted == 1, f"delete by id deleted {deleted}")
    deleted = client.delete_traces(exp_id, max_timestamp_millis=int(time.time() * 1000) + 60_000, max_traces=1)
    checks.check(deleted == 1, f"delete by time and count deleted {deleted}")
    left = client.search_traces(locations=[exp_id])
    checks.check(len(left) == 3, f"three traces left, found {len(left)}")

    with mlflow.start_run(run_name=f"run-{run}") as active:
        agent("inside a run", run)
    flush()
    run_id = active.info.run_id
    checks.check(client.get_run(run_id).info.status == "FINISHED", "the run is ended")
    in_run = wait_for(lambda: mlflow.search_traces(run_id=run_id, return_type="list"), 1, "search by run_id")
    checks.check(in_run[0].info.trace_metadata.get("mlflow.sourceRun") == run_id, "the trace names its run")
    print(f"ok: {checks.passed} checks")


if __name__ == "__main__":
    main()
