//! A store held in memory: the reference implementation of [`TraceStore`], for tests and for
//! SDK users who want a local store without files.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::RwLock;
use tracelake_model::{Span, Trace, TraceId, TraceInfo, TraceLocation, tag_keys};

use crate::assessments::AssessmentChange;
use crate::derive::{info_from_spans, merge_info, order_spans, refresh_from_spans};
use crate::eval::{TraceView, compare, decode_page_token, matches, page};
use crate::store::{StoreError, StoreResult, TraceStore};
use crate::types::{
    DeleteTraces, Experiment, LifecycleStage, NewRun, Page, Run, TraceQuery, ViewType, WriteBatch,
};
use crate::validate;

/// A [`TraceStore`] in memory.
#[derive(Debug)]
pub struct InMemoryStore {
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    experiments: BTreeMap<i64, Experiment>,
    next_experiment_id: i64,
    traces: HashMap<String, Stored>,
    runs: HashMap<String, Run>,
}

#[derive(Debug)]
struct Stored {
    info: TraceInfo,
    experiment_id: String,
    spans: Vec<Span>,
    /// No info was written for the trace yet: its info follows its spans.
    from_spans_only: bool,
    linked_runs: Vec<String>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn default_experiment() -> Experiment {
    let now = now_ms();
    Experiment {
        experiment_id: "0".into(),
        name: "Default".into(),
        artifact_location: "mlflow-artifacts:/0".into(),
        lifecycle_stage: LifecycleStage::Active,
        tags: BTreeMap::new(),
        creation_time_ms: now,
        last_update_time_ms: now,
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// An empty store with the default experiment `"0"`.
    pub fn new() -> Self {
        let state = State {
            experiments: BTreeMap::from([(0, default_experiment())]),
            next_experiment_id: 1,
            traces: HashMap::new(),
            runs: HashMap::new(),
        };
        Self { state: RwLock::new(state) }
    }
}

impl State {
    fn experiment(&self, id: &str) -> StoreResult<&Experiment> {
        self.experiments
            .get(&validate::experiment_id(id)?)
            .ok_or_else(|| StoreError::NotFound(format!("No Experiment with id={id} exists")))
    }

    fn experiment_mut(&mut self, id: &str) -> StoreResult<&mut Experiment> {
        let key = validate::experiment_id(id)?;
        self.experiments
            .get_mut(&key)
            .ok_or_else(|| StoreError::NotFound(format!("No Experiment with id={id} exists")))
    }

    fn active_experiment(&self, id: &str) -> StoreResult<&Experiment> {
        let e = self.experiment(id)?;
        if e.lifecycle_stage != LifecycleStage::Active {
            return Err(StoreError::InvalidState(format!(
                "experiment {id} is deleted: restore it before writing traces to it"
            )));
        }
        Ok(e)
    }

    fn name_taken(&self, name: &str) -> bool {
        self.experiments.values().any(|e| e.name == name)
    }

    fn trace(&self, id: &str) -> StoreResult<&Stored> {
        self.traces.get(id).ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id} not found.")))
    }

    fn trace_mut(&mut self, id: &str) -> StoreResult<&mut Stored> {
        self.traces.get_mut(id).ok_or_else(|| StoreError::NotFound(format!("Trace with ID {id} not found.")))
    }
}

#[async_trait]
impl TraceStore for InMemoryStore {
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> StoreResult<String> {
        validate::experiment_name(name)?;
        let mut s = self.state.write();
        if s.name_taken(name) {
            return Err(StoreError::AlreadyExists(format!("Experiment '{name}' already exists.")));
        }
        let id = s.next_experiment_id;
        s.next_experiment_id += 1;
        let now = now_ms();
        s.experiments.insert(
            id,
            Experiment {
                experiment_id: id.to_string(),
                name: name.to_owned(),
                artifact_location: artifact_location
                    .map_or_else(|| format!("mlflow-artifacts:/{id}"), str::to_owned),
                lifecycle_stage: LifecycleStage::Active,
                tags: tags.iter().cloned().collect(),
                creation_time_ms: now,
                last_update_time_ms: now,
            },
        );
        Ok(id.to_string())
    }

    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment> {
        self.state.read().experiment(experiment_id).cloned()
    }

    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>> {
        Ok(self.state.read().experiments.values().find(|e| e.name == name).cloned())
    }

