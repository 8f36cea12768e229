//! Object storage: one map per group/resource, a global resourceVersion counter,
//! and a bounded history of changes that watches replay and follow.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::kinds::{GroupResource, Registry};
use crate::meta;

/// The type of a change, as in a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: GroupResource,
    pub event: EventType,
    pub object: Arc<Value>,
    /// The object before a modification (watches with selectors need it to turn a
    /// modification into ADDED or DELETED when the object enters or leaves the
    /// selection).
    pub previous: Option<Arc<Value>>,
}

/// `(namespace or "", name)`
pub type ObjectKey = (String, String);

/// A list page not yet handed out, kept for its `continue` token.
struct Pending {
    rv: u64,
    items: Vec<Value>,
}

const MAX_PENDING_LISTS: usize = 64;

pub struct Store {
    pub registry: Registry,
    rv: u64,
    objects: HashMap<GroupResource, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Highest resourceVersion dropped from `history`: watches from older versions
    /// are answered with 410 Expired.
    compacted_rv: u64,
    changes: broadcast::Sender<Arc<Change>>,
    pending: VecDeque<(String, Pending)>,
    /// Namespaces deleted since the server last handed them to the namespace controller.
    pub namespaces_to_sweep: Vec<String>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(history_limit.max(1024));
        Self {
            registry: Registry::default(),
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted_rv: 0,
            changes,
            pending: VecDeque::new(),
            namespaces_to_sweep: Vec::new(),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    pub fn get(&self, gr: &GroupResource, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(gr).and_then(|m| m.get(key)).cloned()
    }

    /// Objects of a resource, in one namespace or all, ordered by namespace and name.
    pub fn list(&self, gr: &GroupResource, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(map) = self.objects.get(gr) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => map.values().cloned().collect(),
        }
    }

    /// Every object in a namespace, of any resource.
    pub fn namespace_content(&self, namespace: &str) -> Vec<(GroupResource, Arc<Value>)> {
        self.objects.keys().flat_map(|gr| self.list(gr, Some(namespace)).into_iter().map(|o| (gr.clone(), o))).collect()
    }

    /// Objects listing `uid` among their ownerReferences.
    pub fn dependents_of(&self, uid: &str) -> Vec<(GroupResource, Arc<Value>)> {
        let owned_by = |obj: &Value| {
            obj.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid)))
        };
        self.objects
            .iter()
            .flat_map(|(gr, map)| map.values().filter(|o| owned_by(o)).map(move |o| (gr.clone(), o.clone())))
            .collect()
    }

    pub fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().flat_map(|m| m.values()).any(|o| meta::str_at(o, "/metadata/uid") == Some(uid))
    }

    /// Stores an object under a new resourceVersion and publishes the change.
    pub fn put(&mut self, gr: &GroupResource, key: ObjectKey, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        meta::meta_mut(&mut obj).insert("resourceVersion".into(), self.rv.to_string().into());
        let obj = Arc::new(obj);
        let previous = self.objects.entry(gr.clone()).or_default().insert(key, obj.clone());
        let event = if previous.is_some() { EventType::Modified } else { EventType::Added };
        self.publish(gr, event, obj.clone(), previous);
        obj
    }

    /// Removes an object; the DELETED event carries `last` (the final state) with the
    /// deletion's resourceVersion, as etcd-backed watches do.
    pub fn remove(&mut self, gr: &GroupResource, key: &ObjectKey, mut last: Value) -> Arc<Value> {
        self.rv += 1;
        meta::meta_mut(&mut last).insert("resourceVersion".into(), self.rv.to_string().into());
        let last = Arc::new(last);
        let previous = self.objects.get_mut(gr).and_then(|m| m.remove(key));
        self.publish(gr, EventType::Deleted, last.clone(), previous);
        last
    }

    /// Drops all objects of a resource (its CRD went away), publishing DELETED events.
    pub fn drop_resource(&mut self, gr: &GroupResource) {
        let Some(map) = self.objects.remove(gr) else {
            return;
        };
        for (_, obj) in map {
            self.rv += 1;
            let mut last = (*obj).clone();
            meta::meta_mut(&mut last).insert("resourceVersion".into(), self.rv.to_string().into());
            self.publish(gr, EventType::Deleted, Arc::new(last), Some(obj));
        }
    }

    fn publish(&mut self, gr: &GroupResource, event: EventType, object: Arc<Value>, previous: Option<Arc<Value>>) {
        let change = Arc::new(Change { rv: self.rv, resource: gr.clone(), event, object, previous });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// Forgets the whole change history, as an etcd compaction would.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Changes after `rv`, or None when some of them were already compacted away.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted_rv {
            return None;
        }
        Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    /// Keeps the rest of a list for a later `continue` request; returns the token.
    pub fn keep_pending(&mut self, rv: u64, items: Vec<Value>) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.pending.push_back((token.clone(), Pending { rv, items }));
        while self.pending.len() > MAX_PENDING_LISTS {
            self.pending.pop_front();
        }
        token
    }

    /// The rest of a list for a continue token, with the list's resourceVersion.
    pub fn take_pending(&mut self, token: &str) -> Option<(u64, Vec<Value>)> {
        let i = self.pending.iter().position(|(t, _)| t == token)?;
        self.pending.remove(i).map(|(_, p)| (p.rv, p.items))
    }
}
