"""Reads traces back through the stock MLflow client and prints them as JSON, without ids or
timings, so runs that sent the same work by different routes can be compared.

Usage: read_traces.py URL EXPERIMENT_NAME [EXPERIMENT_NAME ...]
Prints {experiment name: [trace, ...]} with traces sorted by their root span's name and inputs,
each as {"name", "state", "spans": [{"name", "parent", "type", "inputs", "outputs", "status",
"attributes"}]} and spans in a stable order.
"""
import json
import sys

import mlflow
from mlflow import MlflowClient

# Attributes that differ from run to run or between servers for reasons unrelated to the trace.
VOLATILE = {"mlflow.traceRequestId", "mlflow.experimentId"}


def span_view(span, names_by_id):
    attrs = {k: v for k, v in (span.attributes or {}).items() if k not in VOLATILE}
    return {
        "name": span.name,
        "parent": names_by_id.get(span.parent_id),
        "type": span.span_type,
        "inputs": span.inputs,
        "outputs": span.outputs,
        "status": str(span.status.status_code),
        "attributes": attrs,
    }


def trace_view(trace):
    names_by_id = {s.span_id: s.name for s in trace.data.spans}
    spans = [span_view(s, names_by_id) for s in trace.data.spans]
    spans.sort(key=lambda s: json.dumps(s, sort_keys=True, default=str))
    root = next((s for s in spans if s["parent"] is None), None)
    return {"name": root and root["name"], "state": str(trace.info.state), "spans": spans}


def main() -> None:
    url, names = sys.argv[1], sys.argv[2:]
    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    out = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        traces = []
        token = None
        while exp is not None:
            page = client.search_traces(locations=[exp.experiment_id], max_results=500, page_token=token)
            traces.extend(page)
            token = page.token
            if not token:
                break
        views = [trace_view(t) for t in traces]
        views.sort(key=lambda t: json.dumps(t, sort_keys=True, default=str))
        out[name] = views
    print(json.dumps(out, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
