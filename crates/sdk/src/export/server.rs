//! Export to a tracelake or MLflow tracking server, the way the MLflow client does: spans as
//! OTLP protobuf to `/v1/traces` with the experiment header, then each trace's info with
//! StartTraceV3. Spans go first, so the server holds a trace's spans before its info says the
//! trace is complete.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tracelake_model::TraceLocation;

use super::ExportError;
use super::net::{
    Delivery, Failure, MLFLOW_RETRY_STATUSES, Outcome, Retry, error_chain, http_outcome, http_sent,
};
use super::otlp::{chunks, request, resource_attributes};
use super::router::{Routed, SinkExporter};
use crate::destination::ExperimentRef;
use crate::pipeline::DropCounter;
use crate::settings::{Auth, DeliverySettings};

/// Trace infos sent at once by one delivery job.
const INFO_CONCURRENCY: usize = 8;

/// An experiment's id once known, behind the lock its lookup holds.
type ExperimentSlot = Arc<Mutex<Option<String>>>;

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    auth: Option<reqwest::header::HeaderValue>,
    retry: Retry,
    /// Set once the server has answered that it does not take spans over OTLP.
    no_span_ingest: Arc<AtomicBool>,
    /// Experiment ids by name, as the server answered; one lock per name, so a slow lookup
    /// holds up only the traces of its own experiment.
    experiments: Arc<parking_lot::Mutex<HashMap<String, ExperimentSlot>>>,
}

pub(crate) struct ServerExporter {
    client: Result<Client, String>,
    resource: Arc<Map<String, Value>>,
    delivery: Delivery,
}

impl ServerExporter {
    pub(crate) fn new(
        base: &str,
        auth: Option<&Auth>,
        settings: &DeliverySettings,
        resource: &[(String, String)],
    ) -> Self {
        let delivery = Delivery::new(format!("tracking server {base}"), settings);
        let auth = match auth.map(|a| reqwest::header::HeaderValue::from_str(&a.header_value())).transpose() {
            Ok(mut v) => {
                if let Some(v) = &mut v {
                    v.set_sensitive(true);
                }
                Ok(v)
            }
            Err(_) => Err("the tracking credentials cannot be sent in an HTTP header".to_owned()),
        };
        let client = auth.and_then(|auth| {
            let http = reqwest::Client::builder()
                .timeout(settings.request_timeout)
                .build()
                .map_err(|e| format!("cannot make an HTTP client: {}", error_chain(&e)))?;
            Ok(Client {
                http,
                base: base.into(),
                auth,
                retry: delivery.retry(),
                no_span_ingest: Arc::default(),
                experiments: Arc::default(),
            })
        });
        let resource = resource_attributes(resource);
        ServerExporter { client, resource: Arc::new(resource), delivery }
    }
}

impl Client {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.post(format!("{}{path}", self.base));
        match &self.auth {
            Some(auth) => req.header(reqwest::header::AUTHORIZATION, auth.clone()),
            None => req,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match &self.auth {
            Some(auth) => req.header(reqwest::header::AUTHORIZATION, auth.clone()),
            None => req,
        }
    }

    /// The experiment's id: given, or looked up by name and created when missing, as
    /// `mlflow.set_experiment` does.
    async fn experiment_id(&self, experiment: &ExperimentRef) -> Result<String, String> {
        let name = match experiment {
            ExperimentRef::Id(id) => return Ok(id.clone()),
            ExperimentRef::Name(name) => name,
        };
        // One lookup at a time per name: concurrent jobs must not create it twice.
        let slot = self.experiments.lock().entry(name.clone()).or_default().clone();
        let mut known = slot.lock().await;
        if let Some(id) = &*known {
            return Ok(id.clone());
        }
        let id = match self.lookup(name).await? {
            Some(id) => id,
            None => match self.create(name).await? {
                Some(id) => id,
                // Someone else created it in between.
                None => self.lookup(name).await?.ok_or_else(|| format!("experiment {name:?} vanished"))?,
            },
        };
        *known = Some(id.clone());
        Ok(id)
    }

