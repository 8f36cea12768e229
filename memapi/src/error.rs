//! API errors, rendered as `meta.k8s.io/v1` `Status` objects the way the real
//! apiserver renders them, so kube returns `Error::Api` with the right code and reason.

use http::StatusCode;
use serde_json::{Value, json};

/// A failed API request. Every variant maps to one HTTP status code and one
/// `Status.reason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    NotFound { message: String, kind: String, group: String, name: String },
    #[error("{message}")]
    AlreadyExists { message: String, kind: String, group: String, name: String },
    /// Optimistic-concurrency or server-side-apply conflict.
    #[error("{message}")]
    Conflict { message: String, kind: String, group: String, name: String, causes: Vec<Cause> },
    #[error("{message}")]
    Invalid { message: String, kind: String, group: String, name: String, causes: Vec<Cause> },
    /// Refused by policy, e.g. new content in a namespace being terminated.
    #[error("{message}")]
    Forbidden { message: String, kind: String, group: String, name: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The `Accept` header names no representation the server can send.
    #[error("{0}")]
    NotAcceptable(String),
    /// The requested watch resourceVersion is older than the kept event history.
    #[error("{0}")]
    Expired(String),
    /// A path no handler serves: the apiserver's plain-text `404 page not found`, not a
    /// `Status` (what a custom-resource path answers for an unknown resource or scope).
    #[error("404 page not found")]
    PageNotFound,
    /// A failure injected by a test hook, or an internal error.
    #[error("{message}")]
    Custom { code: u16, reason: String, message: String },
}

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: &str, message: impl Into<String>) -> Self {
        Self { reason: reason.into(), message: message.into(), field: field.into() }
    }

    /// `Required value`, with the detail after a colon when there is one.
    pub fn required(field: &str, detail: &str) -> Self {
        Self::new("FieldValueRequired", field, with_detail("Required value", detail))
    }

    /// `Invalid value: "value": detail`, the value quoted as a string.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        Self::invalid_shown(field, &format!("{value:?}"), detail)
    }

    /// `Invalid value: 70000: detail`, the value shown as given (numbers, Go literals).
    pub fn invalid_shown(field: &str, shown: &str, detail: &str) -> Self {
        Self::new("FieldValueInvalid", field, with_detail(&format!("Invalid value: {shown}"), detail))
    }

    /// `Unsupported value: "x": supported values: "a", "b"`
    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let message = format!("Unsupported value: {value:?}: supported values: {}", quoted.join(", "));
        Self::new("FieldValueNotSupported", field, message)
    }

    /// `Too long: may not be more than N bytes`
    pub fn too_long(field: &str, max_bytes: usize) -> Self {
        Self::new("FieldValueTooLong", field, format!("Too long: may not be more than {max_bytes} bytes"))
    }

    /// `Forbidden: detail`
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self::new("FieldValueForbidden", field, with_detail("Forbidden", detail))
    }
}

fn with_detail(what: &str, detail: &str) -> String {
    if detail.is_empty() { what.to_string() } else { format!("{what}: {detail}") }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::PageNotFound => StatusCode::NOT_FOUND,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::AlreadyExists { .. } | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Expired(_) => StatusCode::GONE,
            Self::Custom { code, .. } => StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::NotFound { .. } | Self::PageNotFound => "NotFound",
            Self::Forbidden { .. } => "Forbidden",
            Self::AlreadyExists { .. } => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::Invalid { .. } => "Invalid",
            Self::BadRequest(_) => "BadRequest",
            Self::MethodNotAllowed(_) => "MethodNotAllowed",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::NotAcceptable(_) => "NotAcceptable",
            Self::Expired(_) => "Expired",
            Self::Custom { reason, .. } => reason,
        }
    }

    /// `NotFound` for an object, worded like the apiserver: `secrets "x" not found`.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::NotFound {
            message: format!("{} \"{name}\" not found", qualified(resource, group)),
            kind: resource.into(),
            group: group.into(),
            name: name.into(),
        }
    }

    /// `NotFound` for an unknown path or resource type.
    pub fn no_route() -> Self {
        Self::NotFound {
            message: "the server could not find the requested resource".into(),
            kind: String::new(),
            group: String::new(),
            name: String::new(),
        }
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::AlreadyExists {
            message: format!("{} \"{name}\" already exists", qualified(resource, group)),
            kind: resource.into(),
            group: group.into(),
            name: name.into(),
        }
    }

    /// The optimistic-concurrency conflict of a stale `resourceVersion`.
    pub fn stale(resource: &str, group: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Self {
        Self::Conflict {
            message: format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(resource, group)),
            kind: resource.into(),
            group: group.into(),
            name: name.into(),
            causes: Vec::new(),
        }
    }

    /// 422 with one cause per field error; the message lists them as the apiserver's
    /// aggregate does (bracketed when more than one, duplicates dropped).
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let mut details: Vec<String> = Vec::new();
        for c in &causes {
            let line = format!("{}: {}", c.field, c.message);
            if !details.contains(&line) {
                details.push(line);
            }
        }
        let listed = match details.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        Self::Invalid {
            message: format!("{} \"{name}\" is invalid: {listed}", qualified(kind, group)),
            kind: kind.into(),
            group: group.into(),
            name: name.into(),
            causes,
        }
    }

    /// 403 for writing into a namespace that is being deleted, worded as the
    /// NamespaceLifecycle admission plugin words it.
    pub fn namespace_terminating(resource: &str, group: &str, name: &str, namespace: &str) -> Self {
        Self::Forbidden {
            message: format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                qualified(resource, group)
            ),
            kind: resource.into(),
            group: group.into(),
            name: name.into(),
            causes: vec![Cause::new(
                "NamespaceTerminating",
                "metadata.namespace",
                format!("namespace {namespace} is being terminated"),
            )],
        }
    }

    /// 403 with no causes, e.g. deleting a namespace the system needs.
    pub fn forbidden(resource: &str, group: &str, name: &str, why: &str) -> Self {
        Self::Forbidden {
            message: format!("{} \"{name}\" is forbidden: {why}", qualified(resource, group)),
            kind: resource.into(),
            group: group.into(),
            name: name.into(),
            causes: Vec::new(),
        }
    }

    /// 406, worded as the apiserver's negotiation words it (memapi lists what the apiserver
    /// can send, though it sends JSON only).
    pub fn not_acceptable() -> Self {
        Self::NotAcceptable(
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf".into(),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Custom { code: 500, reason: "InternalError".into(), message: message.into() }
    }

    /// The `Status` object the apiserver would send for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let details = match self {
            Self::NotFound { kind, group, name, .. } | Self::AlreadyExists { kind, group, name, .. } => {
                Some(details(kind, group, name, &[]))
            }
            Self::Conflict { kind, group, name, causes, .. }
            | Self::Invalid { kind, group, name, causes, .. }
            | Self::Forbidden { kind, group, name, causes, .. } => Some(details(kind, group, name, causes)),
            // Empty, as go-restful's 405 carries them.
            Self::MethodNotAllowed(_) => Some(details("", "", "", &[])),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

fn details(kind: &str, group: &str, name: &str, causes: &[Cause]) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        d.insert("group".into(), group.into());
    }
    if !kind.is_empty() {
        d.insert("kind".into(), kind.into());
    }
    if !causes.is_empty() {
        let causes = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect::<Vec<_>>();
        d.insert("causes".into(), Value::Array(causes));
    }
    Value::Object(d)
}
