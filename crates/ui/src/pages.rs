//! The pages, as HTML (maud escapes every interpolated value).

use std::collections::HashMap;

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;
use tracelake_model::{
    Span, SpanId, SpanType, StatusCode as SpanStatusCode, Trace, TraceInfo, exception, format_timestamp_ms,
    keys, metadata_keys, tag_keys,
};
use tracelake_store::Experiment;
use tracelake_store::lake::{INFO_TABLE, LOGS_TABLE, METRICS_TABLE, SPANS_TABLE};

const STYLE: &str = r#"
:root { font-family: system-ui, sans-serif; color: #1c1e21; }
body { margin: 0; }
header.top { background: #0f3d57; color: #fff; padding: .6rem 1rem; }
header.top a { color: #fff; text-decoration: none; font-weight: 600; }
main { padding: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
th a { color: inherit; }
.status-OK { color: #1a7f37; } .status-ERROR { color: #cf222e; font-weight: 600; }
.status-IN_PROGRESS { color: #9a6700; }
.muted { color: #57606a; } tr.overridden { opacity: .6; } .chip { background: #eef1f4; border-radius: 3px; padding: 0 .3rem; margin-right: .2rem; }
.error { background: #fff1f0; border: 1px solid #cf222e; padding: .5rem; margin: .5rem 0; }
.error pre { margin: .3rem 0 0; }
form.search input[name=filter] { width: 60%; font-family: ui-monospace, monospace; }
.layout { display: grid; grid-template-columns: minmax(22rem, 1fr) minmax(24rem, 1fr); gap: 1rem; }
ul[role=tree], ul[role=group] { list-style: none; padding-left: 1rem; margin: 0; }
ul[role=tree] { padding-left: 0; }
li[role=treeitem] > a { display: grid; grid-template-columns: 1fr 10rem; gap: .5rem; padding: .1rem .2rem;
  color: inherit; text-decoration: none; border-radius: 3px; }
li[role=treeitem] > a[aria-current=true] { background: #ddf4ff; }
li[role=treeitem] > a:focus { outline: 2px solid #0969da; }
.bar { display: block; position: relative; height: .8rem; background: #f0f2f4; margin-top: .2rem; }
.bar span { position: absolute; top: 0; bottom: 0; background: #54aeff; min-width: 2px; }
.bar span.failed { background: #ff8182; }
.more { cursor: pointer; } p.rest { margin: .1rem 0 .3rem 1rem; font-size: .8rem; }
.type { font-size: .7rem; font-weight: 600; border-radius: 3px; padding: 0 .25rem; background: #eef1f4; }
.type .icon { fill: currentColor; vertical-align: -1px; }
.type-model { color: #8250df; } .type-flow { color: #0969da; } .type-tool { color: #bc4c00; }
.type-data { color: #1a7f37; } .type-check { color: #cf222e; } .type-other { color: #57606a; }
pre.json { background: #f6f8fa; padding: .5rem; overflow: auto; max-height: 24rem; font-size: .8rem; }
ol.chat { list-style: none; padding: 0; } ol.chat li { margin: .3rem 0; padding: .4rem; border-radius: 4px; background: #f6f8fa; }
ol.chat li.role-user { background: #ddf4ff; } ol.chat li.role-assistant { background: #dafbe1; }
ol.chat .role { font-weight: 600; font-size: .75rem; text-transform: uppercase; }
"#;

/// Arrow keys in the span tree, as the WAI-ARIA tree pattern has them: Up and Down move between
/// rows, Home and End to the first and last, Left to the parent, Right into the first child
/// (opening a collapsed row in place first). (Without scripts the rows are plain links,
/// reachable with Tab.)
const TREE_KEYS: &str = r#"
document.querySelectorAll('[role=tree]').forEach(function (tree) {
  tree.addEventListener('keydown', function (e) {
    var rows = Array.prototype.slice.call(tree.querySelectorAll('[role=treeitem] > a'));
    var i = rows.indexOf(document.activeElement);
    if (i < 0) return;
    var next = null;
    if (e.key === 'ArrowDown') next = rows[i + 1];
    else if (e.key === 'ArrowUp') next = rows[i - 1];
    else if (e.key === 'Home') next = rows[0];
    else if (e.key === 'End') next = rows[rows.length - 1];
    else if (e.key === 'ArrowLeft') {
      var group = rows[i].parentElement.parentElement.closest('[role=treeitem]');
      next = group && group.querySelector(':scope > a');
    }
    else if (e.key === 'ArrowRight') {
      var item = rows[i].parentElement;
      if (item.hasAttribute('data-children')) { openRow(item); e.preventDefault(); return; }
      next = item.querySelector(':scope > [role=group] > [role=treeitem] > a');
    }
    if (next) { next.focus(); e.preventDefault(); }
  });
  // "N more" on a collapsed row loads its children in place (without scripts it is part of
  // the row's link, whose page shows them).
  tree.addEventListener('click', function (e) {
    var more = e.target.closest('.more');
    var item = more && more.closest('[role=treeitem]');
    if (item && item.hasAttribute('data-children')) { openRow(item); e.preventDefault(); }
  });
});
function openRow(item) {
  if (item.getAttribute('aria-busy') === 'true') return;
  item.setAttribute('aria-busy', 'true');
  fetch(item.getAttribute('data-children')).then(function (r) {
    if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
    return r.text();
  }).then(function (html) {
    item.insertAdjacentHTML('beforeend', html);
    item.removeAttribute('data-children');
    item.setAttribute('aria-expanded', 'true');
    var more = item.querySelector(':scope > a .more');
    if (more) more.remove();
  }).catch(function (err) {
    item.insertAdjacentHTML('beforeend', '<p class="error" role="alert">Could not load the children: ' + err.message + '</p>');
  }).finally(function () { item.removeAttribute('aria-busy'); });
}
"#;

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tracelake" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header.top { nav aria-label="Site" { a href="/" { "tracelake" } " " a href="/sql" { "SQL" } } }
                main { (body) }
                script { (PreEscaped(TREE_KEYS)) }
            }
        }
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Markup {
    layout(
        "Error",
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to the experiments" } }
        },
    )
}

/// A SQL result to show.
pub(crate) struct SqlResult {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rows shown at most.
    pub(crate) limit: usize,
}

/// A cell of a SQL result: strings as they are, everything else as JSON.
fn sql_cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn sql(schemas: &[String], query: &str, result: Option<Result<&SqlResult, &str>>) -> Markup {
    let example = schemas.first().map_or_else(
        || "SELECT 1".to_owned(),
        |s| {
            format!("SELECT name, count(*) AS spans FROM {s}.{SPANS_TABLE} GROUP BY name ORDER BY spans DESC")
        },
    );
    layout(
        "SQL",
        html! {
            h1 { "SQL" }
            p.muted { "One read-only statement over the lake's tables, named " code { "catalog.schema.table" } "." }
            form method="get" action="/sql" {
                label for="q" { "Query" }
                textarea #q name="q" rows="5" cols="100" spellcheck="false" aria-describedby=[result.and_then(|r| r.err()).map(|_| "sql-error")] {
                    (if query.is_empty() { example.as_str() } else { query })
                }
                button type="submit" { "Run" }
            }
            @match result {
                Some(Err(message)) => p #sql-error .error role="alert" { (message) },
                Some(Ok(r)) => {
                    table {
                        caption.muted {
                            (r.rows.len()) " rows"
                            @if r.rows.len() > r.limit { " (the first " (r.limit) " shown)" }
                        }
                        thead { tr { @for c in &r.columns { th scope="col" { (c) } } } }
                        tbody {
                            @for row in r.rows.iter().take(r.limit) {
                                tr { @for c in &r.columns { td { (sql_cell(row.get(c))) } } }
                            }
                        }
                    }
                },
                None => {},
            }
            h2 { "Tables" }
            @if schemas.is_empty() {
                p { "The lake holds no schema yet: send spans with the header " code { "X-Tracelake-Table-Name" } "." }
            } @else {
                ul {
                    @for s in schemas {
                        @for t in [SPANS_TABLE, LOGS_TABLE, METRICS_TABLE, INFO_TABLE] {
                            @let name = format!("{s}.{t}");
                            li { a href={ "/sql?q=" (encode(&format!("SELECT * FROM {name} LIMIT 100"))) } { code { (name) } } }
                        }
                    }
                }
            }
        },
    )
}

pub(crate) fn experiments(list: &[Experiment]) -> Markup {
    layout(
        "Experiments",
        html! {
            h1 { "Experiments" }
            @if list.is_empty() {
                p { "No experiments yet." }
            } @else {
                table {
                    caption.muted { (list.len()) " experiments" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "ID" } th scope="col" { "Created" } } }
                    tbody {
                        @for e in list {
                            tr {
                                td { a href={ "/experiments/" (e.experiment_id) } { (e.name) } }
                                td.muted { (e.experiment_id) }
                                td.muted { (format_timestamp_ms(e.creation_time_ms)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Where a filter went wrong: 1-based column and the parser's message.
pub(crate) struct FilterProblem {
    pub(crate) column: usize,
    pub(crate) message: String,
}

/// A list URL with the given query (empty values left out).
fn list_href(experiment: &str, filter: &str, order_by: &str, page_token: Option<&str>) -> String {
    let mut q: Vec<(&str, &str)> = Vec::new();
    if !filter.is_empty() {
        q.push(("filter", filter));
    }
    if !order_by.is_empty() {
        q.push(("order_by", order_by));
    }
    if let Some(t) = page_token {
        q.push(("page_token", t));
    }
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    if query.is_empty() {
        format!("/experiments/{}", encode(experiment))
    } else {
        format!("/experiments/{}?{}", encode(experiment), query.join("&"))
    }
}

pub(crate) fn session_href(experiment: &str, session: &str) -> String {
    format!("/experiments/{}/sessions/{}", encode(experiment), encode(session))
}

pub(crate) fn trace_href(trace_id: &str, span: Option<&str>) -> String {
    match span {
        Some(s) => format!("/traces/{}?span={}", encode(trace_id), encode(s)),
        None => format!("/traces/{}", encode(trace_id)),
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A sortable column header: a link that sorts by `key`, descending first, and toggles.
fn sort_header(experiment: &str, filter: &str, current: &str, key: &str, label: &str) -> Markup {
    let (cur_key, cur_dir) = current.split_once(' ').unwrap_or((current, "ASC"));
    let active = cur_key.eq_ignore_ascii_case(key);
    let next = if active && cur_dir.eq_ignore_ascii_case("DESC") {
        format!("{key} ASC")
    } else {
        format!("{key} DESC")
    };
    let sort = match (active, cur_dir.to_ascii_uppercase().as_str()) {
        (true, "DESC") => "descending",
        (true, _) => "ascending",
        _ => "none",
    };
    html! { th scope="col" aria-sort=(sort) { a href=(list_href(experiment, filter, &next, None)) { (label) } } }
}

fn state_cell(state: &str) -> Markup {
    html! { span class={ "status-" (state) } { (state) } }
}

/// Total tokens from the trace's token-usage metadata.
fn total_tokens(info: &TraceInfo) -> Option<i64> {
    let usage: Value = serde_json::from_str(info.trace_metadata.get(metadata_keys::TOKEN_USAGE)?).ok()?;
    usage.get("total_tokens").and_then(Value::as_i64)
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

pub(crate) fn traces(
    experiment: &Experiment,
    filter: &str,
    order_by: &str,
    items: &[TraceInfo],
    next_page: Option<&str>,
    problem: Option<&FilterProblem>,
) -> Markup {
    let id = experiment.experiment_id.as_str();
    layout(
        &experiment.name,
        html! {
            h1 { (experiment.name) }
            p { a href={ "/experiments/" (encode(id)) "/charts" } { "Charts: latency, tokens and errors over time" } }
            form.search method="get" action={ "/experiments/" (encode(id)) } role="search" {
                label for="filter" { "Filter " }
                input #filter name="filter" type="text" value=(filter)
                    placeholder="tags.env = 'prod' AND attributes.status = 'ERROR'"
                    aria-invalid=[problem.map(|_| "true")] aria-describedby=[problem.map(|_| "filter-error")];
                @if !order_by.is_empty() { input type="hidden" name="order_by" value=(order_by); }
                " " button type="submit" { "Search" }
            }
            @if let Some(p) = problem {
                div #filter-error .error role="alert" {
                    strong { "Bad filter" } ": " (p.message)
                    pre aria-label="where" { (filter) "\n" (" ".repeat(p.column.saturating_sub(1))) "^" }
                }
            }
            @if problem.is_none() {
                table {
                    caption.muted { (items.len()) " traces on this page" }
                    thead {
                        tr {
                            (sort_header(id, filter, order_by, "name", "Trace"))
                            (sort_header(id, filter, order_by, "status", "Status"))
                            (sort_header(id, filter, order_by, "timestamp_ms", "Started"))
                            (sort_header(id, filter, order_by, "execution_time_ms", "Latency"))
                            th scope="col" { "Tokens" }
                            th scope="col" { "Session" }
                            th scope="col" { "Tags" }
                            th scope="col" { "Request" }
                            th scope="col" { "Response" }
                        }
                    }
                    tbody {
                        @for t in items {
                            tr {
                                td { a href=(trace_href(&t.trace_id, None)) {
                                    (t.tags.get(tag_keys::TRACE_NAME).map_or(t.trace_id.as_str(), String::as_str))
                                } }
                                td { (state_cell(t.state.as_str())) }
                                td { (format_timestamp_ms(t.request_time_ms)) }
                                td { @if let Some(d) = t.execution_duration_ms { (d) " ms" } }
                                td { @if let Some(n) = total_tokens(t) { (n) } }
                                td { @if let Some(s) = t.trace_metadata.get(metadata_keys::SESSION) {
                                    a href=(session_href(id, s)) { (s) }
                                } }
                                td { @for (k, v) in t.tags.iter().filter(|(k, _)| !k.starts_with("mlflow.")) {
                                    span.chip { (k) "=" (v) }
                                } }
                                td.muted { (shorten(t.request_preview.as_deref().unwrap_or(""), 80)) }
                                td.muted { (shorten(t.response_preview.as_deref().unwrap_or(""), 80)) }
                            }
                        }
                    }
                }
                nav aria-label="Pages" {
                    a href=(list_href(id, filter, order_by, None)) { "First page" }
                    @if let Some(token) = next_page {
                        " · " a rel="next" href=(list_href(id, filter, order_by, Some(token))) { "Next page" }
                    }
                }
            }
        },
    )
}

pub(crate) fn session(
    experiment: &Experiment,
    session: &str,
    traces: &[TraceInfo],
    truncated: bool,
) -> Markup {
    let id = experiment.experiment_id.as_str();
    layout(
        &format!("Session {session}"),
        html! {
            nav aria-label="Breadcrumb" {
                a href="/" { "Experiments" } " / " a href=(list_href(id, "", "", None)) { (experiment.name) }
            }
            h1 { "Session " (session) }
            p.muted { (traces.len()) " traces, oldest first" @if truncated { " (the first " (traces.len()) " only)" } }
            ol.session {
                @for t in traces {
                    li {
                        article aria-label={ "Trace " (t.trace_id) } {
                            h2 {
                                a href=(trace_href(&t.trace_id, None)) {
                                    (t.tags.get(tag_keys::TRACE_NAME).map_or(t.trace_id.as_str(), String::as_str))
                                }
                                " " (state_cell(t.state.as_str()))
                            }
                            p.muted { (format_timestamp_ms(t.request_time_ms))
                                @if let Some(d) = t.execution_duration_ms { " · " (d) " ms" } }
                            ol.chat {
                                @if let Some(r) = &t.request_preview { li.role-user { div.role { "request" } div { (r) } } }
                                @if let Some(r) = &t.response_preview { li.role-assistant { div.role { "response" } div { (r) } } }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One time bucket of the charts.
#[derive(Default, Clone)]
struct Bucket {
    start_ms: i64,
    latencies: Vec<i64>,
    tokens: i64,
    errors: usize,
    traces: usize,
}

const BUCKETS: usize = 24;

fn buckets(traces: &[TraceInfo]) -> Vec<Bucket> {
    let (Some(first), Some(last)) =
        (traces.iter().map(|t| t.request_time_ms).min(), traces.iter().map(|t| t.request_time_ms).max())
    else {
        return vec![];
    };
    let width = ((last - first) / BUCKETS as i64 + 1).max(1);
    let mut out: Vec<Bucket> =
        (0..BUCKETS).map(|i| Bucket { start_ms: first + i as i64 * width, ..Bucket::default() }).collect();
    for t in traces {
        let b = &mut out[(((t.request_time_ms - first) / width) as usize).min(BUCKETS - 1)];
        b.traces += 1;
        b.latencies.extend(t.execution_duration_ms);
        b.tokens += total_tokens(t).unwrap_or(0);
        b.errors += usize::from(t.state.as_str() == "ERROR");
    }
    for b in &mut out {
        b.latencies.sort_unstable();
    }
    out
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

/// A bar chart as SVG, with a text alternative (the same numbers as a table).
fn bar_chart(title: &str, unit: &str, buckets: &[Bucket], value: impl Fn(&Bucket) -> Option<i64>) -> Markup {
    let values: Vec<Option<i64>> = buckets.iter().map(&value).collect();
    let peak = values.iter().flatten().copied().max().unwrap_or(0);
    let max = peak.max(1) as f64;
    let (w, h, bar) = (720.0, 160.0, 720.0 / buckets.len().max(1) as f64);
    let slug: String =
        title.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    html! {
        figure aria-labelledby={ (slug) "-caption" } {
            figcaption #{ (slug) "-caption" } { strong { (title) } span.muted { " (max " (peak) " " (unit) ")" } }
            svg role="img" aria-label=(title) width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } {
                rect x="0" y="0" width=(w) height=(h) fill="#f6f8fa" {}
                @for (i, v) in values.iter().enumerate() {
                    @if let Some(v) = v {
                        @let height = (*v as f64 / max) * (h - 4.0);
                        rect x=(format!("{:.1}", i as f64 * bar + 1.0)) y=(format!("{:.1}", h - height))
                            width=(format!("{:.1}", bar - 2.0)) height=(format!("{:.1}", height)) fill="#54aeff" {
                            title { (format_timestamp_ms(buckets[i].start_ms)) ": " (v) " " (unit) }
                        }
                    }
                }
            }
            details {
                summary { "As a table" }
                table {
                    thead { tr { th scope="col" { "From" } th scope="col" { (title) } } }
                    tbody { @for (b, v) in buckets.iter().zip(&values) {
                        tr { td { (format_timestamp_ms(b.start_ms)) } td { @if let Some(v) = v { (v) } } }
                    } }
                }
            }
        }
    }
}

pub(crate) fn charts(experiment: &Experiment, traces: &[TraceInfo]) -> Markup {
    let id = experiment.experiment_id.as_str();
    let buckets = buckets(traces);
    layout(
        &format!("{} charts", experiment.name),
        html! {
            nav aria-label="Breadcrumb" {
                a href="/" { "Experiments" } " / " a href=(list_href(id, "", "", None)) { (experiment.name) }
            }
            h1 { (experiment.name) ": over time" }
            p.muted { "From the latest " (traces.len()) " traces, in " (buckets.len()) " intervals." }
            @if buckets.is_empty() {
                p { "No traces yet." }
            } @else {
                (bar_chart("Latency p50", "ms", &buckets, |b| percentile(&b.latencies, 0.5)))
                (bar_chart("Latency p95", "ms", &buckets, |b| percentile(&b.latencies, 0.95)))
                (bar_chart("Tokens", "tokens", &buckets, |b| Some(b.tokens)))
                (bar_chart("Errors", "traces", &buckets, |b| Some(b.errors as i64)))
                (bar_chart("Traces", "traces", &buckets, |b| Some(b.traces as i64)))
            }
        },
    )
}

/// A trace up to this size shows its whole tree; a larger one shows the top levels and the
/// path to the selected span, each collapsed subtree a link that opens it.
pub(crate) const FULL_TREE_SPANS: usize = 2_000;
/// Children shown under one span at most, in a large trace.
pub(crate) const MAX_CHILDREN_SHOWN: usize = 200;

/// One row of the span tree: its depth, the span, and how many of its children are not shown
/// (`collapsed` when none is: the row can be opened in place).
pub(crate) struct Row<'a> {
    depth: usize,
    span: &'a Span,
    hidden_children: usize,
    collapsed: bool,
}

impl<'a> Row<'a> {
    fn new(depth: usize, span: &'a Span, children: usize, shown: usize) -> Self {
        Row { depth, span, hidden_children: children - shown, collapsed: shown == 0 && children > 0 }
    }
}

/// A trace's spans by id and by parent (each list by start time); a span whose parent is not in
/// the trace counts as a top-level one.
struct Tree<'a> {
    by_id: HashMap<SpanId, &'a Span>,
    children: HashMap<Option<SpanId>, Vec<&'a Span>>,
}

impl<'a> Tree<'a> {
    fn new(spans: &'a [Span]) -> Self {
        let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_id, s)).collect();
        let mut children: HashMap<Option<SpanId>, Vec<&Span>> = HashMap::new();
        for s in spans {
            let parent = s.parent_id.filter(|p| by_id.contains_key(p));
            children.entry(parent).or_default().push(s);
        }
        for list in children.values_mut() {
            list.sort_by_key(|s| (s.start_time_unix_nano, s.span_id.to_u64()));
        }
        Tree { by_id, children }
    }

    fn children_of(&self, parent: Option<SpanId>) -> &[&'a Span] {
        self.children.get(&parent).map_or(&[][..], Vec::as_slice)
    }
}

/// Spans in tree order (each followed by its children, by start time). For a trace larger than
/// [`FULL_TREE_SPANS`], only the roots' children and the children of the spans on the way to
/// `selected` are opened, at most [`MAX_CHILDREN_SHOWN`] of each.
fn tree_rows<'a>(tree: &Tree<'a>, selected: Option<SpanId>) -> Vec<Row<'a>> {
    let (by_id, children) = (&tree.by_id, &tree.children);
    let full = by_id.len() <= FULL_TREE_SPANS;
    let mut open: std::collections::HashSet<SpanId> = std::collections::HashSet::new();
    if !full {
        open.extend(children.get(&None).into_iter().flatten().map(|s| s.span_id));
        let mut at = selected.and_then(|id| by_id.get(&id).copied());
        while let Some(span) = at {
            open.insert(span.span_id);
            at = span.parent_id.and_then(|p| by_id.get(&p).copied());
        }
    }
    let mut out = Vec::with_capacity(if full { by_id.len() } else { 256 });
    let mut stack: Vec<(usize, &Span)> = tree.children_of(None).iter().rev().map(|s| (0, *s)).collect();
    while let Some((depth, span)) = stack.pop() {
        let kids = tree.children_of(Some(span.span_id));
        let shown: &[&Span] = if full {
            kids
        } else if open.contains(&span.span_id) {
            // keep the selected span's branch visible even past the cap
            let cap = &kids[..kids.len().min(MAX_CHILDREN_SHOWN)];
            if kids.len() > MAX_CHILDREN_SHOWN
                && let Some(on_path) = kids[MAX_CHILDREN_SHOWN..].iter().find(|k| open.contains(&k.span_id))
            {
                out.push(Row::new(depth, span, kids.len(), cap.len() + 1));
                stack.push((depth + 1, on_path));
                stack.extend(cap.iter().rev().map(|k| (depth + 1, *k)));
                continue;
            }
            cap
        } else {
            &[]
        };
        out.push(Row::new(depth, span, kids.len(), shown.len()));
        stack.extend(shown.iter().rev().map(|k| (depth + 1, *k)));
    }
    out
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Chat messages (`[{role, content}]`) found in a span's inputs or outputs, if that is what
/// they hold: `{"messages": [...]}`, a bare list, `{"choices": [{"message": ...}]}` or one
/// message.
fn chat_messages(value: &Value) -> Option<Vec<(String, String)>> {
    let as_message = |m: &Value| {
        let role = m.get("role")?.as_str()?.to_owned();
        let content = match m.get("content")? {
            Value::String(s) => s.clone(),
            other => pretty(other),
        };
        Some((role, content))
    };
    let list: Vec<&Value> = if let Some(Value::Array(ms)) = value.get("messages") {
        ms.iter().collect()
    } else if let Value::Array(ms) = value {
        ms.iter().collect()
    } else if let Some(Value::Array(choices)) = value.get("choices") {
        choices.iter().filter_map(|c| c.get("message")).collect()
    } else if value.get("role").is_some() {
        vec![value]
    } else {
        return None;
    };
    let out: Option<Vec<_>> = list.into_iter().map(as_message).collect();
    out.filter(|v| !v.is_empty())
}

fn value_block(label: &str, value: Option<Value>) -> Markup {
    html! {
        section aria-label=(label) {
            h3 { (label) }
            @match value {
                None => p.muted { "none" },
                Some(v) => {
                    @if let Some(messages) = chat_messages(&v) {
                        ol.chat aria-label={ (label) " as a conversation" } {
                            @for (role, content) in &messages {
                                li class={ "role-" (role) } { div.role { (role) } div { (content) } }
                            }
                        }
                        details { summary { "JSON" } pre.json { (pretty(&v)) } }
                    } @else {
                        pre.json { (pretty(&v)) }
                    }
                }
            }
        }
    }
}

/// A span type's badge: an icon of its kind of work (a shape and a colour; decorative, the
/// name says it) and its name.
fn type_badge(span_type: &SpanType) -> Markup {
    // (kind, SVG path in a 10×10 box)
    let (kind, path) = match span_type {
        SpanType::Llm | SpanType::ChatModel | SpanType::Embedding => ("model", "M5 0 L10 5 L5 10 L0 5 Z"),
        SpanType::Agent | SpanType::Chain | SpanType::Workflow | SpanType::Task => {
            ("flow", "M0 1 H10 V4 H0 Z M0 6 H10 V9 H0 Z")
        }
        SpanType::Tool => ("tool", "M1 1 H9 V9 H1 Z"),
        SpanType::Retriever | SpanType::Reranker | SpanType::Memory => {
            ("data", "M5 0 A5 2.5 0 0 1 5 5 A5 2.5 0 0 1 5 0 Z M0 3 V8 A5 2 0 0 0 10 8 V3")
        }
        SpanType::Guardrail | SpanType::Evaluator => ("check", "M5 0 L10 10 H0 Z"),
        _ => ("other", "M5 2 A3 3 0 1 1 5 8 A3 3 0 1 1 5 2 Z"),
    };
    html! {
        span class={ "type type-" (kind) } {
            svg.icon aria-hidden="true" focusable="false" width="10" height="10" viewBox="0 0 10 10" {
                path d=(path) {}
            }
            " " (span_type.as_str())
        }
    }
}

fn span_details(span: &Span) -> Markup {
    let hidden = [keys::INPUTS, keys::OUTPUTS];
    html! {
        h2 #span-details { (span.name) " " (type_badge(&span.span_type())) }
        dl {
            dt { "Status" } dd { (state_cell(span.status.code.as_str())) @if !span.status.message.is_empty() { " — " (span.status.message) } }
            dt { "Span ID" } dd { code { (span.span_id.to_string()) } }
            @if let Some(d) = span.duration_ns() { dt { "Duration" } dd { (format!("{:.1}", d as f64 / 1e6)) " ms" } }
        }
        (value_block("Inputs", span.inputs()))
        (value_block("Outputs", span.outputs()))
        section aria-label="Attributes" {
            h3 { "Attributes" }
            table {
                tbody {
                    @for (k, v) in span.attributes.iter().filter(|(k, _)| !hidden.contains(k)) {
                        tr { th scope="row" { (k) } td { code { (v) } } }
                    }
                }
            }
        }
        @if !span.events.is_empty() {
            section aria-label="Events" {
                h3 { "Events" }
                @for e in &span.events {
                    article.event {
                        h4 { (e.name) }
                        @if e.name == exception::EVENT_NAME {
                            p.error {
                                strong { (e.attributes.get(exception::TYPE).and_then(Value::as_str).unwrap_or("Exception")) }
                                ": " (e.attributes.get(exception::MESSAGE).and_then(Value::as_str).unwrap_or(""))
                            }
                            @if let Some(st) = e.attributes.get(exception::STACKTRACE).and_then(Value::as_str) {
                                pre.json aria-label="Stack trace" { (st) }
                            }
                        } @else {
                            pre.json { (pretty(&Value::Object(e.attributes.clone()))) }
                        }
                    }
                }
            }
        }
    }
}

/// A trace's page: the trace with its spans in outline (enough for the tree and the timeline),
/// their tree, and the span the link asked for.
pub(crate) struct TracePage<'a> {
    trace: &'a Trace,
    tree: Tree<'a>,
    selected: Option<SpanId>,
}

impl<'a> TracePage<'a> {
    pub(crate) fn new(trace: &'a Trace, selected: Option<SpanId>) -> Self {
        TracePage { trace, tree: Tree::new(&trace.spans), selected }
    }

    /// The span the page shows in full: the selected one when the trace has it, else the first
    /// at the top of the tree (a root, or a span whose parent is missing).
    pub(crate) fn shown_span(&self) -> Option<SpanId> {
        self.selected
            .filter(|id| self.tree.by_id.contains_key(id))
            .or_else(|| self.tree.children_of(None).first().map(|s| s.span_id))
    }

    /// The page, with `chosen` (the [`shown_span`](Self::shown_span), read whole) in full.
    pub(crate) fn render(&self, chosen: Option<&Span>) -> Markup {
        trace(self.trace, &self.tree, self.selected, chosen)
    }
}

fn trace(trace: &Trace, tree: &Tree<'_>, selected: Option<SpanId>, chosen: Option<&Span>) -> Markup {
    let info = &trace.info;
    let name = info.tags.get(tag_keys::TRACE_NAME).map_or(info.trace_id.as_str(), String::as_str);
    let ordered = tree_rows(tree, selected);
    let (start, total) = timeline(&trace.spans);
    let experiment = info.trace_location.experiment_id();
    layout(
        name,
        html! {
            nav aria-label="Breadcrumb" {
                a href="/" { "Experiments" }
                @if let Some(e) = experiment { " / " a href={ "/experiments/" (encode(e)) } { "experiment " (e) } }
            }
            h1 { (name) }
            dl {
                dt { "Trace ID" } dd { code { (info.trace_id) } }
                dt { "Status" } dd { (state_cell(info.state.as_str())) }
                dt { "Started" } dd { (format_timestamp_ms(info.request_time_ms)) }
                @if let Some(d) = info.execution_duration_ms { dt { "Latency" } dd { (d) " ms" } }
                @if let Some(n) = total_tokens(info) { dt { "Tokens" } dd { (n) } }
                @if let Some(s) = info.trace_metadata.get(metadata_keys::SESSION) {
                    dt { "Session" }
                    dd { @if let Some(e) = experiment { a href=(session_href(e, s)) { (s) } } @else { (s) } }
                }
                @if let Some(u) = info.trace_metadata.get(metadata_keys::USER) { dt { "User" } dd { (u) } }
            }
            div.layout {
                section aria-labelledby="spans-heading" {
                    h2 #spans-heading { "Spans (" (trace.spans.len()) ")" }
                    (span_tree(&info.trace_id, &ordered, chosen.map(|c| c.span_id), start, total))
                }
                section aria-label="Selected span" {
                    @if let Some(span) = chosen { (span_details(span)) } @else { p { "This trace has no spans." } }
                }
            }
            @if !info.assessments.is_empty() { (assessments(&info.trace_id, &info.assessments)) }
            section aria-labelledby="tags-heading" {
                h2 #tags-heading { "Tags" }
                table {
                    tbody {
                        @for (k, v) in &info.tags {
                            tr {
                                th scope="row" { (k) } td { (v) }
                                td {
                                    form method="post" action={ (trace_href(&info.trace_id, None)) "/tags/delete" } {
                                        input type="hidden" name="key" value=(k);
                                        button type="submit" aria-label={ "Delete tag " (k) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
                form method="post" action={ (trace_href(&info.trace_id, None)) "/tags" } {
                    label for="tag-key" { "Key " } input #tag-key name="key" type="text" required;
                    " " label for="tag-value" { "Value " } input #tag-value name="value" type="text";
                    " " button type="submit" { "Set tag" }
                }
            }
            section aria-labelledby="metadata-heading" {
                h2 #metadata-heading { "Metadata" }
                table { tbody { @for (k, v) in &info.trace_metadata { tr { th scope="row" { (k) } td { (shorten(v, 400)) } } } } }
            }
        },
    )
}

/// The feedback and expectations logged on a trace (`mlflow.log_feedback`,
/// `log_expectation`), the valid ones first; one replaced by another is marked overridden.
fn assessments(trace_id: &str, all: &[Value]) -> Markup {
    let text = |a: &Value, key: &str| a.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut rows: Vec<&Value> = all.iter().collect();
    rows.sort_by_key(|a| a.get("valid") == Some(&Value::Bool(false)));
    html! {
        section aria-labelledby="assessments-heading" {
            h2 #assessments-heading { "Assessments (" (all.len()) ")" }
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Value" }
                    th scope="col" { "Source" } th scope="col" { "Rationale" } th scope="col" { "Span" }
                    th scope="col" { "Logged" }
                } }
                tbody {
                    @for a in rows {
                        @let overridden = a.get("valid") == Some(&Value::Bool(false));
                        @let source = a.get("source").cloned().unwrap_or_default();
                        @let span = text(a, "span_id");
                        @let source_id = text(&source, "source_id");
                        tr class=[overridden.then_some("overridden")] {
                            th scope="row" {
                                (text(a, "assessment_name"))
                                @if overridden { " " span.muted { "(overridden)" } }
                            }
                            td { @if a.get("feedback").is_some() { "Feedback" } @else { "Expectation" } }
                            td { (shorten(&assessment_value(a), 400)) }
                            td {
                                (text(&source, "source_type"))
                                @if !source_id.is_empty() { " " span.muted { (source_id) } }
                            }
                            td { (shorten(&text(a, "rationale"), 400)) }
                            td { @if !span.is_empty() { a href=(trace_href(trace_id, Some(&span))) { code { (span) } } } }
                            td.muted { (text(a, "create_time")) }
                        }
                    }
                }
            }
        }
    }
}

/// An assessment's value as text: a string as it is, anything else as JSON; a feedback that
/// failed shows its error.
fn assessment_value(a: &Value) -> String {
    let shown = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(feedback) = a.get("feedback") {
        if let Some(e) = feedback.get("error") {
            let part = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
            return format!("error: {} {}", part("error_code"), part("error_message")).trim_end().to_owned();
        }
        return feedback.get("value").map(shown).unwrap_or_default();
    }
    let Some(expectation) = a.get("expectation") else { return String::new() };
    match (expectation.get("value"), expectation.pointer("/serialized_value/value")) {
        (Some(v), _) => shown(v),
        (None, Some(Value::String(serialized))) => serialized.clone(),
        _ => String::new(),
    }
}

/// The children of span `parent` in trace `trace` (spans in outline), as the group a collapsed
/// row of the trace page opens into: at most [`MAX_CHILDREN_SHOWN`], each collapsed, with the
/// number of the others; bars on the trace's timeline.
pub(crate) fn children(trace: &Trace, parent: SpanId) -> Option<Markup> {
    let tree = Tree::new(&trace.spans);
    tree.by_id.get(&parent)?;
    let kids = tree.children_of(Some(parent));
    let shown = &kids[..kids.len().min(MAX_CHILDREN_SHOWN)];
    let rows: Vec<Row<'_>> =
        shown.iter().map(|k| Row::new(0, k, tree.children_of(Some(k.span_id)).len(), 0)).collect();
    let (start, total) = timeline(&trace.spans);
    let list = span_list(r#"<ul role="group">"#, &trace.info.trace_id, &rows, None, start, total);
    let rest = kids.len() - shown.len();
    Some(html! {
        (list)
        @if rest > 0 {
            p.muted.rest { (rest) " more: select one of them (by its link) to see it among them" }
        }
    })
}

/// Where a trace's timeline starts, and how long it is (ns, at least 1).
fn timeline(spans: &[Span]) -> (u64, f64) {
    let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    let end =
        spans.iter().map(|s| s.end_time_unix_nano.unwrap_or(s.start_time_unix_nano)).max().unwrap_or(start);
    (start, (end.saturating_sub(start)).max(1) as f64)
}

/// The span tree as nested lists (links, so it is keyboard-navigable), each row with its bar
/// on the trace's timeline.
fn span_tree(trace_id: &str, ordered: &[Row<'_>], chosen: Option<SpanId>, start: u64, total: f64) -> Markup {
    span_list(r#"<ul role="tree" aria-labelledby="spans-heading">"#, trace_id, ordered, chosen, start, total)
}

/// Rows as nested lists in the list `open` starts. A collapsed row says where its children are
/// (`data-children`), which the page's script loads into it when it is opened.
fn span_list(
    open: &str,
    trace_id: &str,
    ordered: &[Row<'_>],
    chosen: Option<SpanId>,
    start: u64,
    total: f64,
) -> Markup {
    // Rebuild nesting from depths: open a group when going deeper, close when coming back.
    let mut out = String::new();
    out.push_str(open);
    let mut depth = 0;
    for (i, Row { depth: d, span, hidden_children, collapsed }) in ordered.iter().enumerate() {
        while depth > *d {
            out.push_str("</li></ul>");
            depth -= 1;
        }
        if i > 0 && *d == depth {
            out.push_str("</li>");
        }
        if *d > depth {
            out.push_str(r#"<ul role="group">"#);
            depth = *d;
        }
        let left = (span.start_time_unix_nano.saturating_sub(start)) as f64 / total * 100.0;
        let width = span.duration_ns().unwrap_or(0) as f64 / total * 100.0;
        let current = chosen == Some(span.span_id);
        let failed = span.status.code == SpanStatusCode::Error;
        let row = html! {
            a href={ (trace_href(trace_id, Some(&span.span_id.to_string()))) "#span-details" }
                aria-current=[current.then_some("true")] {
                span {
                    (type_badge(&span.span_type())) " " (span.name)
                    @if failed { " " span.status-ERROR { "ERROR" } }
                    @if *hidden_children > 0 { " " span.muted.more { "▸ " (hidden_children) " more" } }
                }
                span.muted {
                    (format!("{:.1} ms", span.duration_ns().unwrap_or(0) as f64 / 1e6))
                    span.bar aria-hidden="true" {
                        span class=[failed.then_some("failed")]
                            style=(format!("left:{left:.2}%;width:{width:.2}%")) {}
                    }
                }
            }
        };
        if *collapsed {
            let url = format!("{}/children/{}", trace_href(trace_id, None), span.span_id);
            let url = html! { (url) }.into_string(); // escaped for the attribute
            out.push_str(&format!(r#"<li role="treeitem" aria-expanded="false" data-children="{url}">"#));
        } else {
            out.push_str(r#"<li role="treeitem">"#);
        }
        out.push_str(&row.into_string());
    }
    if !ordered.is_empty() {
        out.push_str("</li>");
    }
    while depth > 0 {
        out.push_str("</ul></li>");
        depth -= 1;
    }
    out.push_str("</ul>");
    PreEscaped(out)
}
