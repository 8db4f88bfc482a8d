//! [`LakeStore`]: a [`TraceStore`] whose experiments and runs live in a tracking store and whose
//! traces live in the tracking store or in lake schemas.
//!
//! A trace goes to the lake when it is written to a lake schema directly (location
//! `catalog.schema`: ids `trace:/catalog.schema/<hex>`), or to an experiment linked to a schema
//! (the experiment tag [`TRACE_LOCATION_TAG`]; ids stay `tr-<hex>`). Searching or deleting the
//! traces of a linked experiment covers its schema and the tracking store, which keeps what
//! was written before the link (or after an unlink).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::RwLock;
use tracelake_model::{Span, SpanId, SpanOrigin, Trace, TraceId, TraceInfo, tag_keys};
use tracelake_store::derive::{batch_locations, is_lake_schema, location_key, trace_outline};
use tracelake_store::eval::{TraceView, compare, decode_page_token, matches, page};
use tracelake_store::lake::{INFO_TABLE, SPANS_TABLE, TRACE_LOCATION_TAG, parse_schema_key};
use tracelake_store::{
    AssessmentChange, Attribute, Clause, DeleteTraces, Experiment, ExperimentQuery, Filter, LakeAccess,
    LifecycleStage, Literal, NewRun, Op, Page, Run, SqlFormat, SqlOutput, StoreError, StoreResult, Target,
    TraceQuery, TraceStore, ViewType, WriteBatch, validate, write_merged,
};

use crate::lake::Lake;
use crate::schema::LakeSchema;
use crate::table::FRESHNESS;

/// What one lake schema gets of a write: the schema, its part of the batch, and its spans'
/// origins.
type SchemaPart = (Arc<LakeSchema>, WriteBatch, Vec<Arc<SpanOrigin>>);

/// Page size used to read every hit of the tracking store when a search spans both stores.
const MERGE_PAGE: usize = 500;

/// Tracking store plus lake.
pub struct LakeStore {
    control: Arc<dyn TraceStore>,
    lake: Arc<Lake>,
    /// Experiments' links as last read (`None`: not linked), and when. A link older than
    /// [`FRESHNESS`] is read again: another server on the same tracking store may have
    /// changed it.
    links: RwLock<HashMap<String, (Option<String>, Instant)>>,
    /// When set, experiments without a link keep their traces in `<catalog>.experiment_<id>`.
    default_catalog: Option<String>,
}

impl std::fmt::Debug for LakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeStore").field("lake", &self.lake).finish_non_exhaustive()
    }
}

/// Which store holds a trace.
enum Owner {
    Control,
    Lake(Arc<LakeSchema>),
}

/// A read of one trace: the tracking store answers it, or the lake did (the trace, if any).
enum OneTrace {
    Control,
    Lake(Option<Box<Trace>>),
}

impl LakeStore {
    pub fn new(control: Arc<dyn TraceStore>, lake: Arc<Lake>) -> Self {
        Self { control, lake, links: RwLock::new(HashMap::new()), default_catalog: None }
    }

