//! What can go wrong installing a release, and whether retrying can help.

use crate::cell::CellError;
use crate::kube_error;

/// A field another manager owns, as a refused apply reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldConflict {
    /// The field's path, e.g. `.spec.replicas`.
    pub field: String,
    /// The manager that owns it, e.g. `kubectl-edit`.
    pub manager: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("document {document} of the manifests is not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("{what}: {message}")]
    Substitution { what: String, message: String },
    #[error(
        "variables without a value or a default: {} (in {}); give them a value or a default (${{name:=default}})",
        names.join(", "),
        objects.join(", ")
    )]
    MissingVariables { names: Vec<String>, objects: Vec<String> },
    #[error("{what}: {message}")]
    InvalidObject { what: String, message: String },
    #[error("{} appears more than once in the release", .0.display())]
    Duplicate(super::ObjectRef),
    /// `helm template` failed; `retryable` when its error reads like the network's, not the chart's.
    #[error("{message}")]
    Helm { message: String, retryable: bool },
    #[error(
        "{object}: apply refused, fields owned by other managers: {}; apply with force to take them over",
        conflicts.iter().map(|c| format!("{} ({})", c.field, c.manager)).collect::<Vec<_>>().join(", ")
    )]
    Conflict { object: String, conflicts: Vec<FieldConflict> },
    #[error("{object}: the cluster does not serve {api_version} {kind} (yet)")]
    KindNotServed { object: String, api_version: String, kind: String },
    #[error("{what}: {}", kube_error::describe(.source))]
    Kube { what: String, source: kube::Error },
    #[error("invalid object reference {text:?}: {why}")]
    BadReference { text: String, why: String },
}

impl ReleaseError {
    pub(super) fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        ReleaseError::Kube { what: what.into(), source }
    }

    /// Whether the same call can succeed later without anyone changing the release.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReleaseError::Helm { retryable, .. } => *retryable,
            ReleaseError::KindNotServed { .. } => true,
            ReleaseError::Kube { source, .. } => kube_retryable(source),
            _ => false,
        }
    }

    /// The cell error a workflow step returns: a missing permission is waited out, what retrying
    /// can fix is transient, the rest (an invalid release, a refused conflict) ends the step.
    pub fn into_cell_error(self) -> CellError {
        let message = self.to_string();
        match &self {
            ReleaseError::Kube { source, .. } if kube_error::is_missing_permission(source) => {
                CellError::Forbidden(message)
            }
            _ if self.is_retryable() => CellError::Transient(message),
            _ => CellError::Invalid(message),
        }
    }
}

impl From<ReleaseError> for CellError {
    fn from(error: ReleaseError) -> Self {
        error.into_cell_error()
    }
}

fn kube_retryable(error: &kube::Error) -> bool {
    match kube_error::code(error) {
        // Bad request, invalid object, unsupported media or method. (A refused apply's 409 is a
        // [`ReleaseError::Conflict`]; other 409s, a failed precondition, pass with a new read.)
        Some(400 | 405 | 413 | 415 | 422) => false,
        Some(403) => !kube_error::is_missing_permission(error),
        // 404 (a namespace not there yet), 408, 429, 5xx: retrying can help.
        Some(_) => true,
        // No answer: the connection, TLS, a timeout.
        None => !matches!(error, kube::Error::SerdeError(_) | kube::Error::BuildRequest(_)),
    }
}

/// The fields and managers of a refused server-side apply (HTTP 409 with one cause per field).
pub(super) fn conflicts_of(error: &kube::Error) -> Option<Vec<FieldConflict>> {
    let kube::Error::Api(status) = error else { return None };
    if status.code != 409 {
        return None;
    }
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    let conflicts: Vec<FieldConflict> = causes
        .iter()
        .filter(|cause| cause.reason == "FieldManagerConflict")
        .map(|cause| FieldConflict { field: cause.field.clone(), manager: quoted(&cause.message) })
        .collect();
    (!conflicts.is_empty()).then_some(conflicts)
}

/// The manager in a cause such as `conflict with "kubectl-edit" using apps/v1`.
fn quoted(message: &str) -> String {
    message.split('"').nth(1).unwrap_or(message).to_string()
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::core::response::{StatusCause, StatusDetails};

    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, "").with_code(code)))
    }

    #[test]
    fn errors_say_whether_retrying_helps() {
        let kube = |code, message| ReleaseError::kube("applying", api_error(code, message)).into_cell_error();
        assert!(matches!(kube(403, "forbidden: User cannot patch"), CellError::Forbidden(_)));
        assert!(matches!(
            kube(403, "unable to create new content in namespace x because it is being terminated"),
            CellError::Transient(_)
        ));
        assert!(matches!(kube(422, "invalid"), CellError::Invalid(_)));
        assert!(matches!(kube(409, "Precondition failed: UID in precondition"), CellError::Transient(_)));
        let conflict = ReleaseError::Conflict { object: "ConfigMap svc/a".into(), conflicts: vec![] };
        assert!(matches!(conflict.into_cell_error(), CellError::Invalid(_)));
        assert!(matches!(kube(429, "slow down"), CellError::Transient(_)));
        assert!(matches!(kube(503, "unavailable"), CellError::Transient(_)));
        let helm = |retryable| ReleaseError::Helm { message: "helm".into(), retryable }.into_cell_error();
        assert!(matches!(helm(false), CellError::Invalid(_)));
        assert!(matches!(helm(true), CellError::Transient(_)));
        let missing = ReleaseError::MissingVariables { names: vec!["x".into()], objects: vec!["ConfigMap a".into()] };
        assert!(matches!(missing.into_cell_error(), CellError::Invalid(_)));
    }

    #[test]
    fn a_refused_apply_names_fields_and_managers() {
        let cause = |field: &str, manager: &str| StatusCause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with \"{manager}\" using apps/v1"),
            field: field.into(),
        };
        let mut status = Status::failure("Apply failed with 2 conflicts", "Conflict").with_code(409);
        status.details = Some(StatusDetails {
            name: "web".into(),
            group: "apps".into(),
            kind: "deployments".into(),
            uid: String::new(),
            causes: vec![cause(".spec.replicas", "kubectl-scale"), cause(".spec.paused", "kubectl-edit")],
            retry_after_seconds: 0,
        });
        let conflicts = conflicts_of(&kube::Error::Api(Box::new(status))).unwrap();
        let error = ReleaseError::Conflict { object: "Deployment svc/web".into(), conflicts };
        assert_eq!(
            error.to_string(),
            "Deployment svc/web: apply refused, fields owned by other managers: .spec.replicas (kubectl-scale), \
             .spec.paused (kubectl-edit); apply with force to take them over"
        );
    }
}
