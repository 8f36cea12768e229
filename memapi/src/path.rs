//! Request paths and query parameters.

use std::collections::HashMap;

use crate::error::ApiError;

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1` or `/apis/{group}/{version}`
    Resources {
        group: String,
        version: String,
    },
    Object(ResourcePath),
}

/// A resource path: a collection, or one object and maybe a subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    let route = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Route::Object(ResourcePath {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespace: namespace.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        })
    };
    Ok(match rest {
        [] => Route::Resources { group: group.into(), version: version.into() },
        // A Namespace object and its subresources.
        ["namespaces", name, sub @ ("status" | "finalize")] => route("namespaces", None, Some(name), Some(sub)),
        ["namespaces", ns, plural, tail @ ..] => match tail {
            [] => route(plural, Some(ns), None, None),
            [name] => route(plural, Some(ns), Some(name), None),
            [name, sub] => route(plural, Some(ns), Some(name), Some(sub)),
            _ => return Err(ApiError::no_route()),
        },
        [plural] => route(plural, None, None, None),
        [plural, name] => route(plural, None, Some(name), None),
        [plural, name, sub] => route(plural, None, Some(name), Some(sub)),
        _ => return Err(ApiError::no_route()),
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

    fn object(path: &str) -> ResourcePath {
        match parse(path).unwrap() {
            Route::Object(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_core_group_and_scoped_paths() {
        let p = object("/api/v1/namespaces/ns1/secrets/s1");
        assert_eq!((p.group.as_str(), p.version.as_str(), p.plural.as_str()), ("", "v1", "secrets"));
        assert_eq!((p.namespace.as_deref(), p.name.as_deref()), (Some("ns1"), Some("s1")));
        let p = object("/apis/cellplane.io/v1alpha1/cells/c1/status");
        assert_eq!((p.group.as_str(), p.namespace, p.subresource.as_deref()), ("cellplane.io", None, Some("status")));
        let p = object("/api/v1/namespaces/ns1");
        assert_eq!((p.plural.as_str(), p.name.as_deref(), p.namespace), ("namespaces", Some("ns1"), None));
        let p = object("/api/v1/namespaces/ns1/status");
        assert_eq!((p.plural.as_str(), p.subresource.as_deref()), ("namespaces", Some("status")));
        let p = object("/apis/coordination.k8s.io/v1/namespaces/ns/leases");
        assert_eq!((p.plural.as_str(), p.name), ("leases", None));
        assert_eq!(parse("/apis").unwrap(), Route::Groups);
        assert!(parse("/healthz").is_err());
    }
}