    /// Keeps the traces of every experiment not linked elsewhere in the lake, in schema
    /// `<catalog>.experiment_<id>`.
    pub fn with_default_catalog(mut self, catalog: &str) -> StoreResult<Self> {
        tracelake_store::lake::validate_name("catalog", catalog)?;
        self.default_catalog = Some(catalog.to_owned());
        Ok(self)
    }

    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// The lake schema experiment `experiment_id` sends its traces to, if any.
    async fn link_of(&self, experiment_id: &str) -> StoreResult<Option<String>> {
        if let Some((link, read)) = self.links.read().get(experiment_id)
            && read.elapsed() < FRESHNESS
        {
            return Ok(link.clone());
        }
        let experiment = self.control.get_experiment(experiment_id).await?;
        let link = experiment
            .tags
            .get(TRACE_LOCATION_TAG)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| self.default_catalog.as_ref().map(|c| format!("{c}.experiment_{experiment_id}")));
        self.links.write().insert(experiment_id.to_owned(), (link.clone(), Instant::now()));
        Ok(link)
    }

    /// The schema a location key writes to (`None`: the tracking store).
    async fn schema_for_location(&self, location: &str) -> StoreResult<Option<Arc<LakeSchema>>> {
        let key =
            if is_lake_schema(location) { Some(location.to_owned()) } else { self.link_of(location).await? };
        match key {
            Some(key) => Ok(Some(self.lake.schema(&key).await?)),
            None => Ok(None),
        }
    }

    /// Which store holds trace `trace_id`.
    async fn owner(&self, trace_id: &str) -> StoreResult<Option<Owner>> {
        let id = TraceId::from_mlflow(trace_id).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        if let Some(rest) = trace_id.strip_prefix(tracelake_model::TRACE_ID_V4_PREFIX) {
            let key = rest.rsplit_once('/').map_or(rest, |(k, _)| k);
            parse_schema_key(key)?;
            return Ok(match self.lake.find_schema(key).await? {
                Some(s) if s.find(id.to_u128()).await? => Some(Owner::Lake(s)),
                _ => None,
            });
        }
        for schema in self.lake.schemas().await {
            if schema.holds(id.to_u128()) {
                // a trace the tracking store holds stays its own (written there before its
                // experiment was linked)
                return match self.control.get_trace_info(trace_id).await {
                    Ok(_) => Ok(Some(Owner::Control)),
                    Err(StoreError::NotFound(_)) => Ok(Some(Owner::Lake(schema))),
                    Err(e) => Err(e),
                };
            }
        }
        // the tracking store answers for the rest, unknown ids included
        Ok(Some(Owner::Control))
    }

    /// Where a read of one trace goes: to the tracking store, or to the trace read whole from
    /// its lake schema (`None` when there is no such trace).
    async fn one_trace(&self, trace_id: &str) -> StoreResult<OneTrace> {
        match self.owner(trace_id).await {
            Ok(Some(Owner::Control)) => Ok(OneTrace::Control),
            Ok(Some(Owner::Lake(schema))) => {
                let id =
                    TraceId::from_mlflow(trace_id).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
                Ok(OneTrace::Lake(schema.load_traces(&[id.to_u128()]).await?.pop().map(Box::new)))
            }
            Ok(None) | Err(StoreError::InvalidArgument(_)) => Ok(OneTrace::Lake(None)),
            Err(e) => Err(e),
        }
    }

    fn not_found(trace_id: &str) -> StoreError {
        StoreError::NotFound(format!("Trace with ID {trace_id} not found."))
    }

    async fn lake_owner(&self, trace_id: &str) -> StoreResult<Option<(Arc<LakeSchema>, u128)>> {
        match self.owner(trace_id).await? {
            Some(Owner::Lake(s)) => {
                let id =
                    TraceId::from_mlflow(trace_id).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
                Ok(Some((s, id.to_u128())))
            }
            Some(Owner::Control) => Ok(None),
            None => Err(Self::not_found(trace_id)),
        }
    }

    async fn write_routed(&self, mut batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
        let origins = std::mem::take(&mut batch.origins);
        // every location is checked before anything is written
        let mut experiments: BTreeMap<String, Experiment> = BTreeMap::new();
        let mut route: HashMap<String, Option<Arc<LakeSchema>>> = HashMap::new();
        for location in batch_locations(&batch)? {
            let schema = self.schema_for_location(&location).await?;
            // the tracking store checks its own experiments; those routed to the lake are
            // checked here (and give their artifact locations to the infos)
            if schema.is_some() && !is_lake_schema(&location) {
                let experiment = self.control.get_experiment(&location).await?;
                if experiment.lifecycle_stage != LifecycleStage::Active {
                    return Err(StoreError::InvalidState(format!(
                        "experiment {location} is deleted: traces can be written to active experiments only"
                    )));
                }
                experiments.insert(location.clone(), experiment);
            }
            route.insert(location, schema);
        }
        if route.values().all(Option::is_none) {
            batch.origins = origins;
            return self.control.write(batch).await;
        }
        let mut control = WriteBatch::default();
        let mut lake: BTreeMap<String, SchemaPart> = BTreeMap::new();
        let default_origin = Arc::new(SpanOrigin::default());
        for info in batch.infos {
            let location = location_key(&info.trace_location);
            match &route[&location] {
                None => control.infos.push(info),
                Some(s) => lake
                    .entry(s.key().to_owned())
                    .or_insert_with(|| (s.clone(), WriteBatch::default(), Vec::new()))
                    .1
                    .infos
                    .push(info),
            }
        }
        for (i, (location, span)) in batch.spans.into_iter().enumerate() {
            match &route[&location] {
                None => control.spans.push((location, span)),
                Some(s) => {
                    let entry = lake
                        .entry(s.key().to_owned())
                        .or_insert_with(|| (s.clone(), WriteBatch::default(), Vec::new()));
                    entry.1.spans.push((location, span));
                    entry.2.push(origins.get(i).cloned().unwrap_or_else(|| default_origin.clone()));
                }
            }
        }
        let mut out = Vec::new();
        if !control.is_empty() {
            out.extend(self.control.write(control).await?);
        }
        for (_, (schema, part, origins)) in lake {
            out.extend(schema.write(part, &origins, &experiments).await?);
        }
        Ok(out)
    }

    /// Every hit of `query` in the tracking store's experiments `experiment_ids`.
    async fn control_hits(
        &self,
        query: &TraceQuery,
        experiment_ids: Vec<String>,
    ) -> StoreResult<Vec<TraceInfo>> {
        let mut hits = Vec::new();
        let mut q = TraceQuery { experiment_ids, max_results: MERGE_PAGE, page_token: None, ..query.clone() };
        loop {
            let page = self.control.search_traces(&q).await?;
            hits.extend(page.items);
            match page.next_page_token {
                Some(t) => q.page_token = Some(t),
                None => return Ok(hits),
            }
        }
    }

    /// Every trace of `schema` matching `query`'s filter that belongs to one of `experiments`
    /// (or to no experiment: written to the schema directly).
    async fn lake_hits(
        &self,
        schema: &LakeSchema,
        query: &TraceQuery,
        experiments: &[String],
    ) -> StoreResult<Vec<TraceInfo>> {
        let infos: Vec<_> =
            schema.all_infos().await?.into_iter().filter(|s| belongs(&s.info, experiments)).collect();
        let needs_spans = query.filter.clauses.iter().any(|c| {
            matches!(c.target, Target::Span(_) | Target::Attribute(tracelake_store::Attribute::Text))
        });
        let spans = if needs_spans {
            let ids: Vec<u128> = infos
                .iter()
                .filter_map(|i| TraceId::from_mlflow(&i.info.trace_id).ok())
                .map(TraceId::to_u128)
                .collect();
            schema.load_spans(&ids).await?
        } else {
            HashMap::new()
        };
        let mut hits = Vec::new();
        for stored in infos {
            let id = TraceId::from_mlflow(&stored.info.trace_id).map(TraceId::to_u128).unwrap_or_default();
            let trace_spans = spans.get(&id).map_or(&[][..], Vec::as_slice);
            let view = TraceView { info: &stored.info, spans: trace_spans, linked_runs: &stored.linked_runs };
            if matches(&query.filter, view)? {
                hits.push(stored.info);
            }
        }
        Ok(hits)
    }
}

