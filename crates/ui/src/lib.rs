//! The web UI `tracelake server` serves at `/`: experiments, their traces (searched with the
//! MLflow filter grammar, sorted, paged), and one trace read in full — span tree and waterfall,
//! the selected span's inputs, outputs, attributes and events, the trace's tags and metadata.
//!
//! Pages are rendered on the server from the [`TraceStore`] (no front-end build, no script
//! needed to read anything), so they work for every store behind it. Every trace and span has
//! a stable link: `/traces/<trace id>` and `/traces/<trace id>?span=<span id>`.

mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use tracelake_model::{SpanId, TraceInfo};
use tracelake_store::{
    LakeAccess, SqlFormat, StoreError, TraceQuery, TraceStore, ViewType, parse_filter, parse_order_by,
};

/// Traces shown per page of a list.
pub const PAGE_SIZE: usize = 50;

#[derive(Clone)]
struct Ui {
    store: Arc<dyn TraceStore>,
    lake: Option<Arc<dyn LakeAccess>>,
}

/// The UI's routes, over `store`.
pub fn router(store: Arc<dyn TraceStore>, lake: Option<Arc<dyn LakeAccess>>) -> Router {
    Router::new()
        .route("/", get(experiments))
        .route("/experiments/{id}", get(traces))
        .route("/experiments/{id}/sessions/{session}", get(session))
        .route("/experiments/{id}/charts", get(charts))
        .route("/traces/{id}", get(trace))
        .route("/traces/{id}/children/{span}", get(children))
        .route("/traces/{id}/tags", post(set_tag))
        .route("/traces/{id}/tags/delete", post(delete_tag))
        .route("/sql", get(sql))
        .with_state(Ui { store, lake })
}

/// A page that could not be shown: the status MLflow's API would answer, and why.
struct PageError(StatusCode, String);

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::InvalidArgument(_) | StoreError::AlreadyExists(_) | StoreError::InvalidState(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError(status, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.0, pages::error(self.0, &self.1)).into_response()
    }
}

async fn experiments(State(ui): State<Ui>) -> Result<Markup, PageError> {
    let experiments = ui.store.list_experiments(ViewType::ActiveOnly).await?;
    Ok(pages::experiments(&experiments))
}

/// The query of a trace list: a filter in MLflow's grammar, one sort key, a page.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    filter: String,
    #[serde(default)]
    order_by: String,
    page_token: Option<String>,
}

