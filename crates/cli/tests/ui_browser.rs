//! The web UI in headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test` installs), driven over WebDriver, against a real `tracelake server` seeded by
//! the Rust SDK (the instrumented example) and by the stock MLflow Python client. Screenshots
//! of every step are kept in `<target>/ui-screenshots/`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::webdriver::Browser;
use support::{Server, python};

impl Browser {
    /// The text of the first element matching `css` once `ready` holds for it, waiting (up to
    /// 10 s) for a page that is still loading after a click or a form submission.
    async fn wait_text(&self, css: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            let url = format!("{}/session/{}/elements", self.base, self.session);
            let body = json!({"using": "css selector", "value": css}).to_string();
            let found: Option<Value> = async {
                let r = self
                    .http
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .ok()?;
                let v: Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
                let id = v["value"].as_array()?.first()?.as_object()?.values().next()?.as_str()?.to_owned();
                let t = self
                    .http
                    .get(format!("{}/session/{}/element/{id}/text", self.base, self.session))
                    .send()
                    .await
                    .ok()?;
                serde_json::from_slice(&t.bytes().await.ok()?).ok()
            }
            .await;
            if let Some(text) = found.as_ref().and_then(|v| v["value"].as_str()) {
                if ready(text) {
                    return text.to_owned();
                }
                last = text.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never became ready; last text: {last:?}")
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.session("POST", "/elements", json!({"using": "css selector", "value": css})).await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned())
            .collect()
    }

    async fn find(&self, css: &str) -> String {
        let all = self.find_all(css).await;
        assert!(!all.is_empty(), "nothing matches {css:?} on {}", self.url().await);
        all[0].clone()
    }

