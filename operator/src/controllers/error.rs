//! What a reconcile can fail with (it is retried with backoff, see [`super::runner`]).

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {}", crate::kube_error::describe(.0))]
    Kube(#[from] kube::Error),
    #[error("workflow engine error: {0}")]
    Engine(#[from] cellplane_workflows::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("could not encode status: {0}")]
    Json(#[from] serde_json::Error),
}