    async fn list_experiments(&self, view: ViewType) -> StoreResult<Vec<Experiment>> {
        let s = self.state.read();
        let mut all: Vec<Experiment> = s
            .experiments
            .values()
            .filter(|e| match view {
                ViewType::ActiveOnly => e.lifecycle_stage == LifecycleStage::Active,
                ViewType::DeletedOnly => e.lifecycle_stage == LifecycleStage::Deleted,
                ViewType::All => true,
            })
            .cloned()
            .collect();
        all.sort_by_key(|e| e.experiment_id.parse::<i64>().ok());
        Ok(all)
    }

    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()> {
        validate::experiment_name(new_name)?;
        let mut s = self.state.write();
        s.experiment(experiment_id)?;
        if s.experiments.values().any(|e| e.name == new_name && e.experiment_id != experiment_id) {
            return Err(StoreError::AlreadyExists(format!("Experiment '{new_name}' already exists.")));
        }
        let e = s.experiment_mut(experiment_id)?;
        e.name = new_name.to_owned();
        e.last_update_time_ms = now_ms();
        Ok(())
    }

    async fn delete_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        let mut s = self.state.write();
        let e = s.experiment_mut(experiment_id)?;
        e.lifecycle_stage = LifecycleStage::Deleted;
        e.last_update_time_ms = now_ms();
        Ok(())
    }

    async fn restore_experiment(&self, experiment_id: &str) -> StoreResult<()> {
        let mut s = self.state.write();
        let e = s.experiment_mut(experiment_id)?;
        if e.lifecycle_stage == LifecycleStage::Active {
            return Err(StoreError::InvalidState(format!(
                "experiment {experiment_id} is active: nothing to restore"
            )));
        }
        e.lifecycle_stage = LifecycleStage::Active;
        e.last_update_time_ms = now_ms();
        Ok(())
    }

    async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut s = self.state.write();
        let e = s.experiment_mut(experiment_id)?;
        e.tags.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()> {
        let mut s = self.state.write();
        s.active_experiment(experiment_id)?;
        match s.experiment_mut(experiment_id)?.tags.remove(key) {
            Some(_) => Ok(()),
            None => Err(validate::no_experiment_tag(experiment_id, key)),
        }
    }

    async fn create_run(&self, run: NewRun) -> StoreResult<Run> {
        let mut s = self.state.write();
        let experiment = s.active_experiment(&run.experiment_id)?.clone();
        let run_id = TraceId::random().to_string();
        let created = Run {
            run_name: run.run_name.filter(|n| !n.is_empty()).unwrap_or_else(|| run_id.clone()),
            artifact_uri: format!("{}/{run_id}/artifacts", experiment.artifact_location),
            run_id: run_id.clone(),
            experiment_id: experiment.experiment_id,
            user_id: run.user_id,
            status: "RUNNING".into(),
            start_time_ms: run.start_time_ms,
            end_time_ms: None,
            lifecycle_stage: LifecycleStage::Active,
            tags: run.tags.into_iter().collect(),
        };
        s.runs.insert(run_id, created.clone());
        Ok(created)
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Run> {
        self.state
            .read()
            .runs
            .get(run_id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("Run '{run_id}' not found")))
    }

