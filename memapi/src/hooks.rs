//! Test hooks: request counting and injected failures.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::error::ApiError;

/// The Kubernetes verb of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        };
        f.write_str(s)
    }
}

/// One request on a resource, as recorded for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub verb: Verb,
    pub group: String,
    /// Plural resource name, e.g. `cells`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// A failure to inject into matching requests, e.g.
/// `Fault::new(500).verb(Verb::Patch).resource("cells").times(2)`.
#[derive(Debug, Clone)]
pub struct Fault {
    verb: Option<Verb>,
    resource: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    times: usize,
    code: u16,
    reason: String,
    message: String,
}

impl Fault {
    /// Fails the next matching request (once, unless [`Fault::times`] says more)
    /// with this HTTP status code and the conventional `Status.reason` for it.
    pub fn new(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self {
            verb: None,
            resource: None,
            name: None,
            subresource: None,
            times: 1,
            code,
            reason: reason.into(),
            message: format!("injected failure ({code})"),
        }
    }

    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only requests on this plural resource name (e.g. `secrets`).
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.into());
        self
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = reason.into();
        self
    }

    pub fn message(mut self, message: &str) -> Self {
        self.message = message.into();
        self
    }

    fn matches(&self, r: &RequestRecord) -> bool {
        self.verb.is_none_or(|v| v == r.verb)
            && self.resource.as_ref().is_none_or(|p| *p == r.resource)
            && self.name.as_ref().is_none_or(|n| Some(n) == r.name.as_ref())
            && self.subresource.as_ref().is_none_or(|s| Some(s) == r.subresource.as_ref())
    }
}

const LOG_LIMIT: usize = 10_000;

#[derive(Debug, Default)]
pub struct Hooks {
    faults: Vec<Fault>,
    counts: HashMap<(Verb, String), u64>,
    log: VecDeque<RequestRecord>,
}

impl Hooks {
    /// Records a request and returns the injected failure it meets, if any.
    pub fn on_request(&mut self, r: &RequestRecord) -> Option<ApiError> {
        *self.counts.entry((r.verb, r.resource.clone())).or_default() += 1;
        self.log.push_back(r.clone());
        if self.log.len() > LOG_LIMIT {
            self.log.pop_front();
        }
        let i = self.faults.iter().position(|f| f.times > 0 && f.matches(r))?;
        let fault = &mut self.faults[i];
        fault.times -= 1;
        let err = ApiError::Custom { code: fault.code, reason: fault.reason.clone(), message: fault.message.clone() };
        if fault.times == 0 {
            self.faults.remove(i);
        }
        Some(err)
    }

    pub fn inject(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push(fault);
        }
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub fn count(&self, verb: Option<Verb>, resource: Option<&str>) -> u64 {
        self.counts
            .iter()
            .filter(|((v, r), _)| verb.is_none_or(|x| x == *v) && resource.is_none_or(|x| x == r))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn log(&self) -> Vec<RequestRecord> {
        self.log.iter().cloned().collect()
    }

    pub fn reset_counts(&mut self) {
        self.counts.clear();
        self.log.clear();
    }
}
