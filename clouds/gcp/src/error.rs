//! GKE errors classified for retries, by the RPC status code the REST API returns.

use cellplane_cloud::CloudError;
use google_cloud_gax::error::Error;
use google_cloud_gax::error::rpc::Code;

pub(crate) struct Failure {
    pub error: CloudError,
    pub not_found: bool,
    pub already_exists: bool,
    pub failed_precondition: bool,
}

pub(crate) fn fail(what: &str, error: Error) -> Failure {
    let code = error.status().map(|s| s.code);
    let message = match error.status() {
        Some(status) => format!("{what}: {:?}: {}", status.code, status.message),
        None => format!("{what}: {error}"),
    };
    let http = error.http_status_code();
    let cloud = match code {
        Some(Code::PermissionDenied | Code::Unauthenticated) => CloudError::AccessDenied(message),
        Some(Code::ResourceExhausted | Code::Unavailable | Code::Internal | Code::DeadlineExceeded | Code::Aborted) => {
            CloudError::Transient(message)
        }
        Some(_) if http.is_some_and(|s| s >= 500) => CloudError::Transient(message),
        Some(_) => CloudError::Invalid(message),
        None if http.is_some_and(|s| (400..500).contains(&s) && s != 429) => CloudError::Invalid(message),
        None => CloudError::Transient(message),
    };
    Failure {
        error: cloud,
        not_found: code == Some(Code::NotFound),
        already_exists: code == Some(Code::AlreadyExists),
        failed_precondition: code == Some(Code::FailedPrecondition),
    }
}
