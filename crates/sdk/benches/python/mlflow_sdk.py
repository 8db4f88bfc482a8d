"""Benchmark the stock MLflow Python SDK on the same work as tracelake's criterion benches.

The figures are the denominators of the ratios we report, so the setup is MLflow's default one:
a fresh local SQLite tracking store in a temp dir and asynchronous trace logging left on.

    scripts/setup-python
    .venv/bin/python crates/sdk/benches/python/mlflow_sdk.py [--quick] > mlflow_sdk.json

Prints one JSON object on stdout; progress goes to stderr. Cases:

    single      caller-side ns per call of a traced ``add(1, 2)``: one whole one-span trace
    nested10    caller-side ns per trace of ten nested traced calls f0 -> ... -> f9
    child       ns per extra child span (start + end, small inputs/outputs) in an open trace
    disabled    ns per traced call with tracing disabled, and per plain call for reference
    throughput  spans/s end to end (calls + flush to the store), and how many traces landed

Timed batches of the caller-side cases start with an empty export queue (flushed, untimed,
between batches): MLflow drops traces once its bounded queue is full, and a dropped trace is
cheaper than a logged one, so a backlog would flatter it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Set before mlflow is imported: it reads environment variables at import and first use.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import mlflow
from mlflow import MlflowClient

log = logging.getLogger("mlflow_sdk_bench")


@dataclass(frozen=True)
class Plan:
    """How much work each case does; --quick shrinks everything for a smoke run."""

    warmup: int
    batches: int
    per_batch: int
    nested_per_batch: int
    throughput_traces: int
    disabled_per_batch: int

    # Every span MLflow logs costs ~30 ms of SQLite writes on a 2-core machine, and each flush
    # between caller-side batches idles up to 1 s (its consumer polls with a 1 s timeout), so
    # spans and batches, not calls, set the run time: this keeps the full run under 3 minutes.
    @classmethod
    def full(cls) -> Plan:
        return cls(
            warmup=30,
            batches=15,
            per_batch=30,
            nested_per_batch=3,
            throughput_traces=2000,
            disabled_per_batch=5000,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            warmup=10,
            batches=5,
            per_batch=20,
            nested_per_batch=2,
            throughput_traces=200,
            disabled_per_batch=1000,
        )


@dataclass(frozen=True)
class Summary:
    median_ns: float
    min_ns: float
    max_ns: float

    def to_dict(self) -> dict[str, float]:
        return {
            "median": round(self.median_ns, 1),
            "min": round(self.min_ns, 1),
            "max": round(self.max_ns, 1),
        }


def summarize(per_op_ns: list[float]) -> Summary:
    return Summary(statistics.median(per_op_ns), min(per_op_ns), max(per_op_ns))


def time_batch(body: Callable[[], None], ops: int) -> float:
    """ns per op of one batch; ``body`` performs ``ops`` operations."""
    start = time.perf_counter_ns()
    body()
    return (time.perf_counter_ns() - start) / ops


def flush() -> None:
    mlflow.flush_trace_async_logging()


def repeat(fn: Callable[..., Any], n: int, *args: Any) -> Callable[[], None]:
    def body() -> None:
        for _ in range(n):
            fn(*args)

    return body


def run_batches(body: Callable[[], None], ops: int, plan: Plan, *, flush_between: bool) -> Summary:
    body()  # warm-up batch
    if flush_between:
        flush()
    samples: list[float] = []
    for _ in range(plan.batches):
        samples.append(time_batch(body, ops))
        if flush_between:
            flush()
    return summarize(samples)


# --------------------------------------------------------------------------------------------
# traced workloads
# --------------------------------------------------------------------------------------------


def plain_add(a: int, b: int) -> int:
    return a + b


traced_add = mlflow.trace(plain_add, name="add")


def nested_chain(depth: int) -> Callable[[int], int]:
    """f0 -> f1 -> ... -> f{depth-1}, each traced, each taking and returning a small int."""

    def leaf(x: int) -> int:
        return x + 1

    fn: Callable[[int], int] = mlflow.trace(leaf, name=f"f{depth - 1}")
    for i in reversed(range(depth - 1)):
        fn = mlflow.trace(calls(fn), name=f"f{i}")
    return fn


def calls(inner: Callable[[int], int]) -> Callable[[int], int]:
    def step(x: int) -> int:
        return inner(x) + 1

    return step


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------


def bench_single(plan: Plan) -> dict[str, Any]:
    summary = run_batches(
        repeat(traced_add, plan.per_batch, 1, 2), plan.per_batch, plan, flush_between=True
    )
    return {"ns_per_call": summary.to_dict(), "calls_per_batch": plan.per_batch}


def bench_nested10(plan: Plan) -> dict[str, Any]:
    f0 = nested_chain(10)
    if f0(0) != 10:
        raise AssertionError("nested chain computes the wrong value")
    summary = run_batches(
        repeat(f0, plan.nested_per_batch, 0), plan.nested_per_batch, plan, flush_between=True
    )
    return {
        "ns_per_trace": summary.to_dict(),
        "spans_per_trace": 10,
        "traces_per_batch": plan.nested_per_batch,
    }


def bench_child(plan: Plan) -> dict[str, Any]:
    """Each batch opens a root span (untimed) and times only the child spans inside it."""
    children = repeat(traced_add, plan.per_batch, 1, 2)

    def in_root() -> float:
        with mlflow.start_span("root"):
            return time_batch(children, plan.per_batch)

    in_root()
    flush()
    samples = []
    for _ in range(plan.batches):
        samples.append(in_root())
        flush()
    return {"ns_per_span": summarize(samples).to_dict(), "spans_per_root": plan.per_batch}


def bench_disabled(plan: Plan) -> dict[str, Any]:
    n = plan.disabled_per_batch
    mlflow.tracing.disable()
    try:
        traced = run_batches(repeat(traced_add, n, 1, 2), n, plan, flush_between=False)
    finally:
        mlflow.tracing.enable()
    plain = run_batches(repeat(plain_add, n, 1, 2), n, plan, flush_between=False)
    return {
        "traced_ns_per_call": traced.to_dict(),
        "plain_ns_per_call": plain.to_dict(),
        "calls_per_batch": n,
    }


def bench_throughput(plan: Plan, client: MlflowClient, artifacts: Path) -> dict[str, Any]:
    """One-span traces into an experiment of their own, so the store count is exact.

    No flushing until the end: this is where a full export queue drops traces, if it does.
    """
    experiment_id = mlflow.create_experiment("throughput", (artifacts / "throughput").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    n = plan.throughput_traces
    start = time.perf_counter_ns()
    repeat(traced_add, n, 1, 2)()
    calls_done = time.perf_counter_ns()
    flush()
    end = time.perf_counter_ns()
    stored = count_traces(client, experiment_id)
    seconds = (end - start) / 1e9
    return {
        "traces": n,
        "spans_per_s": round(n / seconds, 1),
        "stored_spans_per_s": round(stored / seconds, 1),
        "calls_s": round((calls_done - start) / 1e9, 3),
        "flush_s": round((end - calls_done) / 1e9, 3),
        "stored": stored,
        "dropped": n - stored,
    }


def count_traces(client: MlflowClient, experiment_id: str) -> int:
    total, token = 0, None
    while True:
        page = client.search_traces(
            locations=[experiment_id], max_results=1000, page_token=token, include_spans=False
        )
        total += len(page)
        token = page.token
        if not token:
            return total


# --------------------------------------------------------------------------------------------


def run(plan: Plan, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlflow-sdk-bench-") as tmp:
        root = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
        # Without an explicit location the store points artifacts at ./mlruns.
        artifacts = root / "artifacts"
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifacts.as_uri()))
        client = MlflowClient()
        for _ in range(plan.warmup):
            traced_add(1, 2)
        flush()

        results: dict[str, Any] = {}
        cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("single", lambda: bench_single(plan)),
            ("nested10", lambda: bench_nested10(plan)),
            ("child", lambda: bench_child(plan)),
            ("disabled", lambda: bench_disabled(plan)),
            ("throughput", lambda: bench_throughput(plan, client, artifacts)),
        ]
        for name, case in cases:
            started = time.perf_counter()
            results[name] = case()
            log.info("%s done in %.1fs: %s", name, time.perf_counter() - started, results[name])
        flush()

    return {
        "sdk": "mlflow-python",
        "mlflow_version": mlflow.__version__,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "quick": quick,
        "store": "sqlite (local file)",
        "async_logging": True,
        "units": "ns per op (median/min/max over timed batches); *_per_s per second",
        "results": results,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a much smaller smoke run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # nothing but the JSON result may reach stdout
    try:
        started = time.perf_counter()
        report = run(Plan.quick() if args.quick else Plan.full(), args.quick)
        report["wall_s"] = round(time.perf_counter() - started, 1)
    finally:
        sys.stdout = real_stdout
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