    async fn text(&self, element: &str) -> String {
        self.session("GET", &format!("/element/{element}/text"), Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn click(&self, element: &str) {
        self.session("POST", &format!("/element/{element}/click"), json!({})).await;
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.session("POST", &format!("/element/{element}/clear"), json!({})).await;
        self.session("POST", &format!("/element/{element}/value"), json!({"text": text})).await;
    }

    /// The element that has the focus.
    async fn active(&self) -> String {
        let active = self.session("GET", "/element/active", Value::Null).await;
        active.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned()
    }

    async fn url(&self) -> String {
        self.session("GET", "/url", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    async fn page_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    /// Keeps a screenshot in `<target>/ui-screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let exe = std::env::current_exe().unwrap();
        let shots = exe.parent().unwrap().parent().unwrap().join("ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let png = self.session("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(shots.join(format!("{name}.png")), bytes).unwrap();
    }

    /// The link among `css` whose text contains `text`.
    async fn link_with_text(&self, css: &str, text: &str) -> String {
        for e in self.find_all(css).await {
            if self.text(&e).await.contains(text) {
                return e;
            }
        }
        panic!("no {css} with text {text:?} on {}", self.url().await)
    }
}

/// Traces from both clients: the instrumented Rust example and an `@mlflow.trace` function.
fn seed(server: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let app = support::example("instrumented_app");
    // the instrumented example with these variables besides the tracking URI
    let run_app = |vars: &[(&str, &str)]| {
        let out = Command::new(&app)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MLFLOW_TRACKING_URI", server.url())
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run_app(&[("MLFLOW_EXPERIMENT_NAME", "browser")]);
    let script = r#"
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("browser")

@mlflow.trace(span_type="AGENT")
def python_agent(question):
    mlflow.update_current_trace(tags={"client": "python"}, metadata={"mlflow.trace.session": "chat-42"})
    return {"role": "assistant", "content": "hello from python"}

python_agent("hi")
mlflow.flush_trace_async_logging()
print("ok: seeded")
"#;
    let out = Command::new(python())
        .args(["-c", script, &server.url()])
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: seeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Spans in a lake schema, through the server.
    run_app(&[("MLFLOW_TRACING_DESTINATION", "main.browser"), ("TRACELAKE_APP_TRACES", "2")]);
}

/// A trace of 2,104 spans (a root, three stages of 700 steps) sent over OTLP to experiment 1;
/// returns its id.
fn send_large_trace(server: &Server) -> String {
    use tracelake_model::{Attributes, Span, SpanId, SpanKind, SpanStatus, TraceId};
    let t = TraceId::new(0x1a26e).unwrap();
    let span = |id: u64, parent: Option<u64>, name: String, start_ms: u64| Span {
        trace_id: t,
        span_id: SpanId::new(id).unwrap(),
        parent_id: parent.and_then(SpanId::new),
        name: name.into(),
        kind: SpanKind::Internal,
        start_time_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
        end_time_unix_nano: Some(1_700_000_000_000_000_000 + (start_ms + 1) * 1_000_000),
        status: SpanStatus::ok(),
        attributes: Attributes::new(),
        events: vec![],
        links: vec![],
    };
    let mut spans = vec![span(1, None, "large".into(), 0)];
    for stage in 0..3u64 {
        spans.push(span(10 + stage, Some(1), format!("stage-{stage}"), 1 + stage * 1_000));
        for step in 0..700u64 {
            spans.push(span(
                1_000 + stage * 1_000 + step,
                Some(10 + stage),
                format!("step-{stage}-{step}"),
                2 + stage * 1_000 + step,
            ));
        }
    }
    let body = tracelake_otlp::encode_protobuf(&tracelake_otlp::request_from_spans(
        &spans,
        &serde_json::Map::new(),
        "test",
        "1",
    ));
    let (status, answer) = support::post_to(
        server.port,
        "/v1/traces",
        "application/x-protobuf",
        &[("x-mlflow-experiment-id", "1")],
        &body,
    )
    .expect("the server answers");
    assert_eq!(status, 200, "{answer}");
    t.to_mlflow_v3()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_finds_a_trace_reads_it_and_tags_it_in_chromium() {
    let lake = tempfile::tempdir().unwrap();
    let server = Server::start_with_lake(&lake.path().display().to_string(), &[]);
    seed(&server);
    let b = Browser::start().await;

    // Experiments, then the traces of one.
    b.open(&format!("{}/", server.url())).await;
    b.screenshot("1-experiments").await;
    let link = b.link_with_text("main a", "browser").await;
    b.click(&link).await;
    assert_eq!(b.find_all("tbody tr").await.len(), 4, "three Rust traces and one Python trace");
    assert!(b.page_text().await.contains("chat-42"), "the Python trace's session is listed");
    b.screenshot("2-traces").await;

    // Follow the Python trace's session.
    let session = b.link_with_text("tbody td a", "chat-42").await;
    b.click(&session).await;
    b.wait_text("h1", |t| t == "Session chat-42").await;
    assert_eq!(b.find_all("ol.session > li").await.len(), 1);
    assert!(b.page_text().await.contains("hello from python"));
    b.screenshot("2b-session").await;
    b.open(&format!("{}/experiments/1", server.url())).await;

    // Charts of the experiment.
    b.click(&b.link_with_text("main a", "Charts").await).await;
    b.wait_text("h1", |t| t.ends_with("over time")).await;
    assert_eq!(b.find_all("svg[role=img]").await.len(), 5);
    b.screenshot("2c-charts").await;
    b.open(&format!("{}/experiments/1", server.url())).await;

    // Search with a filter, then with a bad one.
    let filter = b.find("input#filter").await;
    b.type_into(&filter, "tags.client = 'python'").await;
    b.click(&b.find("form.search button").await).await;
    b.wait_text("caption", |t| t.starts_with("1 traces")).await;
    assert_eq!(b.find_all("tbody tr").await.len(), 1);
    b.screenshot("3-filtered").await;
    let filter = b.find("input#filter").await;
    b.type_into(&filter, "tags.client = python").await;
    b.click(&b.find("form.search button").await).await;
    let alert = b.wait_text("[role=alert]", |_| true).await;
    assert!(alert.contains("column 15"), "the error names its position: {alert}");
    b.screenshot("4-bad-filter").await;

    // Open a Rust trace: its tree, then a span in it.
    b.open(&format!("{}/experiments/1?filter={}", server.url(), "name%20%3D%20%27answer%27")).await;
    let first = b.find("tbody tr td a").await;
    b.click(&first).await;
    assert_eq!(b.find_all("[role=treeitem]").await.len(), 5);
    assert_eq!(b.find_all("[role=group] [role=treeitem]").await.len(), 4, "four children under the root");
    // The tree by keyboard: Down twice from the root, then Left back to it.
    let rows = b.find_all("[role=treeitem] > a").await;
    b.session("POST", &format!("/element/{}/value", rows[0]), json!({"text": "\u{E015}\u{E015}"})).await;
    assert!(b.text(&b.active().await).await.contains("calculator"), "Down, Down: the second child");
    let active = b.active().await;
    b.session("POST", &format!("/element/{active}/value"), json!({"text": "\u{E012}"})).await;
    assert!(b.text(&b.active().await).await.contains("answer"), "Left: back to the parent");

    let chat = b.link_with_text("[role=treeitem] a", "chat").await;
    b.click(&chat).await;
    assert!(b.url().await.contains("?span="), "each span has a link of its own");
    let details = b.text(&b.find("#span-details").await).await;
    assert!(details.contains("chat") && details.contains("CHAT_MODEL"), "{details}");
    let conversation = b.text(&b.find("section[aria-label=Outputs]").await).await;
    // roles are shown upper-case (CSS), as WebDriver reports the rendered text
    assert!(
        conversation.contains("ASSISTANT") && conversation.contains("an answer to question"),
        "{conversation}"
    );
    b.screenshot("5-span").await;

    // A failed tool span shows its exception.
    let failed = b.link_with_text("[role=treeitem] a", "ERROR").await;
    b.click(&failed).await;
    assert!(b.text(&b.find("section[aria-label=Events]").await).await.contains("the tool refused"));
    b.screenshot("6-exception").await;

    // Add a tag, edit it, delete it.
    for value in ["yes", "twice"] {
        b.type_into(&b.find("#tag-key").await, "reviewed").await;
        b.type_into(&b.find("#tag-value").await, value).await;
        b.click(&b.link_with_text("form button", "Set tag").await).await;
        let expected = format!("reviewed {value}");
        b.wait_text("section[aria-labelledby=tags-heading]", |t| t.contains(&expected)).await;
    }
    b.screenshot("7-tagged").await;
    let delete = b.find("button[aria-label='Delete tag reviewed']").await;
    b.click(&delete).await;
    b.wait_text("section[aria-labelledby=tags-heading]", |t| !t.contains("reviewed")).await;

    // The lake on the SQL page: a query and its table, then a bad query and its position.
    b.click(&b.link_with_text("header a", "SQL").await).await;
    b.wait_text("h1", |t| t == "SQL").await;
    let query = "SELECT name, count(*) AS spans FROM main.browser.mlflow_experiment_trace_otel_spans \
                 GROUP BY name ORDER BY name";
    b.type_into(&b.find("textarea#q").await, query).await;
    b.click(&b.link_with_text("form button", "Run").await).await;
    let caption = b.wait_text("caption", |t| t.contains("rows")).await;
    let rows = b.find_all("tbody tr").await;
    assert!(rows.len() >= 3, "{caption}: one row per span name");
    let table = b.text(&b.find("table").await).await;
    assert!(table.contains("answer 2"), "two traces, one root span each: {table}");
    b.screenshot("8-sql").await;
    b.type_into(&b.find("textarea#q").await, "SELECT name FROM t WHERE )").await;
    b.click(&b.link_with_text("form button", "Run").await).await;
    let alert = b.wait_text("[role=alert]", |_| true).await;
    assert!(alert.contains("Line: 1, Column: 26"), "the engine's position: {alert}");
    b.screenshot("9-sql-error").await;
    // A lake trace opens like any other.
    b.type_into(
        &b.find("textarea#q").await,
        "SELECT DISTINCT trace_id FROM main.browser.mlflow_experiment_trace_otel_spans",
    )
    .await;
    b.click(&b.link_with_text("form button", "Run").await).await;
    b.wait_text("caption", |t| t.starts_with("2 rows")).await;
    let hex = b.text(&b.find("tbody td").await).await;
    b.open(&format!("{}/traces/trace:%2Fmain.browser%2F{hex}", server.url())).await;
    assert_eq!(b.find_all("[role=treeitem]").await.len(), 5, "the lake trace's tree");
    b.screenshot("10-lake-trace").await;

    // A large trace opens collapsed; its subtrees load in place, by click and by keyboard.
    let large = send_large_trace(&server);
    b.open(&format!("{}/traces/{large}", server.url())).await;
    assert_eq!(b.find_all("[role=treeitem]").await.len(), 4, "the root and its three stages");
    let more = b.find_all("[role=treeitem][aria-expanded=false] .more").await;
    assert_eq!(more.len(), 3);
    b.click(&more[0]).await;
    let items = "[role=treeitem][aria-expanded=true] > [role=group] > [role=treeitem]";
    b.wait_text(items, |t| t.contains("step-0-0")).await;
    assert_eq!(b.find_all(items).await.len(), 200, "the first stage's first 200 steps");
    assert!(b.page_text().await.contains("500 more"), "the rest of the stage is counted");
    assert!(b.url().await.ends_with(&large), "opened in place, not by following the link");
    // Right on the second stage opens it, Right again goes to its first step.
    let stage = b.link_with_text("[role=treeitem] > a", "stage-1").await;
    b.session("POST", &format!("/element/{stage}/value"), json!({"text": "\u{E014}"})).await;
    b.wait_text("[aria-expanded=true]:nth-of-type(2) [role=group] [role=treeitem]", |t| {
        t.contains("step-1-0")
    })
    .await;
    b.session("POST", &format!("/element/{stage}/value"), json!({"text": "\u{E014}"})).await;
    assert!(b.text(&b.active().await).await.contains("step-1-0"), "Right: into the first child");
    b.screenshot("11-large-trace").await;

    b.session("DELETE", "", Value::Null).await;
}
