//! Export to an OTLP endpoint over gRPC, http/protobuf or http/json.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::{Map, Value};
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tracelake_otlp::TraceRequest;

use super::ExportError;
use super::net::{Delivery, Failure, OTLP_RETRY_STATUSES, Outcome, Retry, error_chain, http_sent, runtime};
use super::router::{Routed, SinkExporter};
use crate::pipeline::DropCounter;
use crate::settings::{DeliverySettings, OtlpProtocol, OtlpSettings};

/// Spans per request at most: whole traces are kept together, so a request may hold more
/// when one trace does.
pub(crate) const MAX_SPANS_PER_REQUEST: usize = 2048;

/// The instrumentation scope of exported spans.
pub(crate) const SCOPE_NAME: &str = "tracelake";

#[derive(Clone)]
enum Transport {
    Http {
        client: reqwest::Client,
        url: Arc<str>,
        json: bool,
        headers: reqwest::header::HeaderMap,
    },
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: MetadataMap,
    },
    /// The settings cannot make a transport: everything is dropped with this reason.
    Broken(Arc<str>),
}

pub(crate) struct OtlpExporter {
    transport: Transport,
    gzip: bool,
    resource: Arc<Map<String, Value>>,
    delivery: Delivery,
}

impl OtlpExporter {
    pub(crate) fn new(settings: &OtlpSettings, delivery: &DeliverySettings) -> Self {
        let transport = match settings.protocol {
            OtlpProtocol::Grpc => grpc_transport(settings),
            OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => http_transport(
                &settings.endpoint,
                settings.protocol == OtlpProtocol::HttpJson,
                settings.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                settings.timeout,
            ),
        };
        let resource = resource_attributes(&settings.resource);
        OtlpExporter {
            transport,
            gzip: settings.gzip,
            resource: Arc::new(resource),
            delivery: Delivery::new(format!("OTLP endpoint {}", settings.endpoint), delivery),
        }
    }
}

fn http_transport<'a>(
    url: &str,
    json: bool,
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    timeout: Duration,
) -> Transport {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) else {
            return Transport::Broken(format!("header {name:?} cannot be sent over HTTP").into());
        };
        map.append(n, v);
    }
    match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => Transport::Http { client, url: url.into(), json, headers: map },
        Err(e) => Transport::Broken(format!("cannot make an HTTP client: {}", error_chain(&e)).into()),
    }
}

fn grpc_transport(settings: &OtlpSettings) -> Transport {
    let mut metadata = MetadataMap::new();
    for (name, value) in &settings.headers {
        let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) else {
            return Transport::Broken(format!("header {name:?} cannot be sent as gRPC metadata").into());
        };
        metadata.append(k, v);
    }
    let endpoint = match tonic::transport::Endpoint::from_shared(settings.endpoint.clone()) {
        Ok(e) => e.timeout(settings.timeout).connect_timeout(settings.timeout),
        Err(e) => return Transport::Broken(format!("{}: {e}", settings.endpoint).into()),
    };
    // https endpoints get TLS, verified against the system's root certificates.
    let endpoint = if settings.endpoint.starts_with("https://") {
        match endpoint.tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots()) {
            Ok(e) => e,
            Err(e) => return Transport::Broken(format!("{}: TLS: {e}", settings.endpoint).into()),
        }
    } else {
        endpoint
    };
    // The channel's connection task lives on the export runtime.
    let _rt = runtime().enter();
    let mut client = TraceServiceClient::new(endpoint.connect_lazy()).max_decoding_message_size(4 << 20);
    if settings.gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    Transport::Grpc { client, metadata }
}

/// The gRPC codes OpenTelemetry says to retry, after the server's `RetryInfo` hint when it
/// gives one (as `Retry-After` over HTTP).
fn grpc_outcome(result: Result<tonic::Response<impl Sized>, tonic::Status>) -> Outcome {
    use tonic::Code;
    use tonic_types::StatusExt as _;
    match result {
        Ok(_) => Outcome::Delivered(()),
        Err(status) => {
            let reason = format!("gRPC {:?}: {}", status.code(), status.message());
            match status.code() {
                Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss => {
                    let after = status.get_details_retry_info().and_then(|r| r.retry_delay);
                    Outcome::Retry { reason, after }
                }
                _ => Outcome::Rejected(reason),
            }
        }
    }
}

pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// Splits traces into requests of about [`MAX_SPANS_PER_REQUEST`] spans, whole traces each.
pub(crate) fn chunks(traces: Vec<Routed>) -> Vec<Vec<Routed>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut spans = 0;
    for routed in traces {
        let n = routed.0.spans.len();
        if spans > 0 && spans + n > MAX_SPANS_PER_REQUEST {
            out.push(std::mem::take(&mut current));
            spans = 0;
        }
        spans += n;
        current.push(routed);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Resource attributes as the OTLP codec takes them.
pub(crate) fn resource_attributes(resource: &[(String, String)]) -> Map<String, Value> {
    resource.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect()
}

pub(crate) fn request(traces: &[Routed], resource: &Map<String, Value>) -> TraceRequest {
    tracelake_otlp::request_from_spans(
        traces.iter().flat_map(|(t, _)| t.spans.iter()),
        resource,
        SCOPE_NAME,
        env!("CARGO_PKG_VERSION"),
    )
}

/// Sends one OTLP request (already chunked) until delivered or given up on.
async fn send(
    transport: Transport,
    retry: Retry,
    request: TraceRequest,
    gzip_body: bool,
) -> Result<(), String> {
    match transport {
        Transport::Broken(reason) => Err(reason.to_string()),
        Transport::Http { client, url, json, headers } => {
            let (body, content_type) = if json {
                (tracelake_otlp::encode_json(&request), "application/json")
            } else {
                (tracelake_otlp::encode_protobuf(&request), "application/x-protobuf")
            };
            drop(request);
            let body = bytes::Bytes::from(if gzip_body { gzip(&body) } else { body });
            retry
                .run("OTLP export", || {
                    let mut req = client
                        .post(&*url)
                        .headers(headers.clone())
                        .header(reqwest::header::CONTENT_TYPE, content_type)
                        .body(body.clone());
                    if gzip_body {
                        req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
                    }
                    async move { http_sent(req.send().await, OTLP_RETRY_STATUSES).await }
                })
                .await
        }
        Transport::Grpc { client, metadata } => {
            retry
                .run("OTLP export", || {
                    let mut client = client.clone();
                    let mut req = tonic::Request::new(request.clone());
                    *req.metadata_mut() = metadata.clone();
                    async move { grpc_outcome(client.export(req).await) }
                })
                .await
        }
    }
}

impl SinkExporter for OtlpExporter {
    fn export(&mut self, traces: Vec<Routed>, drops: Option<&DropCounter>) {
        self.delivery.set_drop_counter(drops);
        for chunk in chunks(traces) {
            let spans = chunk.iter().map(|(t, _)| t.spans.len()).sum();
            let count = chunk.len();
            let transport = self.transport.clone();
            let resource = self.resource.clone();
            let retry = self.delivery.retry();
            let gzip_body = self.gzip;
            self.delivery.submit(count, spans, async move {
                let request = request(&chunk, &resource);
                drop(chunk);
                send(transport, retry, request, gzip_body).await.map_err(Failure::from)
            });
        }
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), ExportError> {
        self.delivery.flush(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), ExportError> {
        self.delivery.shutdown(timeout)
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::*;

    fn outcome(status: tonic::Status) -> Outcome {
        grpc_outcome(Err::<tonic::Response<()>, _>(status))
    }

    #[test]
    fn grpc_failures_are_retried_after_the_servers_hint_or_refused() {
        let busy = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "busy",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert!(
            matches!(outcome(busy), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3))
        );
        assert!(matches!(outcome(tonic::Status::unavailable("down")), Outcome::Retry { after: None, .. }));
        assert!(matches!(outcome(tonic::Status::invalid_argument("bad")), Outcome::Rejected(_)));
    }
}
