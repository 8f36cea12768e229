//! Request paths and query parameters.

use std::collections::HashMap;

use crate::error::ApiError;

/// What a request path names, before the registry says which resource (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz`
    Health,
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    Resources { group: String, version: String },
    /// Anything below a group version.
    Resource(RequestPath),
}

/// A path below `/api/{version}` or `/apis/{group}/{version}`, split into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    pub group: String,
    pub version: String,
    pub segments: Vec<String>,
}

impl RequestPath {
    pub fn is_core(&self) -> bool {
        self.group.is_empty()
    }
}

pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let below = |group: &str, version: &str, rest: &[&str]| {
        if rest.is_empty() {
            return Route::Resources { group: group.into(), version: version.into() };
        }
        let segments = rest.iter().map(|s| s.to_string()).collect();
        Route::Resource(RequestPath { group: group.into(), version: version.into(), segments })
    };
    Ok(match segs.as_slice() {
        ["healthz" | "livez" | "readyz"] => Route::Health,
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["api", version, rest @ ..] => below("", version, rest),
        ["apis", group, version, rest @ ..] => below(group, version, rest),
        _ => return Err(ApiError::PageNotFound),
    })
}

/// Query parameters of a request.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Self(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true") || self.get(key) == Some("1")
    }

    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("invalid value for {key}: {v:?}"))))
            .transpose()
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_group_version_and_the_rest() {
        let Route::Resource(p) = parse("/api/v1/namespaces/ns1/secrets/s1").unwrap() else { panic!() };
        assert_eq!((p.group.as_str(), p.version.as_str()), ("", "v1"));
        assert_eq!(p.segments, ["namespaces", "ns1", "secrets", "s1"]);
        assert_eq!(parse("/apis/cellplane.io/").unwrap(), Route::Group("cellplane.io".into()));
        assert_eq!(
            parse("/apis/cellplane.io/v1alpha1").unwrap(),
            Route::Resources { group: "cellplane.io".into(), version: "v1alpha1".into() }
        );
        assert_eq!(parse("/readyz").unwrap(), Route::Health);
        assert_eq!(parse("/metrics").unwrap_err(), ApiError::PageNotFound);
    }
}
