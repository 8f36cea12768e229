//! Watch streams: newline-delimited JSON `WatchEvent`s, streamed as the body is read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, sleep_until};

use crate::error::ApiError;
use crate::handlers::{Target, present};
use crate::kinds::ResourceKind;
use crate::meta;
use crate::render::Render;
use crate::selector::Selectors;
use crate::store::{Change, EventType, Store};

/// Parameters of one watch request.
pub struct WatchRequest {
    pub target: Target,
    pub selectors: Selectors,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
    pub render: Render,
    /// Whether a Table event went out already: only the first carries column definitions,
    /// as the apiserver sends them.
    pub headers_sent: bool,
}

impl WatchRequest {
    fn render(&mut self, obj: &Value) -> Value {
        let doc = self.render.apply(&self.target.kind, present(obj, &self.target.kind), !self.headers_sent);
        self.headers_sent = true;
        doc
    }
}

struct Watcher {
    req: WatchRequest,
    queue: VecDeque<Bytes>,
    changes: broadcast::Receiver<Arc<Change>>,
    closed: watch::Receiver<u64>,
    /// Every change up to here has been considered for this watch.
    position: u64,
    deadline: Instant,
    next_bookmark: Instant,
    done: bool,
}

/// Starts a watch. Must be called with the store locked so that the replayed
/// history and the live subscription meet without gap or overlap.
pub fn start(
    store: &Store,
    closed: watch::Receiver<u64>,
    mut req: WatchRequest,
) -> Result<impl Stream<Item = Bytes> + Send + 'static, ApiError> {
    let changes = store.subscribe();
    let now = store.resource_version();
    let mut position = now;
    let kind = req.target.kind.clone();
    let mut queue = VecDeque::new();
    let rv = req.resource_version.as_deref().filter(|rv| *rv != "0");
    match rv {
        Some(_) if req.send_initial_events => {
            return Err(ApiError::BadRequest(
                "sendInitialEvents is only supported with resourceVersion unset or \"0\"".into(),
            ));
        }
        Some(rv) => {
            let from =
                rv.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("invalid resource version {rv:?}")))?;
            // A version from the future: nothing up to it may be sent.
            position = position.max(from);
            match store.changes_since(from) {
                Some(history) => {
                    for change in history {
                        if let Some(line) = event_line(&mut req, &change) {
                            queue.push_back(line);
                        }
                    }
                }
                // The apiserver answers 200 and sends one ERROR event; kube's watcher
                // relists on it.
                None => {
                    let err =
                        ApiError::Expired(format!("too old resource version: {from} ({})", store.compacted_rv() + 1));
                    queue.push_back(line("ERROR", &err.to_status()));
                    let at = Instant::now();
                    return Ok(stream(Watcher {
                        queue,
                        changes,
                        closed,
                        position: now,
                        deadline: at,
                        next_bookmark: at,
                        done: true,
                        req,
                    }));
                }
            }
        }
        None => {
            for obj in store.list(&req.target.gr(), req.target.namespace.as_deref()) {
                if req.selectors.matches(&obj) {
                    let rendered = req.render(&obj);
                    queue.push_back(line("ADDED", &rendered));
                }
            }
            if req.send_initial_events && req.bookmarks {
                let mut bm = bookmark(&kind, now);
                bm["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                queue.push_back(line("BOOKMARK", &bm));
            }
        }
    }
    let at = Instant::now();
    Ok(stream(Watcher {
        queue,
        changes,
        closed,
        position,
        deadline: at + req.timeout,
        next_bookmark: at + req.bookmark_interval,
        done: false,
        req,
    }))
}

fn stream(w: Watcher) -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold(w, |mut w| async move {
        loop {
            if let Some(line) = w.queue.pop_front() {
                return Some((line, w));
            }
            if w.done {
                return None;
            }
            tokio::select! {
                recv = w.changes.recv() => match recv {
                    Ok(change) => {
                        if change.rv > w.position {
                            w.position = change.rv;
                            if let Some(line) = event_line(&mut w.req, &change) {
                                w.queue.push_back(line);
                            }
                        }
                    }
                    // A watcher this far behind is closed, as the apiserver closes
                    // slow watchers; the client resumes from its last resourceVersion.
                    Err(_) => w.done = true,
                },
                _ = sleep_until(w.deadline) => {
                    tracing::debug!(resource = %w.req.target.kind.plural, "watch timed out");
                    w.done = true;
                    if w.req.bookmarks {
                        w.queue.push_back(line("BOOKMARK", &bookmark(&w.req.target.kind, w.position)));
                    }
                }
                _ = sleep_until(w.next_bookmark), if w.req.bookmarks => {
                    w.next_bookmark = Instant::now() + w.req.bookmark_interval;
                    w.queue.push_back(line("BOOKMARK", &bookmark(&w.req.target.kind, w.position)));
                }
                _ = w.closed.changed() => w.done = true,
            }
        }
    })
}

/// The event a change means for this watch, if any: with selectors, an object
/// entering the selection is ADDED and one leaving it is DELETED.
fn event_line(req: &mut WatchRequest, change: &Change) -> Option<Bytes> {
    let t = &req.target;
    if change.resource != t.gr() {
        return None;
    }
    if let Some(ns) = &t.namespace
        && meta::namespace(&change.object) != Some(ns.as_str())
    {
        return None;
    }
    let now = req.selectors.matches(&change.object);
    let before = change.previous.as_deref().is_some_and(|p| req.selectors.matches(p));
    let event = match (change.event, before, now) {
        (EventType::Added, _, true) => EventType::Added,
        (EventType::Deleted, true, _) => EventType::Deleted,
        (EventType::Modified, true, true) => EventType::Modified,
        (EventType::Modified, false, true) => EventType::Added,
        (EventType::Modified, true, false) => {
            // Like the apiserver's watch cache: the last state that matched, at the
            // resourceVersion of the change.
            let mut last = req.render(change.previous.as_deref()?);
            meta::meta_mut(&mut last).insert("resourceVersion".into(), change.rv.to_string().into());
            return Some(line("DELETED", &last));
        }
        _ => return None,
    };
    Some(line(event.as_str(), &req.render(&change.object)))
}

fn bookmark(kind: &ResourceKind, rv: u64) -> Value {
    json!({
        "kind": kind.kind,
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    })
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut buf = serde_json::to_vec(&json!({"type": event, "object": object})).unwrap_or_else(|_| b"{}".to_vec());
    buf.push(b'\n');
    Bytes::from(buf)
}