async fn traces(
    State(ui): State<Ui>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let experiment = ui.store.get_experiment(&id).await?;
    let filter = match parse_filter(&q.filter) {
        Ok(f) => f,
        Err(e) => {
            let problem = pages::FilterProblem { column: e.column, message: e.to_string() };
            let page = pages::traces(&experiment, &q.filter, &q.order_by, &[], None, Some(&problem));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let order: Vec<&str> = if q.order_by.trim().is_empty() { vec![] } else { vec![q.order_by.trim()] };
    let order_by =
        parse_order_by(&order).map_err(|e| PageError(StatusCode::BAD_REQUEST, format!("order_by: {e}")))?;
    let query = TraceQuery {
        experiment_ids: vec![id],
        filter,
        order_by,
        max_results: PAGE_SIZE,
        page_token: q.page_token.filter(|t| !t.is_empty()),
    };
    let page = ui.store.search_traces(&query).await?;
    let next = page.next_page_token.as_deref();
    Ok(pages::traces(&experiment, &q.filter, &q.order_by, &page.items, next, None).into_response())
}

/// The traces of one session (metadata `mlflow.trace.session`), oldest first.
async fn session(
    State(ui): State<Ui>,
    Path((id, session)): Path<(String, String)>,
) -> Result<Markup, PageError> {
    let experiment = ui.store.get_experiment(&id).await?;
    let quoted = session.replace('\\', "\\\\").replace('\'', "\\'");
    let filter = parse_filter(&format!("metadata.`mlflow.trace.session` = '{quoted}'"))
        .map_err(|e| PageError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let order_by = parse_order_by(&["timestamp_ms ASC"])
        .map_err(|e| PageError(StatusCode::BAD_REQUEST, e.to_string()))?;
    // A session is a conversation: all of it, in order (bounded, for very long ones).
    let query = TraceQuery { experiment_ids: vec![id], filter, order_by, max_results: 500, page_token: None };
    let (traces, more) = search_up_to(&*ui.store, query, MAX_SESSION_TRACES).await?;
    Ok(pages::session(&experiment, &session, &traces, more))
}

/// The traces `query` finds, page after page, until there are none left or `limit` are found;
/// and whether there were more.
async fn search_up_to(
    store: &dyn TraceStore,
    mut query: TraceQuery,
    limit: usize,
) -> Result<(Vec<TraceInfo>, bool), PageError> {
    let mut traces = Vec::new();
    loop {
        let page = store.search_traces(&query).await?;
        traces.extend(page.items);
        query.page_token = page.next_page_token;
        if query.page_token.is_none() || traces.len() >= limit {
            return Ok((traces, query.page_token.is_some()));
        }
    }
}

/// Latency, tokens and errors over time, from the experiment's latest traces.
async fn charts(State(ui): State<Ui>, Path(id): Path<String>) -> Result<Markup, PageError> {
    let experiment = ui.store.get_experiment(&id).await?;
    let query = TraceQuery { experiment_ids: vec![id], max_results: 500, ..TraceQuery::default() };
    let (traces, _) = search_up_to(&*ui.store, query, CHART_TRACES).await?;
    Ok(pages::charts(&experiment, &traces))
}

/// Rows a SQL result shows at most.
pub const MAX_SQL_ROWS: usize = 1_000;

#[derive(Debug, Default, Deserialize)]
struct SqlQuery {
    #[serde(default)]
    q: String,
}

/// The SQL page: a query over the lake's tables and its result as a table; a bad query
/// answers 400 with the engine's message (and position) beside the query.
async fn sql(State(ui): State<Ui>, Query(q): Query<SqlQuery>) -> Result<Response, PageError> {
    let Some(lake) = &ui.lake else {
        return Err(PageError(StatusCode::NOT_FOUND, "this server keeps no lake".into()));
    };
    let schemas = lake.schemas().await?;
    let query = q.q.trim();
    if query.is_empty() {
        return Ok(pages::sql(&schemas, "", None).into_response());
    }
    match lake.sql(query, SqlFormat::Json).await {
        Ok(out) => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_slice(&out.body)
                .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let result = pages::SqlResult { columns: out.columns, rows, limit: MAX_SQL_ROWS };
            Ok(pages::sql(&schemas, query, Some(Ok(&result))).into_response())
        }
        Err(StoreError::InvalidArgument(message)) => {
            Ok((StatusCode::BAD_REQUEST, pages::sql(&schemas, query, Some(Err(&message)))).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// Traces the charts are drawn from at most: the latest ones.
pub const CHART_TRACES: usize = 5_000;

/// Traces shown on a session's page at most.
pub const MAX_SESSION_TRACES: usize = 2_000;

#[derive(Debug, Deserialize)]
struct TraceParams {
    span: Option<String>,
}

async fn trace(
    State(ui): State<Ui>,
    Path(id): Path<String>,
    Query(p): Query<TraceParams>,
) -> Result<Markup, PageError> {
    // The tree and the timeline need only the spans' outline; one span is read whole.
    let Some(outline) = ui.store.get_trace_outline(&id).await? else {
        return Err(PageError(StatusCode::NOT_FOUND, format!("Trace with ID {id} not found.")));
    };
    let page = pages::TracePage::new(&outline, p.span.as_deref().and_then(|s| SpanId::from_hex(s).ok()));
    let chosen = match page.shown_span() {
        Some(span_id) => ui.store.get_span(&id, span_id).await?,
        None => None,
    };
    Ok(page.render(chosen.as_ref()))
}

/// The children of one span, as the group a collapsed row of the trace page opens into.
async fn children(
    State(ui): State<Ui>,
    Path((id, span)): Path<(String, String)>,
) -> Result<Markup, PageError> {
    let not_found = || PageError(StatusCode::NOT_FOUND, format!("Trace {id} has no span {span}."));
    let parent = SpanId::from_hex(&span).map_err(|_| not_found())?;
    let Some(outline) = ui.store.get_trace_outline(&id).await? else { return Err(not_found()) };
    pages::children(&outline, parent).ok_or_else(not_found)
}

#[derive(Debug, Deserialize)]
struct TagForm {
    key: String,
    #[serde(default)]
    value: String,
}

async fn set_tag(
    State(ui): State<Ui>,
    Path(id): Path<String>,
    Form(tag): Form<TagForm>,
) -> Result<Redirect, PageError> {
    let key = tag.key.trim();
    if key.is_empty() {
        return Err(PageError(StatusCode::BAD_REQUEST, "a tag needs a key".into()));
    }
    ui.store.set_trace_tag(&id, key, &tag.value).await?;
    Ok(Redirect::to(&pages::trace_href(&id, None)))
}

async fn delete_tag(
    State(ui): State<Ui>,
    Path(id): Path<String>,
    Form(tag): Form<TagForm>,
) -> Result<Redirect, PageError> {
    ui.store.delete_trace_tag(&id, &tag.key).await?;
    Ok(Redirect::to(&pages::trace_href(&id, None)))
}