    async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time_ms: Option<i64>,
        run_name: Option<&str>,
    ) -> StoreResult<Run> {
        validate::run_status(status)?;
        let mut s = self.state.write();
        let run = s
            .runs
            .get_mut(run_id)
            .ok_or_else(|| StoreError::NotFound(format!("Run '{run_id}' not found")))?;
        if let Some(st) = status {
            run.status = st.to_owned();
        }
        if end_time_ms.is_some() {
            run.end_time_ms = end_time_ms;
        }
        if let Some(name) = run_name.filter(|n| !n.is_empty()) {
            run.run_name = name.to_owned();
        }
        Ok(run.clone())
    }

    async fn set_run_tag(&self, run_id: &str, key: &str, value: &str) -> StoreResult<()> {
        let mut s = self.state.write();
        let run = s
            .runs
            .get_mut(run_id)
            .ok_or_else(|| StoreError::NotFound(format!("Run '{run_id}' not found")))?;
        run.tags.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn write(&self, batch: WriteBatch) -> StoreResult<Vec<TraceInfo>> {
        let mut s = self.state.write();
        // Validate everything first: a batch is all or nothing.
        for info in &batch.infos {
            s.active_experiment(validate::trace_info(info)?)?;
        }
        for (experiment_id, _) in &batch.spans {
            s.active_experiment(experiment_id)?;
        }

        let mut touched: Vec<String> = Vec::new();
        let mut by_trace: BTreeMap<String, (String, Vec<Span>)> = BTreeMap::new();
        for (experiment_id, span) in batch.spans {
            let id = span.trace_id.to_mlflow_v3();
            by_trace.entry(id).or_insert_with(|| (experiment_id, Vec::new())).1.push(span);
        }
        for (trace_id, (experiment_id, spans)) in by_trace {
            let stored = s.traces.entry(trace_id.clone()).or_insert_with(|| Stored {
                info: TraceInfo::default(),
                experiment_id: experiment_id.clone(),
                spans: Vec::new(),
                from_spans_only: true,
                linked_runs: Vec::new(),
            });
            for span in spans {
                match stored.spans.iter_mut().find(|s| s.span_id == span.span_id) {
                    Some(existing) => *existing = span,
                    None => stored.spans.push(span),
                }
            }
            order_spans(&mut stored.spans);
            if stored.from_spans_only {
                let mut info = info_from_spans(&trace_id, &stored.experiment_id, &stored.spans);
                // keep what earlier writes set by hand (tags set while only spans were known)
                for (k, v) in std::mem::take(&mut stored.info.tags) {
                    info.tags.entry(k).or_insert(v);
                }
                stored.info = info;
            } else {
                refresh_from_spans(&mut stored.info, &stored.spans, false);
            }
            touched.push(trace_id);
        }
        for incoming in batch.infos {
            let experiment_id = incoming.trace_location.experiment_id().unwrap_or("0").to_owned();
            let artifact_root = s.experiment(&experiment_id)?.artifact_location.clone();
            let trace_id = incoming.trace_id.clone();
            let stored = s.traces.entry(trace_id.clone()).or_insert_with(|| Stored {
                info: TraceInfo {
                    trace_id: trace_id.clone(),
                    trace_location: TraceLocation::experiment(&experiment_id),
                    ..TraceInfo::default()
                },
                experiment_id: experiment_id.clone(),
                spans: Vec::new(),
                from_spans_only: false,
                linked_runs: Vec::new(),
            });
            stored.from_spans_only = false;
            merge_info(&mut stored.info, &incoming);
            stored.info.tags.insert(
                tag_keys::ARTIFACT_LOCATION.into(),
                format!("{artifact_root}/traces/{trace_id}/artifacts"),
            );
            if !stored.spans.is_empty() {
                refresh_from_spans(&mut stored.info, &stored.spans, false);
            }
            touched.push(trace_id);
        }
        touched.dedup();
        Ok(touched.iter().filter_map(|id| s.traces.get(id)).map(|t| t.info.clone()).collect())
    }

    async fn get_trace_info(&self, trace_id: &str) -> StoreResult<TraceInfo> {
        Ok(self.state.read().trace(trace_id)?.info.clone())
    }

    async fn get_traces(&self, trace_ids: &[String]) -> StoreResult<Vec<Trace>> {
        let s = self.state.read();
        Ok(trace_ids
            .iter()
            .filter_map(|id| s.traces.get(id))
            .map(|t| Trace { info: t.info.clone(), spans: t.spans.clone() })
            .collect())
    }

    async fn search_traces(&self, query: &TraceQuery) -> StoreResult<Page<TraceInfo>> {
        validate::max_results(query.max_results)?;
        let offset = decode_page_token(query.page_token.as_deref())?;
        let s = self.state.read();
        for id in &query.experiment_ids {
            s.experiment(id)?;
        }
        let mut hits: Vec<&TraceInfo> = Vec::new();
        for t in s.traces.values() {
            if !query.experiment_ids.contains(&t.experiment_id) {
                continue;
            }
            let view = TraceView { info: &t.info, spans: &t.spans, linked_runs: &t.linked_runs };
            if matches(&query.filter, view)? {
                hits.push(&t.info);
            }
        }
        hits.sort_by(|a, b| compare(a, b, &query.order_by));
        let Page { items, next_page_token } = page(hits, offset, query.max_results);
        Ok(Page { items: items.into_iter().cloned().collect(), next_page_token })
    }

    async fn delete_traces(&self, request: &DeleteTraces) -> StoreResult<usize> {
        let mut s = self.state.write();
        let doomed: Vec<String> = match request {
            DeleteTraces::OlderThan { experiment_id, max_timestamp_ms, max_traces } => {
                s.experiment(experiment_id)?;
                if *max_traces == Some(0) {
                    return Err(StoreError::InvalidArgument("max_traces must be at least 1".into()));
                }
                let mut old: Vec<&Stored> = s
                    .traces
                    .values()
                    .filter(|t| {
                        t.experiment_id == *experiment_id && t.info.request_time_ms <= *max_timestamp_ms
                    })
                    .collect();
                old.sort_by_key(|t| (t.info.request_time_ms, t.info.trace_id.clone()));
                old.iter().take(max_traces.unwrap_or(usize::MAX)).map(|t| t.info.trace_id.clone()).collect()
            }
            DeleteTraces::Ids { experiment_id, trace_ids } => {
                s.experiment(experiment_id)?;
                trace_ids
                    .iter()
                    .filter(|id| s.traces.get(*id).is_some_and(|t| t.experiment_id == *experiment_id))
                    .cloned()
                    .collect()
            }
        };
        for id in &doomed {
            s.traces.remove(id);
        }
        Ok(doomed.len())
    }

    async fn set_trace_tag(&self, trace_id: &str, key: &str, value: &str) -> StoreResult<()> {
        if tag_keys::IMMUTABLE.contains(&key) {
            return Err(StoreError::InvalidArgument(format!(
                "tag {key:?} is set by the server and cannot be changed"
            )));
        }
        let mut s = self.state.write();
        s.trace_mut(trace_id)?.info.tags.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn change_assessment(
        &self,
        trace_id: &str,
        change: AssessmentChange,
    ) -> StoreResult<Option<serde_json::Value>> {
        let mut s = self.state.write();
        crate::assessments::apply(&mut s.trace_mut(trace_id)?.info.assessments, trace_id, change)
    }

    async fn delete_trace_tag(&self, trace_id: &str, key: &str) -> StoreResult<()> {
        let mut s = self.state.write();
        let t = s.trace_mut(trace_id)?;
        t.info.tags.remove(key).map(|_| ()).ok_or_else(|| {
            StoreError::NotFound(format!("No trace tag with key '{key}' for trace with ID '{trace_id}'"))
        })
    }

    async fn link_traces_to_run(&self, trace_ids: &[String], run_id: &str) -> StoreResult<()> {
        validate::traces_per_link(trace_ids.len())?;
        let mut s = self.state.write();
        for id in trace_ids {
            s.trace(id)?;
        }
        for id in trace_ids {
            let t = s.trace_mut(id)?;
            if !t.linked_runs.iter().any(|r| r == run_id) {
                t.linked_runs.push(run_id.to_owned());
            }
        }
        Ok(())
    }
}
