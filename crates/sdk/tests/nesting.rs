//! Spans nest by themselves across calls, `.await`s, tasks and threads.

mod common;

use std::collections::HashSet;

use common::{capture, exported, only_trace, span};
use tracelake::{Context, FutureExt, trace};

#[trace]
async fn leaf(i: u32) -> u32 {
    tokio::task::yield_now().await;
    i * 2
}

#[trace]
async fn middle(i: u32) -> u32 {
    let a = leaf(i).await;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    let b = leaf(i + 1).await;
    a + b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_inherits_parent_across_await() {
    let exporter = capture();
    assert_eq!(middle(1).await, 6);
    let trace = only_trace(&exporter);
    let root = span(&trace, "middle");
    assert_eq!(trace.spans.len(), 3);
    for s in trace.spans.iter().filter(|s| s.name == "leaf") {
        assert_eq!(s.parent_id, Some(root.span_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_held_across_await_inside_a_traced_future_stays_current() {
    let exporter = capture();
    async {
        let outer = tracelake::start_span("outer");
        tokio::task::yield_now().await;
        {
            let _inner = tracelake::start_span("inner");
            tokio::task::yield_now().await;
            leaf(1).await;
        }
        assert_eq!(tracelake::current_span().unwrap().span_id(), outer.span_id());
    }
    .in_current_context()
    .await;
    let trace = only_trace(&exporter);
    let (outer, inner, leaf) = (span(&trace, "outer"), span(&trace, "inner"), span(&trace, "leaf"));
    assert_eq!(inner.parent_id, Some(outer.span_id));
    assert_eq!(leaf.parent_id, Some(inner.span_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_nest_under_the_spawning_span_when_given_its_context() {
    let exporter = capture();
    {
        let root = tracelake::start_span("root");
        let handles: Vec<_> = (0..4).map(|i| tokio::spawn(leaf(i).in_current_context())).collect();
        for h in handles {
            h.await.unwrap();
        }
        drop(root);
    }
    let trace = only_trace(&exporter);
    let root = span(&trace, "root");
    let leaves: Vec<_> = trace.spans.iter().filter(|s| s.name == "leaf").collect();
    assert_eq!(leaves.len(), 4);
    assert!(leaves.iter().all(|s| s.parent_id == Some(root.span_id)));
}

#[test]
fn threads_nest_under_the_spawning_span_when_given_its_context() {
    let exporter = capture();
    {
        let _root = tracelake::start_span("root");
        let job = Context::current().wrap(|| {
            let _child = tracelake::start_span("on-thread");
        });
        std::thread::spawn(job).join().unwrap();
        // without a captured context a thread starts its own trace
        std::thread::spawn(|| drop(tracelake::start_span("detached"))).join().unwrap();
    }
    let traces = exported(&exporter);
    assert_eq!(traces.len(), 2);
    let main = traces.iter().find(|t| t.spans.len() == 2).expect("the root trace");
    assert_eq!(span(main, "on-thread").parent_id, Some(span(main, "root").span_id));
}

#[test]
fn a_root_that_ends_before_a_child_on_another_thread_waits_for_it() {
    let exporter = capture();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let handle = {
        let _root = tracelake::start_span("root");
        let job = Context::current().wrap(move || {
            let _child = tracelake::start_span("slow-child");
            started_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        let handle = std::thread::spawn(job);
        started_rx.recv().unwrap();
        handle
    };
    tracelake::flush().unwrap();
    assert!(exporter.traces().is_empty(), "trace must wait for its open child");
    tx.send(()).unwrap();
    handle.join().unwrap();
    let trace = only_trace(&exporter);
    assert_eq!(trace.spans.len(), 2);
}

#[trace]
async fn tenant_request(tenant: u32) -> u32 {
    let mut total = 0;
    for step in 0..9 {
        total += tenant_step(tenant, step).await;
    }
    total
}

#[trace]
async fn tenant_step(tenant: u32, step: u32) -> u32 {
    if step.is_multiple_of(3) {
        tokio::task::yield_now().await;
    }
    tenant + step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_tasks_never_mix_spans() {
    let exporter = capture();
    let tasks: Vec<_> = (0..1000).map(|t| tokio::spawn(tenant_request(t))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    let traces = exported(&exporter);
    assert_eq!(traces.len(), 1000);
    let mut tenants = HashSet::new();
    for trace in &traces {
        assert_eq!(trace.spans.len(), 10);
        let root = trace.root_span().unwrap();
        let tenant = root.inputs().unwrap()["tenant"].as_u64().unwrap();
        assert!(tenants.insert(tenant), "tenant {tenant} has two traces");
        for s in trace.spans.iter().filter(|s| !s.is_root()) {
            assert_eq!(s.parent_id, Some(root.span_id));
            assert_eq!(s.trace_id, root.trace_id);
            assert_eq!(
                s.inputs().unwrap()["tenant"].as_u64(),
                Some(tenant),
                "span crossed into another trace"
            );
        }
    }
    assert_eq!(tenants.len(), 1000);
}

#[test]
fn guards_dropped_out_of_order_never_lose_later_spans() {
    let exporter = capture();
    let a = tracelake::start_span("a");
    let b = tracelake::start_span("b");
    drop(a);
    drop(b); // leaves "a" current on this thread, ended
    drop(tracelake::start_span("later"));
    let traces = exported(&exporter);
    assert_eq!(traces.len(), 2, "the later span starts its own trace");
    assert_eq!(tracelake::export_stats().late_spans, 0);
    assert!(traces.iter().any(|t| t.spans.len() == 1 && t.spans[0].name == "later"));
}

#[test]
fn a_guard_dropped_on_another_thread_does_not_swallow_later_spans() {
    let exporter = capture();
    let moved = tracelake::start_span("moved");
    std::thread::spawn(move || drop(moved)).join().unwrap();
    drop(tracelake::start_span("after-move"));
    let traces = exported(&exporter);
    assert_eq!(traces.len(), 2);
    assert_eq!(tracelake::export_stats().late_spans, 0);
}

#[test]
fn context_guards_dropped_out_of_order_leave_the_newer_context() {
    let _exporter = capture();
    let root = tracelake::start_span("root");
    let outer = Context::empty().attach();
    let inner = Context::with_span(root.span()).attach();
    drop(outer); // out of order: must not clobber what `inner` attached
    assert_eq!(tracelake::current_span().unwrap().span_id(), root.span_id());
    drop(inner);
}
