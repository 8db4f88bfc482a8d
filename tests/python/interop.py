"""Prove traces move between tracelake and the stock MLflow Python package without loss.

Driven by the Rust interop integration test; needs the venv made by ``scripts/setup-python``.
Each JSONL line is one trace in MLflow's ``Trace.to_dict()`` shape.

    .venv/bin/python tests/python/interop.py write-mlflow OUT.jsonl
        Record a varied set of traces with the real mlflow package and dump them.
    .venv/bin/python tests/python/interop.py check-tracelake IN.jsonl
        Load traces written by tracelake; fail unless MLflow re-serializes each one exactly.
    .venv/bin/python tests/python/interop.py roundtrip IN.jsonl OUT.jsonl
        Load each trace with MLflow and write back what MLflow serializes.

Exit status: 0 on success, 1 when a check fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Set before mlflow is imported: it reads environment variables at import and first use.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Link, SpanEvent, SpanType, Trace

NON_ASCII = "héllo 世界"
TOKEN_USAGE_KEY = "mlflow.chat.tokenUsage"
TRACE_ID_PREFIX = "tr-"


class CheckFailed(Exception):
    """A trace did not survive the trip, or broke a semantic rule."""


# --------------------------------------------------------------------------------------------
# write-mlflow: the traced "application"
# --------------------------------------------------------------------------------------------


@mlflow.trace(span_type=SpanType.RETRIEVER, attributes={"retriever.k": 2, "index": "docs-v1"})
def retrieve(query: str) -> list[dict[str, Any]]:
    return [
        {"page_content": f"about {query}", "metadata": {"doc_uri": "doc://1", "score": 0.9}},
        {"page_content": NON_ASCII, "metadata": {"doc_uri": "doc://2", "tags": ["a", "b"]}},
    ]


@mlflow.trace(span_type=SpanType.TOOL)
def lookup_weather(city: str, units: str = "metric") -> dict[str, Any]:
    return {"city": city, "temp": 21.5, "units": units, "ok": True}


@mlflow.trace(span_type=SpanType.LLM, attributes={"model": "fake-llm-1"})
def complete(prompt: str) -> str:
    span = mlflow.get_current_active_span()
    if span is not None:
        span.set_attribute(
            TOKEN_USAGE_KEY, {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}
        )
    return f"answer to: {prompt}"


@mlflow.trace(span_type=SpanType.CHAT_MODEL)
def chat_model(messages: list[dict[str, str]]) -> dict[str, Any]:
    reply = {"role": "assistant", "content": f"{NON_ASCII}!"}
    return {"choices": [{"index": 0, "message": reply, "finish_reason": "stop"}]}


@mlflow.trace(span_type="MY_CUSTOM_TYPE", name="custom_step")
def custom_step(values: list[int]) -> dict[str, Any]:
    return {"sum": sum(values), "nested": {"list": values, "empty": {}, "none": None}}


@mlflow.trace(span_type=SpanType.CHAIN)
def chat_agent(messages: list[dict[str, str]]) -> dict[str, Any]:
    """Root of the nested trace: every common span type under one chat-shaped request."""
    mlflow.update_current_trace(
        tags={"env": "test", "team": NON_ASCII},
        metadata={"app.version": "1.2.3", "git.sha": "abc123"},
        client_request_id="req-42",
        session_id="session-7",
        user="alice",
    )
    question = messages[-1]["content"]
    docs = retrieve(question)
    weather = lookup_weather("Paris")
    answer = complete(f"{question} / {len(docs)} docs / {weather['temp']}")
    custom_step([1, 2, 3])
    return chat_model([*messages, {"role": "assistant", "content": answer}])


@mlflow.trace(span_type=SpanType.TOOL)
def flaky_tool(x: int) -> int:
    raise ValueError(f"flaky_tool cannot handle {x}")


@mlflow.trace
def caller_that_recovers(x: int) -> str:
    """A child fails (exception event, ERROR status) but the trace itself succeeds."""
    try:
        flaky_tool(x)
    except ValueError as exc:
        return f"recovered from {exc}"
    return "unreachable"


@mlflow.trace(span_type=SpanType.AGENT)
def failing_root(task: str) -> None:
    lookup_weather("Nowhere")
    raise RuntimeError(f"task {task!r} failed: {NON_ASCII}")


def trace_manual_spans(link_to: Link) -> None:
    """start_span with explicit inputs, outputs, attributes, an event and a link."""
    with mlflow.start_span(
        "manual_root", span_type=SpanType.CHAIN, description=f"describes {NON_ASCII}"
    ) as root:
        root.set_inputs({"query": NON_ASCII, "filters": {"lang": ["fr", "zh"], "limit": 5}})
        root.set_attribute("str_attr", NON_ASCII)
        root.set_attribute("int_attr", 7)
        root.set_attribute("float_attr", 0.25)
        root.set_attribute("bool_attr", True)
        root.set_attribute("list_attr", [1, "two", 3.0])
        root.set_attribute("dict_attr", {"a": {"b": [None, False]}})
        with mlflow.start_span(
            "linked_child", span_type=SpanType.PARSER, links=[link_to], log_level="WARNING"
        ) as child:
            child.set_inputs("plain string input")
            child.add_event(
                SpanEvent(
                    name="checkpoint",
                    attributes={"step": 3, "label": NON_ASCII, "ok": True, "ratio": 0.5},
                )
            )
            child.set_outputs(["x", {"y": 1}])
        root.set_outputs({"result": NON_ASCII, "count": 2})


def trace_with_client() -> None:
    """The imperative client API: start_trace / start_span / end_span / end_trace."""
    client = MlflowClient()
    root = client.start_trace(
        "client_root",
        span_type=SpanType.AGENT,
        inputs={"messages": [{"role": "user", "content": "from the client"}]},
        attributes={"client.attr": "yes"},
        tags={"via": "client"},
    )
    child = client.start_span(
        "client_child",
        trace_id=root.trace_id,
        parent_id=root.span_id,
        span_type=SpanType.EMBEDDING,
        inputs={"texts": ["a", NON_ASCII]},
        attributes={"dims": 3},
    )
    client.end_span(
        trace_id=root.trace_id,
        span_id=child.span_id,
        outputs=[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
        attributes={"cached": False},
    )
    client.end_trace(root.trace_id, outputs={"done": True}, attributes={"final": 1})


def record_traces() -> list[str]:
    """Run every scenario and return the ids of the traces they produced, in order."""
    ids: list[str] = []

    def last_id() -> str:
        trace_id = mlflow.get_last_active_trace_id()
        if trace_id is None or trace_id in ids:
            raise CheckFailed("mlflow did not record a new trace")
        return trace_id

    chat_agent([{"role": "user", "content": f"What is the weather? {NON_ASCII}"}])
    ids.append(last_id())

    root = fetch_trace(ids[0]).data.spans[0]
    trace_manual_spans(Link(trace_id=root.trace_id, span_id=root.span_id, attributes={"k": 1}))
    ids.append(last_id())

    caller_that_recovers(5)
    ids.append(last_id())

    with contextlib.suppress(RuntimeError):
        failing_root("deploy")
    ids.append(last_id())

    trace_with_client()
    ids.append(last_id())
    return ids


def cmd_write_mlflow(out: Path) -> int:
    # MLflow and its dependencies may print; keep stdout for the one result line.
    with (
        tempfile.TemporaryDirectory(prefix="tracelake-interop-") as tmp,
        contextlib.redirect_stdout(sys.stderr),
    ):
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        # Without an explicit location the store points artifacts at ./mlruns.
        artifacts = (Path(tmp) / "artifacts").as_uri()
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("interop", artifacts))
        trace_ids = record_traces()
        traces = [fetch_trace(trace_id) for trace_id in trace_ids]
    write_jsonl(out, (t.to_dict() for t in traces))
    print(f"wrote {len(traces)} traces to {out}")
    return 0


def fetch_trace(trace_id: str) -> Trace:
    trace = mlflow.get_trace(trace_id)
    if trace is None:
        raise CheckFailed(f"trace {trace_id} was not found in the store")
    return trace


# --------------------------------------------------------------------------------------------
# check-tracelake and roundtrip
# --------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise CheckFailed(f"{path} holds no traces; expected one JSON trace per line")
    dicts: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            dicts.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CheckFailed(f"{path}:{number}: not valid JSON: {exc}") from exc
    return dicts


def write_jsonl(path: Path, dicts: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for d in dicts:
            f.write(json.dumps(d) + "\n")


def load_trace(d: dict[str, Any], where: str) -> Trace:
    try:
        return Trace.from_dict(d)
    except Exception as exc:
        raise CheckFailed(f"{where}: Trace.from_dict rejected it: {exc!r}") from exc


def diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Every key path where two JSON values differ, with both sides."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(expected.keys() | actual.keys()):
            sub = f"{path}.{key}"
            if key not in actual:
                out.append(f"{sub}: missing after round trip (was {short(expected[key])})")
            elif key not in expected:
                out.append(f"{sub}: added by round trip ({short(actual[key])})")
            else:
                out.extend(diff(expected[key], actual[key], sub))
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: list length {len(expected)} became {len(actual)}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out.extend(diff(e, a, f"{path}[{i}]"))
        return out
    if type(expected) is not type(actual) or expected != actual:
        return [
            f"{path}: {short(expected)} ({type(expected).__name__}) became "
            f"{short(actual)} ({type(actual).__name__})"
        ]
    return []


def short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def check_lossless(d: dict[str, Any], trace: Trace, where: str) -> None:
    # Compare in JSON form: tuples and lists are the same thing once written to the wire.
    # diff() is type-strict, so 1 vs 1.0 or 1 vs True counts as a change, unlike ==.
    problems = diff(d, json.loads(json.dumps(trace.to_dict())))
    if problems:
        raise CheckFailed(
            f"{where}: MLflow does not re-serialize the trace identically:\n  "
            + "\n  ".join(problems)
        )


def check_semantics(d: dict[str, Any], trace: Trace, where: str) -> None:
    trace_id = trace.info.trace_id
    spans = trace.data.spans
    roots = [s for s in spans if s.parent_id is None]
    if len(roots) != 1:
        raise CheckFailed(f"{where}: expected exactly one root span, found {len(roots)}")
    span_ids = {s.span_id for s in spans}
    for span in spans:
        at = f"{where}: span {span.name!r} ({span.span_id})"
        if span.trace_id != trace_id:
            raise CheckFailed(f"{at}: trace_id {span.trace_id!r} != info trace_id {trace_id!r}")
        if span.parent_id is not None and span.parent_id not in span_ids:
            raise CheckFailed(f"{at}: parent {span.parent_id} is not a span of this trace")
        if not isinstance(span.span_type, str):
            raise CheckFailed(f"{at}: span_type is {type(span.span_type).__name__}, not str")
        check_exception_events(span.events, at)
    check_otel_trace_ids(d, trace_id, where)
    check_json_or_none("request", trace.data.request, where)
    check_json_or_none("response", trace.data.response, where)


def check_exception_events(events: list[SpanEvent], at: str) -> None:
    for event in events:
        if event.name == "exception":
            missing = {"exception.type", "exception.message"} - event.attributes.keys()
            if missing:
                raise CheckFailed(f"{at}: exception event lacks {sorted(missing)}")


def check_otel_trace_ids(d: dict[str, Any], trace_id: str, where: str) -> None:
    """Span.trace_id reads an attribute; the OTel id in each span dict must agree with it too."""
    if not trace_id.startswith(TRACE_ID_PREFIX):
        return  # other id schemes do not embed the OTel id this way
    want = trace_id.removeprefix(TRACE_ID_PREFIX)
    for i, span in enumerate(d["data"]["spans"]):
        got = base64.b64decode(span["trace_id"]).hex()
        if got != want:
            raise CheckFailed(f"{where}: spans[{i}].trace_id is OTel id {got}, not {want}")


def check_json_or_none(field: str, raw: str | None, where: str) -> None:
    if raw is None:
        return
    try:
        json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckFailed(f"{where}: data.{field} is not JSON: {short(raw)}") from exc


def cmd_check_tracelake(path: Path) -> int:
    dicts = read_jsonl(path)
    for number, d in enumerate(dicts, start=1):
        where = f"{path}:{number}"
        trace = load_trace(d, where)
        check_lossless(d, trace, where)
        check_semantics(d, trace, where)
    print(f"checked {len(dicts)} traces")
    return 0


def cmd_roundtrip(src: Path, dst: Path) -> int:
    dicts = read_jsonl(src)
    traces = [load_trace(d, f"{src}:{n}") for n, d in enumerate(dicts, start=1)]
    write_jsonl(dst, (t.to_dict() for t in traces))
    print(f"wrote {len(traces)} traces to {dst}")
    return 0


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write-mlflow", help="record traces with mlflow and dump them")
    write.add_argument("out", type=Path)
    check = sub.add_parser("check-tracelake", help="verify tracelake-written traces")
    check.add_argument("input", type=Path)
    roundtrip = sub.add_parser("roundtrip", help="re-serialize traces through mlflow")
    roundtrip.add_argument("input", type=Path)
    roundtrip.add_argument("out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.command == "write-mlflow":
            return cmd_write_mlflow(args.out)
        if args.command == "check-tracelake":
            return cmd_check_tracelake(args.input)
        return cmd_roundtrip(args.input, args.out)
    except CheckFailed as exc:
        print(f"interop: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
