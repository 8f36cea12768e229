//! How Kubernetes API errors read in conditions, Events and logs: the API's own message
//! (`namespaces "x" not found`), never kube's debug dump of its `Status`.

/// The message a person should read for a Kubernetes client error.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Api(status) => format!("{} ({})", status.reason, status.code),
        other => other.to_string(),
    }
}

/// The HTTP status code of an API error, if the server answered with one.
pub fn code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_the_servers_message() {
        let status = kube::core::Status::failure(r#"namespaces "x" not found"#, "NotFound").with_code(404);
        let error = kube::Error::Api(Box::new(status));
        assert_eq!(describe(&error), r#"namespaces "x" not found"#);
        assert_eq!(code(&error), Some(404));
    }
}
