//! Times pages of the web UI in headless Chromium (Debian's `chromium` and `chromium-driver`):
//! each page is opened `--loads` times after one warm-up load, and the browser's own Navigation
//! and Paint Timing entries are reported as percentiles, in milliseconds from the start of the
//! navigation: first byte, last byte of the HTML, DOMContentLoaded and the load event (the page
//! whole, stylesheet applied: its first screen, as the UI renders on the server and runs no
//! script before it); with the page's size and the rows it shows (span-tree items, table rows).
//! Headless Chromium records no paint timing, so there is no first-paint figure.
//!
//! ```text
//! cargo run --release -p tracelake-cli --example ui_timing -- \
//!     --page "http://127.0.0.1:5000/experiments/1" --page "http://127.0.0.1:5000/traces/tr-..." --loads 10
//! ```
//!
//! The traces behind the pages are written with `ingest_load`.
#![allow(clippy::print_stdout, reason = "a command-line tool reporting its measurements")]

#[path = "support/flags.rs"]
mod flags;
#[path = "../tests/support/webdriver.rs"]
mod webdriver;

use anyhow::{bail, ensure};
use serde_json::{Value, json};

/// What the page reports about its own loading.
const TIMING: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
return {
  first_byte: nav.responseStart,
  html_done: nav.responseEnd,
  dom_ready: nav.domContentLoadedEventEnd,
  loaded: nav.loadEventEnd,
  bytes: nav.transferSize,
  rows: document.querySelectorAll('[role=treeitem], tbody tr').length,
};
"#;

const METRICS: [&str; 4] = ["first_byte", "html_done", "dom_ready", "loaded"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut pages = Vec::new();
    let mut loads = 10usize;
    for (flag, value) in flags::pairs()? {
        match flag.as_str() {
            "--page" => pages.push(value),
            "--loads" => loads = value.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(!pages.is_empty(), "give at least one --page URL");

    let browser = webdriver::Browser::start().await;
    for page in &pages {
        browser.open(page).await;
        let mut samples: Vec<Value> = Vec::with_capacity(loads);
        for _ in 0..loads {
            browser.open(page).await;
            let t = browser.execute(TIMING, json!([])).await;
            ensure!(t["bytes"].as_u64().unwrap_or(0) > 0, "{page} came from the browser's cache: {t}");
            samples.push(t);
        }
        let last = samples.last().unwrap();
        println!("{page}");
        println!("  {} loads, {} bytes of HTML, {} rows shown", loads, last["bytes"], last["rows"]);
        for metric in METRICS {
            let mut v: Vec<f64> = samples.iter().filter_map(|s| s[metric].as_f64()).collect();
            if v.is_empty() {
                println!("  {metric:<12} not reported");
                continue;
            }
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            println!(
                "  {metric:<12} p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
                at(0.5),
                at(0.95),
                at(1.0)
            );
        }
    }
    Ok(())
}
