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

/// Whether the API refused for want of a permission (RBAC). Not every 403 is: a used-up
/// ResourceQuota and a namespace being deleted refuse with one too, and free up by themselves.
pub fn is_missing_permission(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else { return false };
    status.code == 403
        && !status.message.contains("exceeded quota")
        && !status.message.contains("because it is being terminated")
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
        assert!(!is_missing_permission(&error));
    }

    #[test]
    fn a_used_up_quota_or_a_terminating_namespace_is_no_missing_permission() {
        let refusal = |message: &str| {
            kube::Error::Api(Box::new(kube::core::Status::failure(message, "Forbidden").with_code(403)))
        };
        let rbac = refusal(r#"deployments.apps "web" is forbidden: User "x" cannot create resource "deployments""#);
        assert!(is_missing_permission(&rbac));
        let quota = refusal(
            r#"deployments.apps "web" is forbidden: exceeded quota: hold, requested: count/deployments.apps=1"#,
        );
        assert!(!is_missing_permission(&quota));
        let terminating = refusal(
            r#"configmaps "c" is forbidden: unable to create new content in namespace x because it is being terminated"#,
        );
        assert!(!is_missing_permission(&terminating));
    }
}
