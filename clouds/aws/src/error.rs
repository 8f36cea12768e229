//! AWS errors classified for retries: throttling, 5xx and timeouts are transient; access
//! denied and invalid requests are terminal and carry AWS's own message.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use cellplane_cloud::CloudError;

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "ServerException",
    "Unavailable",
];

const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "SignatureDoesNotMatch",
];

/// A failed AWS call: its error code (empty when no response came) and its classification.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: String,
    pub status: Option<u16>,
    pub error: CloudError,
}

impl Failure {
    pub fn not_found(&self) -> bool {
        self.code.ends_with(".NotFound") || self.code == "ResourceNotFoundException"
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// EKS: the resource exists already (or is busy with another change).
    pub fn in_use(&self) -> bool {
        self.code == "ResourceInUseException" || self.status == Some(409)
    }
}

impl From<Failure> for CloudError {
    fn from(failure: Failure) -> Self {
        failure.error
    }
}

/// Classifies the error of the AWS call `what`.
pub(crate) fn fail<E>(what: &str, error: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().unwrap_or_default().to_string();
    let message = match error.message() {
        Some(message) => format!("{what}: {code}: {message}"),
        None => format!("{what}: {}", aws_smithy_types::error::display::DisplayErrorContext(&error)),
    };
    let error = match &error {
        SdkError::ServiceError(_) => classify(&code, status, message),
        SdkError::ConstructionFailure(_) => CloudError::Invalid(message),
        _ => CloudError::Transient(message),
    };
    Failure { code, status, error }
}

fn classify(code: &str, status: Option<u16>, message: String) -> CloudError {
    if THROTTLING.contains(&code) || status.is_some_and(|s| s >= 500 || s == 429) {
        CloudError::Transient(message)
    } else if DENIED.contains(&code) || status == Some(403) {
        CloudError::AccessDenied(message)
    } else {
        CloudError::Invalid(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_5xx_retry_denials_and_validation_do_not() {
        assert!(classify("RequestLimitExceeded", Some(503), "m".into()).is_transient());
        assert!(classify("Whatever", Some(502), "m".into()).is_transient());
        assert!(matches!(classify("UnauthorizedOperation", Some(403), "m".into()), CloudError::AccessDenied(_)));
        let invalid = classify("InvalidParameterValue", Some(400), "CreateVpc: bad CIDR".into());
        assert_eq!(invalid, CloudError::Invalid("CreateVpc: bad CIDR".into()));
    }
}