    async fn lookup(&self, name: &str) -> Result<Option<String>, String> {
        self.retry
            .run("experiment lookup", || {
                let req =
                    self.get("/api/2.0/mlflow/experiments/get-by-name").query(&[("experiment_name", name)]);
                async move {
                    match req.send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Outcome::Delivered(None),
                        other => {
                            with_json(other, |v| v["experiment"]["experiment_id"].as_str().map(str::to_owned))
                                .await
                        }
                    }
                }
            })
            .await
    }

    /// `None` when the experiment already exists.
    async fn create(&self, name: &str) -> Result<Option<String>, String> {
        self.retry
            .run("experiment creation", || {
                let req = self.post("/api/2.0/mlflow/experiments/create").json_body(&json!({"name": name}));
                async move {
                    match req.send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::BAD_REQUEST => {
                            let body = r.text().await.unwrap_or_default();
                            if body.contains("RESOURCE_ALREADY_EXISTS") {
                                Outcome::Delivered(None)
                            } else {
                                Outcome::Rejected(format!("HTTP 400: {body}"))
                            }
                        }
                        other => with_json(other, |v| v["experiment_id"].as_str().map(str::to_owned)).await,
                    }
                }
            })
            .await
    }

    /// Delivers one chunk of traces of one experiment: spans, then trace infos.
    async fn deliver(
        self,
        experiment: ExperimentRef,
        traces: Vec<Routed>,
        resource: Arc<Map<String, Value>>,
    ) -> Result<(), Failure> {
        let experiment_id = self.experiment_id(&experiment).await?;
        if !self.no_span_ingest.load(Ordering::Relaxed) {
            let body = bytes::Bytes::from(tracelake_otlp::encode_protobuf(&request(&traces, &resource)));
            let taken = self
                .retry
                .run("span upload", || {
                    let req = self
                        .post("/v1/traces")
                        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                        .header("x-mlflow-experiment-id", experiment_id.as_str())
                        .body(body.clone());
                    async move {
                        match req.send().await {
                            // A server older than 3.4 (404) or whose store cannot keep spans
                            // (501): the spans go as the trace's `traces.json` artifact instead,
                            // as the MLflow client does.
                            Ok(r) if matches!(r.status().as_u16(), 404 | 501) => Outcome::Delivered(false),
                            other => http_sent(other, MLFLOW_RETRY_STATUSES).await.map(|()| true),
                        }
                    }
                })
                .await?;
            if !taken {
                tracing::info!(
                    target: "tracelake",
                    "{} does not take spans over OTLP; sending them as trace artifacts",
                    self.base
                );
                self.no_span_ingest.store(true, Ordering::Relaxed);
            }
        }

        let slots = Arc::new(tokio::sync::Semaphore::new(INFO_CONCURRENCY));
        let mut jobs = tokio::task::JoinSet::new();
        for (trace, _) in traces {
            let mut info = trace.info.clone();
            if !matches!(info.trace_location, TraceLocation::UcSchema { .. }) {
                info.trace_location = TraceLocation::experiment(experiment_id.clone());
            }
            let body = serde_json::to_vec(&json!({"trace": {"trace_info": info.to_proto_json()}}))
                .unwrap_or_default();
            let body = bytes::Bytes::from(body);
            let client = self.clone();
            let slot = slots.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            let spans = trace.spans.len();
            jobs.spawn(async move {
                let _slot = slot;
                client.start_trace(body, &trace).await.map_err(|e| (e, spans))
            });
        }
        // Only the traces whose info could not be delivered are lost (their spans are stored).
        let (mut failed, mut failed_spans, mut first_error) = (0, 0, None);
        while let Some(done) = jobs.join_next().await {
            if let Err((e, spans)) = done.map_err(|e| (e.to_string(), 0)).and_then(|r| r) {
                failed += 1;
                failed_spans += spans;
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(message) => Err(Failure { message, counts: Some((failed, failed_spans)) }),
        }
    }
}

