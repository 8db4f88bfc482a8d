//! OTLP codecs: what comes in is stored as MLflow stores it, and what goes out reads back.

use serde_json::{Map, Value, json};
use tracelake_model::{Trace, keys};
use tracelake_otlp::{
    OtlpError, decode_json, decode_protobuf, encode_json, encode_protobuf, request_from_spans, span_to_otlp,
    spans_from_request, strip_double_encoding,
};

fn golden_trace() -> Trace {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../model/tests/golden/tracelake-trace.json");
    Trace::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn decoded_attributes(span: &tracelake_model::Span) -> Vec<(String, Value)> {
    span.attributes.iter().map(|(k, _)| (k.to_owned(), span.attributes.get(k).unwrap())).collect()
}

#[test]
fn spans_survive_a_round_trip_through_protobuf_and_json() {
    let trace = golden_trace();
    let resource = Map::from_iter([("service.name".to_owned(), json!("agent"))]);
    let request = request_from_spans(&trace.spans, &resource, "tracelake", "0.1.0");
    for decoded in
        [decode_protobuf(&encode_protobuf(&request)).unwrap(), decode_json(&encode_json(&request)).unwrap()]
    {
        let ingested = spans_from_request(&decoded).unwrap();
        assert_eq!(ingested.len(), trace.spans.len());
        for (got, want) in ingested.iter().zip(&trace.spans) {
            assert_eq!(got.origin.resource["service.name"], "agent");
            assert_eq!(got.origin.scope_name, "tracelake");
            let mut span = got.span.clone();
            assert_eq!(decoded_attributes(&span), decoded_attributes(want), "span {}", want.name);
            span.attributes = want.attributes.clone();
            assert_eq!(&span, want);
        }
    }
}

#[test]
fn typed_values_are_sent_as_the_mlflow_client_sends_them() {
    let trace = golden_trace();
    let otlp = span_to_otlp(&trace.spans[0]);
    let value = |key: &str| otlp.attributes.iter().find(|kv| kv.key == key).unwrap().value.clone().unwrap();
    assert_eq!(tracelake_otlp::any_value_to_json(&value(keys::SPAN_TYPE)), json!("AGENT"));
    assert_eq!(tracelake_otlp::any_value_to_json(&value(keys::LOG_LEVEL)), json!(20));
    assert_eq!(
        tracelake_otlp::any_value_to_json(&value(keys::INPUTS)),
        json!({"question": "héllo 世界", "k": 3})
    );
}

#[test]
fn values_encoded_twice_by_otlp_only_clients_are_unwrapped_once() {
    assert_eq!(strip_double_encoding("\"\\\"CHAIN\\\"\"".into()), "\"CHAIN\"");
    assert_eq!(strip_double_encoding("\"{\\\"a\\\": 1}\"".into()), "{\"a\": 1}");
    assert_eq!(strip_double_encoding("\"hello\"".into()), "\"hello\"");
    assert_eq!(
        strip_double_encoding("\"1\"".into()),
        "\"1\"",
        "a string that looks like a number stays a string"
    );
    assert_eq!(strip_double_encoding("3".into()), "3");
}

const OTLP_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
 "scopeSpans":[{"scope":{"name":"openinference"},"spans":[
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"llm call","kind":3,
   "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000",
   "attributes":[
     {"key":"mlflow.spanType","value":{"stringValue":"\"LLM\""}},
     {"key":"mlflow.traceRequestId","value":{"stringValue":"\"tr-forged\""}},
     {"key":"llm.token_count.prompt","value":{"intValue":"12"}},
     {"key":"input.value","value":{"stringValue":"hello"}}],
   "status":{"code":2,"message":"rate limited"}}]}]}]}"#;

#[test]
fn otlp_json_with_hex_ids_is_read_and_client_request_ids_are_not_trusted() {
    let spans = spans_from_request(&decode_json(OTLP_JSON.as_bytes()).unwrap()).unwrap();
    let span = &spans[0].span;
    assert_eq!(span.trace_id.to_string(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(span.span_id.to_string(), "eee19b7ec3c1b174");
    assert_eq!(span.kind, tracelake_model::SpanKind::Client);
    assert_eq!(span.request_id().as_deref(), Some("tr-5b8efff798038103d269b633813fc60c"));
    assert_eq!(span.attributes.get_raw(keys::SPAN_TYPE), Some("\"LLM\""));
    assert_eq!(span.attributes.get("llm.token_count.prompt"), Some(json!(12)));
    assert_eq!(span.attributes.get_raw("input.value"), Some("\"hello\""));
    assert_eq!(span.status.code, tracelake_model::StatusCode::Error);
    assert_eq!(span.end_time_unix_nano, Some(1_700_000_001_000_000_000));
    assert_eq!(spans[0].origin.resource["service.name"], "shop");
}

#[test]
fn malformed_payloads_are_refused_with_what_and_where() {
    assert!(matches!(decode_protobuf(b"\xff\xff\xff"), Err(OtlpError::Protobuf(_))));
    let err = decode_json(b"{\"resourceSpans\": [").unwrap_err();
    assert!(matches!(err, OtlpError::Json { line: 1, .. }), "{err}");
    let short_id = OTLP_JSON.replace("\"spanId\":\"eee19b7ec3c1b174\"", "\"spanId\":\"eee19b7e\"");
    let err = spans_from_request(&decode_json(short_id.as_bytes()).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "resource_spans[0].scope_spans[0].spans[0].span_id: invalid span id: expected 8 bytes, got 4"
    );
}

#[test]
fn attribute_values_are_written_as_their_json_values_encode() {
    use tracelake_otlp::{AnyValue, KeyValue, any_value, any_value_to_json, attribute_json};
    use tracelake_otlp::{ArrayValue, KeyValueList};
    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let text = |s: &str| any_value::Value::StringValue(s.into());
    let values = [
        None,
        Some(text("")),
        Some(text("plain")),
        Some(text("a \"quoted\"\nline\t✓ \\ \u{1}")),
        Some(any_value::Value::BoolValue(true)),
        Some(any_value::Value::IntValue(-42)),
        Some(any_value::Value::DoubleValue(2.5)),
        Some(any_value::Value::DoubleValue(1e21)),
        Some(any_value::Value::DoubleValue(f64::NAN)),
        Some(any_value::Value::BytesValue(vec![0, 15, 255])),
        Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: None }, AnyValue { value: Some(text("x")) }],
        })),
        Some(any_value::Value::ArrayValue(ArrayValue { values: vec![] })),
        Some(any_value::Value::KvlistValue(KeyValueList { values: vec![] })),
        Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("prompt", text("what \"is\" it?")),
                kv("n", any_value::Value::IntValue(3)),
                KeyValue { key: "none".into(), value: None, ..Default::default() },
                kv(
                    "nested",
                    any_value::Value::KvlistValue(KeyValueList { values: vec![kv("k", text("v"))] }),
                ),
            ],
        })),
        // a repeated key: the first place, the last value
        Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv("a", text("1")), kv("b", text("2")), kv("a", text("3"))],
        })),
    ];
    for value in values {
        let json = any_value_to_json(&AnyValue { value: value.clone() });
        assert_eq!(attribute_json(value.as_ref()), tracelake_model::encode_attribute(&json), "{value:?}");
    }
}
