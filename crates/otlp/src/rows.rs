//! OTLP logs and metrics as rows of the lake's OpenTelemetry-shaped tables
//! (`mlflow_experiment_trace_otel_logs`, `..._metrics`): one JSON object per log record or
//! metric data point, its keys the tables' columns. Attribute maps hold each value's JSON text,
//! as the spans table does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value, json};

use crate::any_value_to_json;

/// A map column: each attribute's value as JSON text.
fn attribute_map(kvs: &[KeyValue]) -> Value {
    Value::Object(
        kvs.iter()
            .map(|kv| {
                let v = kv.value.as_ref().map_or(Value::Null, any_value_to_json);
                (kv.key.clone(), Value::String(v.to_string()))
            })
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `date` and `time` of a nanosecond timestamp; now when it is unset.
fn date_and_time(unix_nano: u64) -> (String, String) {
    let nanos = if unix_nano == 0 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    } else {
        unix_nano
    };
    tracelake_model::date_and_time_micros(nanos)
}

/// A row id unique within this process and across restarts: the wall clock and a counter.
fn record_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{now:016x}{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The resource and scope columns every row of a resource and scope shares.
struct Origin {
    service_name: Value,
    resource: Value,
    resource_schema_url: Value,
    scope: Value,
}

impl Origin {
    fn new(
        resource: Option<&Resource>,
        resource_schema_url: &str,
        scope: Option<&InstrumentationScope>,
    ) -> Self {
        let attrs = resource.map_or(&[][..], |r| &r.attributes[..]);
        let service_name = attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map_or(Value::Null, |v| match any_value_to_json(v) {
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            });
        Self {
            service_name,
            resource: json!({
                "attributes": attribute_map(attrs),
                "dropped_attributes_count": resource.map_or(0, |r| r.dropped_attributes_count),
            }),
            resource_schema_url: json!((!resource_schema_url.is_empty()).then_some(resource_schema_url)),
            scope: scope.map_or(Value::Null, |s| {
                json!({
                    "name": s.name,
                    "version": s.version,
                    "attributes": attribute_map(&s.attributes),
                    "dropped_attributes_count": s.dropped_attributes_count,
                })
            }),
        }
    }

    fn fill(&self, row: &mut Map<String, Value>, time_unix_nano: u64) {
        let (date, time) = date_and_time(time_unix_nano);
        row.insert("record_id".into(), Value::String(record_id()));
        row.insert("time".into(), Value::String(time));
        row.insert("date".into(), Value::String(date));
        row.insert("service_name".into(), self.service_name.clone());
        row.insert("resource".into(), self.resource.clone());
        row.insert("resource_schema_url".into(), self.resource_schema_url.clone());
        row.insert("instrumentation_scope".into(), self.scope.clone());
    }
}

/// One row per log record.
pub fn log_rows(request: &ExportLogsServiceRequest) -> Vec<Value> {
    let mut rows = Vec::new();
    for rl in &request.resource_logs {
        for sl in &rl.scope_logs {
            let origin = Origin::new(rl.resource.as_ref(), &rl.schema_url, sl.scope.as_ref());
            for log in &sl.log_records {
                let at =
                    if log.time_unix_nano != 0 { log.time_unix_nano } else { log.observed_time_unix_nano };
                let mut row = Map::new();
                origin.fill(&mut row, at);
                row.insert("time_unix_nano".into(), json!(log.time_unix_nano));
                row.insert("observed_time_unix_nano".into(), json!(log.observed_time_unix_nano));
                row.insert("severity_number".into(), json!(log.severity_number));
                row.insert("severity_text".into(), json!(log.severity_text));
                row.insert(
                    "body".into(),
                    log.body
                        .as_ref()
                        .map_or(Value::Null, |b| Value::String(any_value_to_json(b).to_string())),
                );
                row.insert("attributes".into(), attribute_map(&log.attributes));
                row.insert("dropped_attributes_count".into(), json!(log.dropped_attributes_count));
                row.insert("flags".into(), json!(log.flags));
                row.insert("trace_id".into(), json!(hex(&log.trace_id)));
                row.insert("span_id".into(), json!(hex(&log.span_id)));
                row.insert(
                    "event_name".into(),
                    json!((!log.event_name.is_empty()).then_some(&log.event_name)),
                );
                row.insert(
                    "log_schema_url".into(),
                    json!((!sl.schema_url.is_empty()).then_some(&sl.schema_url)),
                );
                rows.push(Value::Object(row));
            }
        }
    }
    rows
}

fn temporality(t: i32) -> Value {
    AggregationTemporality::try_from(t).map_or(Value::Null, |t| Value::String(t.as_str_name().to_owned()))
}

/// One row per metric data point (gauges, sums, histograms, exponential histograms as their
/// count, sum, min and max, summaries as count and sum).
pub fn metric_rows(request: &ExportMetricsServiceRequest) -> Vec<Value> {
    let mut rows = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            let origin = Origin::new(rm.resource.as_ref(), &rm.schema_url, sm.scope.as_ref());
            for m in &sm.metrics {
                let mut push =
                    |kind: &str, start: u64, time: u64, attrs: &[KeyValue], flags: u32, fields: Value| {
                        let mut row = Map::new();
                        origin.fill(&mut row, time);
                        row.insert("name".into(), json!(m.name));
                        row.insert(
                            "description".into(),
                            json!((!m.description.is_empty()).then_some(&m.description)),
                        );
                        row.insert("unit".into(), json!((!m.unit.is_empty()).then_some(&m.unit)));
                        row.insert("metric_type".into(), json!(kind));
                        row.insert("start_time_unix_nano".into(), json!(start));
                        row.insert("time_unix_nano".into(), json!(time));
                        row.insert("attributes".into(), attribute_map(attrs));
                        row.insert("dropped_attributes_count".into(), json!(0));
                        row.insert("flags".into(), json!(flags));
                        row.insert(
                            "metric_schema_url".into(),
                            json!((!sm.schema_url.is_empty()).then_some(&sm.schema_url)),
                        );
                        if let Value::Object(f) = fields {
                            row.extend(f);
                        }
                        rows.push(Value::Object(row));
                    };
                let number = |v: &Option<number_data_point::Value>| match v {
                    Some(number_data_point::Value::AsDouble(d)) => json!(d),
                    Some(number_data_point::Value::AsInt(i)) => json!(*i as f64),
                    None => Value::Null,
                };
                match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        for p in &g.data_points {
                            let fields = json!({ "value": number(&p.value) });
                            push(
                                "gauge",
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                &p.attributes,
                                p.flags,
                                fields,
                            );
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        for p in &s.data_points {
                            let fields = json!({
                                "value": number(&p.value),
                                "aggregation_temporality": temporality(s.aggregation_temporality),
                                "is_monotonic": s.is_monotonic,
                            });
                            push(
                                "sum",
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                &p.attributes,
                                p.flags,
                                fields,
                            );
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in &h.data_points {
                            let fields = json!({
                                "count": p.count, "sum": p.sum, "min": p.min, "max": p.max,
                                "bucket_counts": p.bucket_counts, "explicit_bounds": p.explicit_bounds,
                                "aggregation_temporality": temporality(h.aggregation_temporality),
                            });
                            push(
                                "histogram",
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                &p.attributes,
                                p.flags,
                                fields,
                            );
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for p in &h.data_points {
                            let fields = json!({
                                "count": p.count, "sum": p.sum, "min": p.min, "max": p.max,
                                "aggregation_temporality": temporality(h.aggregation_temporality),
                            });
                            let kind = "exponential_histogram";
                            push(
                                kind,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                &p.attributes,
                                p.flags,
                                fields,
                            );
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        for p in &s.data_points {
                            let fields = json!({ "count": p.count, "sum": p.sum });
                            push(
                                "summary",
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                &p.attributes,
                                p.flags,
                                fields,
                            );
                        }
                    }
                    None => {}
                }
            }
        }
    }
    rows
}
