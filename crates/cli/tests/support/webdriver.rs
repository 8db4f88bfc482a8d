//! A headless Chromium session over WebDriver: Debian's `chromium` and `chromium-driver` (which
//! `scripts/test` installs), or the binaries `TRACELAKE_CHROMIUM` / `TRACELAKE_CHROMEDRIVER`
//! name. Shared by the browser test and the UI timing harness (`examples/ui_timing.rs`).
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    pub http: reqwest::Client,
    /// chromedriver's URL.
    pub base: String,
    pub session: String,
}

fn tool(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver (scripts/test does), or set {var}"
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless browser with a 1400×1000 window.
    pub async fn start() -> Browser {
        let chromium = tool("TRACELAKE_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("TRACELAKE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("tracelake-chromium-{}-{port}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ]},
        }}});
        let mut browser = Browser { driver, http, base, session: String::new() };
        let created = browser.call("POST", "/session", caps).await;
        browser.session = created["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    /// A WebDriver command; its `value`. Panics when chromedriver refuses it.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).header("Content-Type", "application/json").body(body.to_string()),
        };
        let response = req.send().await.expect("chromedriver answers");
        let status = response.status();
        let value: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {value}");
        value["value"].clone()
    }

    /// A command of this session.
    pub async fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    /// Navigates to `url`; returns when the page has loaded.
    pub async fn open(&self, url: &str) {
        self.session("POST", "/url", json!({"url": url})).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.session("POST", "/execute/sync", json!({"script": script, "args": args})).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
