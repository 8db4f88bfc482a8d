"""Send spans with the stock OpenTelemetry Python SDK and exporters, read them back with MLflow.

    .venv/bin/python tests/python/otel_export.py http://127.0.0.1:5000 127.0.0.1:4317

Exports one trace over OTLP http/protobuf and one over OTLP gRPC, each to its own experiment
(header / metadata `x-mlflow-experiment-id`), then checks through the MLflow client that both
arrived whole. Prints `ok: N checks` or names the failing check and exits 1.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import checks  # noqa: E402
import mlflow  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

def send(exporter, service: str) -> str:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otel-export-test")
    with tracer.start_as_current_span("chat-request") as root:
        root.set_attribute("openinference.span.kind", "CHAIN")
        root.set_attribute("input.value", "what is tracing?")
        root.set_attribute("output.value", "recording every step")
        root.set_attribute("session.id", "conversation-7")
        with tracer.start_as_current_span("llm") as llm:
            llm.set_attribute("gen_ai.operation.name", "chat")
            llm.set_attribute("gen_ai.request.model", "gpt-x")
            llm.set_attribute("gen_ai.usage.input_tokens", 12)
            llm.set_attribute("gen_ai.usage.output_tokens", 3)
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    return f"tr-{trace_id}"


def main() -> None:
    http_uri, grpc_endpoint = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(http_uri)
    client = mlflow.MlflowClient()
    run = uuid.uuid4().hex[:8]
    http_exp = client.create_experiment(f"otel-http-{run}")
    grpc_exp = client.create_experiment(f"otel-grpc-{run}")

    http_id = send(
        HttpExporter(endpoint=f"{http_uri}/v1/traces", headers={"x-mlflow-experiment-id": http_exp}), "shop-http"
    )
    grpc_id = send(
        GrpcExporter(endpoint=grpc_endpoint, insecure=True, headers={"x-mlflow-experiment-id": grpc_exp}), "shop-grpc"
    )

    for exp, trace_id in [(http_exp, http_id), (grpc_exp, grpc_id)]:
        deadline = time.time() + 30
        traces = []
        while time.time() < deadline and not traces:
            traces = mlflow.search_traces(locations=[exp], return_type="list")
            time.sleep(0.2)
        checks.check(len(traces) == 1, f"experiment {exp} holds its one trace, found {len(traces)}")
        trace = traces[0]
        checks.check(trace.info.trace_id == trace_id, f"the MLflow id is the OTel trace id: {trace.info.trace_id}")
        checks.check(trace.info.state == "OK", f"state from the root span: {trace.info.state}")
        names = sorted(s.name for s in trace.data.spans)
        checks.check(names == ["chat-request", "llm"], f"both spans arrived: {names}")
        llm = next(s for s in trace.data.spans if s.name == "llm")
        root = next(s for s in trace.data.spans if s.name == "chat-request")
        checks.check(llm.parent_id == root.span_id, "the child keeps its parent")
        checks.check(llm.attributes.get("gen_ai.request.model") == "gpt-x", "string attributes arrive as strings")
        checks.check(llm.attributes.get("gen_ai.usage.input_tokens") == 12, "integer attributes arrive as integers")
        checks.check(trace.info.tags.get("mlflow.traceName") == "chat-request", "the trace is named after its root")
        # foreign conventions arrive translated
        checks.check(root.span_type == "CHAIN", f"OpenInference kind becomes the span type: {root.span_type}")
        checks.check(llm.span_type == "CHAT_MODEL", f"GenAI chat becomes CHAT_MODEL: {llm.span_type}")
        checks.check(root.inputs == "what is tracing?", f"input.value becomes the inputs: {root.inputs!r}")
        checks.check(trace.info.request_preview == '"what is tracing?"', f"the request preview is the inputs' JSON: {trace.info.request_preview!r}")
        usage = trace.info.token_usage or {}
        checks.check(usage.get("total_tokens") == 15, f"GenAI usage is summed into the trace: {usage}")
        checks.check(trace.info.trace_metadata.get("mlflow.trace.session") == "conversation-7", "session.id is the session")
    print(f"ok: {checks.passed} checks")


if __name__ == "__main__":
    main()