/// Whether a lake trace shows in a search of `experiments`: it was written to one of them, or
/// to the schema directly (a schema's traces belong to every experiment linked to it).
fn belongs(info: &TraceInfo, experiments: &[String]) -> bool {
    info.trace_location.experiment_id().is_none_or(|id| experiments.iter().any(|e| e == id))
}

#[async_trait]
impl TraceStore for LakeStore {
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> StoreResult<String> {
        if let Some((_, key)) = tags.iter().find(|(k, _)| k == TRACE_LOCATION_TAG) {
            parse_schema_key(key)?;
        }
        self.control.create_experiment(name, artifact_location, tags).await
    }

    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment> {
        self.control.get_experiment(experiment_id).await
    }

    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>> {
        self.control.get_experiment_by_name(name).await
    }

    async fn list_experiments(&self, view: ViewType) -> StoreResult<Vec<Experiment>> {
        self.control.list_experiments(view).await
    }

    async fn search_experiments(&self, query: &ExperimentQuery) -> StoreResult<Page<Experiment>> {
        self.control.search_experiments(query).await
    }

    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()> {
        self.control.rename_experiment(experiment_id, new_name).await
    }

    async fn delete_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        self.control.delete_experiment(experiment_id).await
    }

    async fn restore_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        self.control.restore_experiment(experiment_id).await
    }

    async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> StoreResult<()> {
        if key == TRACE_LOCATION_TAG && !value.is_empty() {
            parse_schema_key(value)?;
        }
        self.control.set_experiment_tag(experiment_id, key, value).await?;
        if key == TRACE_LOCATION_TAG {
            self.links.write().remove(experiment_id);
        }
        Ok(())
    }

    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()> {
        self.control.delete_experiment_tag(experiment_id, key).await?;
        if key == TRACE_LOCATION_TAG {
            self.links.write().remove(experiment_id);
        }
        Ok(())
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<Run> {
        self.control.create_run(run).await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Run> {
        self.control.get_run(run_id).await
    }

    async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time_ms: Option<i64>,
        run_name: Option<&str>,
    ) -> StoreResult<Run> {
        self.control.update_run(run_id, status, end_time_ms, run_name).await
    }

    async fn set_run_tag(&self, run_id: &str, key: &str, value: &str) -> StoreResult<()> {
        self.control.set_run_tag(run_id, key, value).await
    }

    async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
        self.write_routed(batch).await
    }

    /// The tracking store prepares a batch that it alone will write: every location an
    /// experiment last seen unlinked. (A stale answer costs only work: a store reads only what
    /// it prepared, and the lake ignores it.)
    fn prepare(&self, batch: &mut WriteBatch) {
        let links = self.links.read();
        let unlinked =
            |location: &str| !is_lake_schema(location) && matches!(links.get(location), Some((None, _)));
        if batch_locations(batch).is_ok_and(|locations| locations.iter().all(|l| unlinked(l))) {
            drop(links);
            self.control.prepare(batch);
        }
    }

    /// A group that goes to the tracking store only is written there as one group (one
    /// transaction); one that reaches the lake is written merged.
    async fn write_group(&self, batches: Vec<WriteBatch>) -> Vec<StoreResult<Vec<TraceInfo>>> {
        for batch in &batches {
            let Ok(locations) = batch_locations(batch) else { return write_merged(self, batches).await };
            for location in locations {
                if !matches!(self.schema_for_location(&location).await, Ok(None)) {
                    return write_merged(self, batches).await;
                }
            }
        }
        self.control.write_group(batches).await
    }

    async fn get_trace_info(&self, trace_id: &str) -> StoreResult<TraceInfo> {
        match self.lake_owner(trace_id).await? {
            None => self.control.get_trace_info(trace_id).await,
            Some((schema, id)) => schema
                .load_infos(&[id])
                .await?
                .remove(&id)
                .map(|s| s.info)
                .ok_or_else(|| Self::not_found(trace_id)),
        }
    }

    async fn get_trace_outline(&self, trace_id: &str) -> StoreResult<Option<Trace>> {
        match self.one_trace(trace_id).await? {
            OneTrace::Control => self.control.get_trace_outline(trace_id).await,
            OneTrace::Lake(trace) => Ok(trace.map(|t| trace_outline(*t))),
        }
    }

    async fn get_span(&self, trace_id: &str, span_id: SpanId) -> StoreResult<Option<Span>> {
        match self.one_trace(trace_id).await? {
            OneTrace::Control => self.control.get_span(trace_id, span_id).await,
            OneTrace::Lake(trace) => {
                Ok(trace.and_then(|t| t.spans.into_iter().find(|s| s.span_id == span_id)))
            }
        }
    }

    async fn get_traces(&self, trace_ids: &[String]) -> StoreResult<Vec<Trace>> {
        let mut found: HashMap<String, Trace> = HashMap::new();
        let mut control_ids = Vec::new();
        let mut by_schema: BTreeMap<String, (Arc<LakeSchema>, Vec<u128>)> = BTreeMap::new();
        for trace_id in trace_ids {
            match self.owner(trace_id).await {
                Ok(Some(Owner::Control)) => control_ids.push(trace_id.clone()),
                Ok(Some(Owner::Lake(s))) => {
                    let id = TraceId::from_mlflow(trace_id)
                        .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
                    by_schema
                        .entry(s.key().to_owned())
                        .or_insert_with(|| (s.clone(), Vec::new()))
                        .1
                        .push(id.to_u128());
                }
                Ok(None) | Err(StoreError::InvalidArgument(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for trace in self.control.get_traces(&control_ids).await? {
            found.insert(trace.info.trace_id.clone(), trace);
        }
        for (_, (schema, ids)) in by_schema {
            for trace in schema.load_traces(&ids).await? {
                found.insert(trace.info.trace_id.clone(), trace);
            }
        }
        Ok(trace_ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    async fn search_traces(&self, query: &TraceQuery) -> StoreResult<Page<TraceInfo>> {
        validate::max_results(query.max_results)?;
        let mut schemas: BTreeMap<String, (Arc<LakeSchema>, Vec<String>)> = BTreeMap::new();
        for experiment_id in &query.experiment_ids {
            if let Some(key) = self.link_of(experiment_id).await? {
                let schema = self.lake.schema(&key).await?;
                schemas.entry(key).or_insert((schema, Vec::new())).1.push(experiment_id.clone());
            }
        }
        if schemas.is_empty() {
            return self.control.search_traces(query).await;
        }
        let offset = decode_page_token(query.page_token.as_deref())?;
        // the tracking store keeps a linked experiment's traces from before the link
        let mut hits = self.control_hits(query, query.experiment_ids.clone()).await?;
        for (schema, experiments) in schemas.values() {
            hits.extend(self.lake_hits(schema, query, experiments).await?);
        }
        hits.sort_by(|a, b| compare(a, b, &query.order_by));
        Ok(page(hits, offset, query.max_results))
    }

    async fn delete_traces(&self, request: &DeleteTraces) -> StoreResult<usize> {
        let experiment_id = match request {
            DeleteTraces::OlderThan { experiment_id, .. } | DeleteTraces::Ids { experiment_id, .. } => {
                experiment_id
            }
        };
        let Some(key) = self.link_of(experiment_id).await? else {
            return self.control.delete_traces(request).await;
        };
        // the experiment's traces are in its schema and, from before the link, in the
        // tracking store: the oldest of both go first
        let schema = self.lake.schema(&key).await?;
        let (in_lake, in_control): (Vec<u128>, Vec<String>) = match request {
            DeleteTraces::OlderThan { max_timestamp_ms, max_traces, .. } => {
                if *max_traces == Some(0) {
                    return Err(StoreError::InvalidArgument("max_traces must be at least 1".into()));
                }
                let mut old: Vec<(TraceInfo, bool)> = schema
                    .all_infos()
                    .await?
                    .into_iter()
                    .map(|s| s.info)
                    .filter(|i| {
                        i.request_time_ms <= *max_timestamp_ms
                            && belongs(i, std::slice::from_ref(experiment_id))
                    })
                    .map(|i| (i, true))
                    .collect();
                let older = TraceQuery {
                    experiment_ids: vec![experiment_id.clone()],
                    filter: Filter {
                        clauses: vec![Clause {
                            target: Target::Attribute(Attribute::TimestampMs),
                            op: Op::Le,
                            value: Literal::Int(*max_timestamp_ms),
                            column: 1,
                        }],
                    },
                    ..TraceQuery::default()
                };
                old.extend(
                    self.control_hits(&older, vec![experiment_id.clone()])
                        .await?
                        .into_iter()
                        .map(|i| (i, false)),
                );
                old.sort_by(|(a, _), (b, _)| {
                    (a.request_time_ms, &a.trace_id).cmp(&(b.request_time_ms, &b.trace_id))
                });
                let doomed = old.into_iter().take(max_traces.unwrap_or(usize::MAX));
                let (lake, control): (Vec<_>, Vec<_>) = doomed.partition(|(_, in_lake)| *in_lake);
                (
                    lake.iter()
                        .filter_map(|(i, _)| TraceId::from_mlflow(&i.trace_id).ok())
                        .map(TraceId::to_u128)
                        .collect(),
                    control.into_iter().map(|(i, _)| i.trace_id).collect(),
                )
            }
            DeleteTraces::Ids { trace_ids, .. } => {
                let (mut lake, mut control) = (Vec::new(), Vec::new());
                for t in trace_ids {
                    match TraceId::from_mlflow(t) {
                        Ok(id) if schema.holds(id.to_u128()) => lake.push(id.to_u128()),
                        _ => control.push(t.clone()),
                    }
                }
                (lake, control)
            }
        };
        schema.delete(&in_lake).await?;
        let mut deleted = in_lake.len();
        if !in_control.is_empty() {
            let ids = DeleteTraces::Ids { experiment_id: experiment_id.clone(), trace_ids: in_control };
            deleted += self.control.delete_traces(&ids).await?;
        }
        Ok(deleted)
    }

    async fn set_trace_tag(&self, trace_id: &str, key: &str, value: &str) -> StoreResult<()> {
        if tag_keys::IMMUTABLE.contains(&key) {
            return Err(StoreError::InvalidArgument(format!(
                "tag {key:?} is set by the server and cannot be changed"
            )));
        }
        match self.lake_owner(trace_id).await? {
            None => self.control.set_trace_tag(trace_id, key, value).await,
            Some((schema, id)) => {
                schema
                    .update_info(id, |s| {
                        s.info.tags.insert(key.to_owned(), value.to_owned());
                        Ok(())
                    })
                    .await
            }
        }
    }

    async fn change_assessment(
        &self,
        trace_id: &str,
        change: AssessmentChange,
    ) -> StoreResult<Option<serde_json::Value>> {
        match self.lake_owner(trace_id).await? {
            None => self.control.change_assessment(trace_id, change).await,
            Some((schema, id)) => {
                let mut out = None;
                schema
                    .update_info(id, |s| {
                        out = tracelake_store::assessments::apply(&mut s.info.assessments, trace_id, change)?;
                        Ok(())
                    })
                    .await?;
                Ok(out)
            }
        }
    }

    async fn delete_trace_tag(&self, trace_id: &str, key: &str) -> StoreResult<()> {
        match self.lake_owner(trace_id).await? {
            None => self.control.delete_trace_tag(trace_id, key).await,
            Some((schema, id)) => {
                schema
                    .update_info(id, |s| match s.info.tags.remove(key) {
                        Some(_) => Ok(()),
                        None => Err(StoreError::NotFound(format!(
                            "No trace tag with key '{key}' for trace with ID '{trace_id}'"
                        ))),
                    })
                    .await
            }
        }
    }

    async fn link_traces_to_run(&self, trace_ids: &[String], run_id: &str) -> StoreResult<()> {
        validate::traces_per_link(trace_ids.len())?;
        let mut control_ids = Vec::new();
        for trace_id in trace_ids {
            match self.lake_owner(trace_id).await? {
                None => control_ids.push(trace_id.clone()),
                Some((schema, id)) => {
                    schema
                        .update_info(id, |s| {
                            if !s.linked_runs.iter().any(|r| r == run_id) {
                                s.linked_runs.push(run_id.to_owned());
                            }
                            Ok(())
                        })
                        .await?;
                }
            }
        }
        if control_ids.is_empty() {
            Ok(())
        } else {
            self.control.link_traces_to_run(&control_ids, run_id).await
        }
    }
}

#[async_trait]
impl LakeAccess for LakeStore {
    async fn sql(&self, query: &str, format: SqlFormat) -> StoreResult<SqlOutput> {
        self.lake.sql(query, format).await
    }

    async fn schemas(&self) -> StoreResult<Vec<String>> {
        Ok(self.lake.all_schemas().await?.iter().map(|s| s.key().to_owned()).collect())
    }

    async fn append_rows(&self, key: &str, table: &str, rows: &[serde_json::Value]) -> StoreResult<usize> {
        if table == SPANS_TABLE || table == INFO_TABLE {
            return Err(StoreError::InvalidArgument(format!("{table} is written through traces, not rows")));
        }
        let schema = self.lake.schema(key).await?;
        let target = schema
            .table(table)
            .ok_or_else(|| StoreError::InvalidArgument(format!("no lake table {table}")))?;
        let batch = crate::columns::rows_to_batch(table, rows)?;
        target.append(vec![batch]).await?;
        Ok(rows.len())
    }

    async fn create_schema(&self, key: &str) -> StoreResult<()> {
        self.lake.schema(key).await.map(drop)
    }

    async fn link_experiment(&self, experiment_id: &str, catalog: &str, schema: &str) -> StoreResult<()> {
        let key = format!("{catalog}.{schema}");
        parse_schema_key(&key)?;
        self.control.get_experiment(experiment_id).await?;
        self.lake.schema(&key).await?;
        self.set_experiment_tag(experiment_id, TRACE_LOCATION_TAG, &key).await
    }

    async fn unlink_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        self.set_experiment_tag(experiment_id, TRACE_LOCATION_TAG, "").await
    }

    async fn experiment_link(&self, experiment_id: &str) -> StoreResult<Option<String>> {
        self.link_of(experiment_id).await
    }
}
