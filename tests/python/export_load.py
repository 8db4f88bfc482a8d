"""The export benchmark's workload with the stock MLflow Python SDK: one process records traces
(a root and N-1 children with small inputs and outputs, as crates/cli/examples/export_load.rs
does) and exports them to a server with async logging; reports the caller cost per span and the
spans/s delivered once the async queue has been flushed.

Usage: export_load.py URL [--traces N] [--spans-per-trace S]
"""
import argparse
import time

import mlflow
from mlflow.entities import SpanType


def record(i: int, spans: int) -> None:
    with mlflow.start_span(name="request", span_type=SpanType.CHAIN) as root:
        root.set_inputs({"question": "what is tracing?", "n": i})
        for c in range(1, spans):
            with mlflow.start_span(name="step", span_type=SpanType.TOOL) as child:
                child.set_inputs({"step": c})
                child.set_attribute("model", "tiny-model")
                child.set_outputs("done")
        root.set_outputs("an answer")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--traces", type=int, default=2000)
    p.add_argument("--spans-per-trace", type=int, default=10)
    p.add_argument("--experiment", default="export-load")
    a = p.parse_args()
    mlflow.set_tracking_uri(a.url)
    mlflow.set_experiment(a.experiment)
    total = a.traces * a.spans_per_trace
    start = time.perf_counter()
    for i in range(a.traces):
        record(i, a.spans_per_trace)
    recorded = time.perf_counter() - start
    mlflow.flush_trace_async_logging(terminate=True)
    delivered = time.perf_counter() - start
    print(f"route mlflow-python to {a.url}")
    print(f"traces {a.traces}  spans {total}")
    print(f"caller cost per span: {recorded / total * 1e9:.0f} ns")
    print(f"recorded in {recorded:.2f} s: {total / recorded:.0f} spans/s")
    print(f"delivered in {delivered:.2f} s: {total / delivered:.0f} spans/s end to end")


if __name__ == "__main__":
    main()