impl Client {
    /// StartTraceV3, then — when the server says the spans are not in its store — the spans as
    /// the trace's `traces.json` artifact.
    async fn start_trace(&self, body: bytes::Bytes, trace: &tracelake_model::Trace) -> Result<(), String> {
        let info = self
            .retry
            .run("trace info upload (StartTraceV3)", || {
                let req = self
                    .post("/api/3.0/mlflow/traces")
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                async move { with_json(req.send().await, |v| Some(v["trace"]["trace_info"].clone())).await }
            })
            .await?
            .unwrap_or_default();
        let tags = &info["tags"];
        if tags["mlflow.trace.spansLocation"] == "TRACKING_STORE" {
            return Ok(());
        }
        if !self.no_span_ingest.load(Ordering::Relaxed) {
            // Spans went over OTLP; an older server that does not say so still has them.
            return Ok(());
        }
        let location = tags["mlflow.artifactLocation"].as_str().unwrap_or_default();
        let body = bytes::Bytes::from(
            serde_json::to_vec(&tracelake_model::TraceData(&trace.spans)).map_err(|e| e.to_string())?,
        );
        let local =
            location.strip_prefix("file://").or_else(|| location.starts_with('/').then_some(location));
        if let Some(dir) = local {
            // An artifact root on this machine's file system: written there, as the MLflow
            // client's local artifact repository does.
            let dir = std::path::Path::new(dir);
            return std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(dir.join("traces.json"), &body))
                .map_err(|e| format!("writing {}/traces.json: {e}", dir.display()));
        }
        let Some(path) = location.strip_prefix("mlflow-artifacts:") else {
            return Err(format!(
                "the server keeps trace artifacts at {location:?}, which this exporter cannot write to"
            ));
        };
        let url = format!("/api/2.0/mlflow-artifacts/artifacts/{}/traces.json", path.trim_matches('/'));
        self.retry
            .run("trace artifact upload (traces.json)", || {
                let mut req = self.http.put(format!("{}{url}", self.base)).body(body.clone());
                if let Some(auth) = &self.auth {
                    req = req.header(reqwest::header::AUTHORIZATION, auth.clone());
                }
                async move { http_sent(req.send().await, MLFLOW_RETRY_STATUSES).await }
            })
            .await
    }
}

trait JsonBody {
    fn json_body(self, value: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, value: &Value) -> Self {
        self.header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(value).unwrap_or_default())
    }
}

/// A successful answer's JSON, read by `pick`.
async fn with_json<T>(
    result: Result<reqwest::Response, reqwest::Error>,
    pick: impl FnOnce(&Value) -> Option<T>,
) -> Outcome<Option<T>> {
    match http_outcome(result, MLFLOW_RETRY_STATUSES).await {
        Outcome::Delivered(response) => match response.bytes().await {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(v) => match pick(&v) {
                    Some(t) => Outcome::Delivered(Some(t)),
                    None => {
                        Outcome::Rejected(format!("unexpected answer: {}", String::from_utf8_lossy(&body)))
                    }
                },
                Err(e) => Outcome::Rejected(format!("the answer is not JSON: {e}")),
            },
            Err(e) => Outcome::Retry { reason: error_chain(&e), after: None },
        },
        other => other.map(|_| None),
    }
}

impl SinkExporter for ServerExporter {
    fn export(&mut self, traces: Vec<Routed>, drops: Option<&DropCounter>) {
        self.delivery.set_drop_counter(drops);
        let mut by_experiment: Vec<(ExperimentRef, Vec<Routed>)> = Vec::new();
        for routed in traces {
            let experiment = routed.1.experiment.clone().unwrap_or(ExperimentRef::Id("0".into()));
            match by_experiment.iter_mut().find(|(e, _)| *e == experiment) {
                Some((_, list)) => list.push(routed),
                None => by_experiment.push((experiment, vec![routed])),
            }
        }
        for (experiment, traces) in by_experiment {
            for chunk in chunks(traces) {
                let spans = chunk.iter().map(|(t, _)| t.spans.len()).sum();
                let count = chunk.len();
                match &self.client {
                    Ok(client) => {
                        let job = client.clone().deliver(experiment.clone(), chunk, self.resource.clone());
                        self.delivery.submit(count, spans, job);
                    }
                    Err(problem) => {
                        let problem = problem.clone();
                        self.delivery.submit(count, spans, async move { Err(Failure::from(problem)) });
                    }
                }
            }
        }
    }

    fn flush(&mut self, timeout: Duration) -> Result<(), ExportError> {
        self.delivery.flush(timeout)
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), ExportError> {
        self.delivery.shutdown(timeout)
    }
}
