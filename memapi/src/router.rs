//! Which resource, object and verb a request names, decided as the apiserver decides it.
//!
//! Built-in kinds are served on exact routes (go-restful): a path that matches none is a
//! `Status` 404, a method a route lacks is a 405. Custom kinds go through the
//! custom-resource handler, which reads the path the way `RequestInfoFactory` does:
//! `namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]` when the first segment is `namespaces`
//! and a third segment follows that is not `status` or `finalize`, and
//! `RESOURCE[/NAME[/SUBRESOURCE]]` otherwise; an unknown resource, or a scope that does not
//! match the kind's, falls through to the plain-text `404 page not found`. So for a
//! cluster-scoped custom kind whose plural is `namespaces`, `/apis/G/V/namespaces/NAME` is
//! "resource `namespaces` in namespace NAME": listing works, reading by name never does.

use std::sync::Arc;

use http::Method;

use crate::error::ApiError;
use crate::handlers::Target;
use crate::hooks::Verb;
use crate::kinds::{Registry, ResourceKind};
use crate::path::{Query, RequestPath};

/// A request resolved to its target and verb.
#[derive(Debug)]
pub struct Resolved {
    pub target: Target,
    pub verb: Verb,
}

pub fn resolve(registry: &Registry, p: &RequestPath, method: &Method, q: &Query) -> Result<Resolved, ApiError> {
    if p.is_core() || registry.serves_builtin(&p.group, &p.version) {
        builtin(registry, p, method, q)
    } else {
        custom(registry, p, method, q)
    }
}

fn builtin_kind(registry: &Registry, p: &RequestPath, plural: &str) -> Option<Arc<ResourceKind>> {
    registry.get(&p.group, &p.version, plural)
}

fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("the server does not allow this method on the requested resource".into())
}

fn builtin(registry: &Registry, p: &RequestPath, method: &Method, q: &Query) -> Result<Resolved, ApiError> {
    let segs: Vec<&str> = p.segments.iter().map(String::as_str).collect();
    let namespaced = match segs.as_slice() {
        ["namespaces", ns, plural, rest @ ..] => {
            builtin_kind(registry, p, plural).filter(|k| k.namespaced).map(|k| (k, Some(*ns), rest))
        }
        _ => None,
    };
    let (kind, namespace, rest) = match namespaced {
        Some(found) => found,
        None => {
            let [plural, rest @ ..] = segs.as_slice() else { return Err(ApiError::no_route()) };
            let kind = builtin_kind(registry, p, plural).ok_or_else(ApiError::no_route)?;
            // A namespaced kind has one route without a namespace: the list across all of them.
            if kind.namespaced && !rest.is_empty() {
                return Err(ApiError::no_route());
            }
            (kind, None, rest)
        }
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, "status"] if kind.status_subresource => (Some(*name), Some("status")),
        _ => return Err(ApiError::no_route()),
    };
    let all_namespaces = kind.namespaced && namespace.is_none();
    let verb = match (method, name, subresource) {
        (&Method::GET, None, _) => list_or_watch(q),
        (_, None, _) if all_namespaces => return Err(method_not_allowed()),
        (&Method::POST, None, _) => Verb::Create,
        (&Method::DELETE, None, _) if kind.allows("deletecollection") => Verb::DeleteCollection,
        (&Method::GET, Some(_), _) => Verb::Get,
        (&Method::PUT, Some(_), _) => Verb::Update,
        (&Method::PATCH, Some(_), _) => Verb::Patch,
        (&Method::DELETE, Some(_), None) => Verb::Delete,
        _ => return Err(method_not_allowed()),
    };
    Ok(Resolved { target: target(kind, namespace, name, subresource), verb })
}

fn list_or_watch(q: &Query) -> Verb {
    if q.flag("watch") { Verb::Watch } else { Verb::List }
}

fn target(kind: Arc<ResourceKind>, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Target {
    Target {
        kind,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: sub.map(String::from),
    }
}

/// The custom-resource handler's reading of a path (see the module docs).
fn request_info(segs: &[String]) -> (Option<&str>, &[String]) {
    match segs {
        [first, ns, rest @ ..] if first == "namespaces" => match rest.first().map(String::as_str) {
            Some(third) if third != "status" && third != "finalize" => (Some(ns), rest),
            _ => (Some(ns), segs),
        },
        _ => (None, segs),
    }
}

fn custom(registry: &Registry, p: &RequestPath, method: &Method, q: &Query) -> Result<Resolved, ApiError> {
    let (namespace, parts) = request_info(&p.segments);
    let plural = parts.first().ok_or(ApiError::PageNotFound)?;
    let name = parts.get(1).map(String::as_str);
    let subresource = parts.get(2).map(String::as_str);
    let verb = match (method, name) {
        (&Method::GET, Some(_)) => Verb::Get,
        (&Method::GET, None) => list_or_watch(q),
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, _) => Verb::Update,
        (&Method::PATCH, _) => Verb::Patch,
        (&Method::DELETE, Some(_)) => Verb::Delete,
        (&Method::DELETE, None) => Verb::DeleteCollection,
        _ => return Err(method_not_allowed()),
    };
    let kind = registry.get(&p.group, &p.version, plural).ok_or(ApiError::PageNotFound)?;
    let across_namespaces = matches!(verb, Verb::List | Verb::Watch);
    if namespace.is_some() && !kind.namespaced || namespace.is_none() && kind.namespaced && !across_namespaces {
        return Err(ApiError::PageNotFound);
    }
    match subresource {
        None => {}
        Some("status") if kind.status_subresource && matches!(verb, Verb::Get | Verb::Update | Verb::Patch) => {}
        Some("status") if kind.status_subresource => {
            return Err(ApiError::MethodNotAllowed(format!(
                "{verb} is not supported on resources of kind \"{}.{}\"",
                kind.plural, kind.group
            )));
        }
        Some(_) => return Err(ApiError::not_found(&kind.plural, &kind.group, name.unwrap_or_default())),
    }
    if name.is_none() && matches!(verb, Verb::Update | Verb::Patch) {
        return Err(ApiError::BadRequest("name must be provided".into()));
    }
    // POST creates from the body whatever the path names.
    let name = if verb == Verb::Create { None } else { name };
    Ok(Resolved { target: target(kind, namespace, name, subresource), verb })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{Route, parse};

    fn registry() -> Registry {
        let mut r = Registry::default();
        for k in ResourceKind::builtins() {
            r.insert(k);
        }
        r.insert(ResourceKind::cluster("cellplane.io", "v1alpha1", "namespaces", "Namespace"));
        r.insert(ResourceKind::namespaced("test.io", "v1", "widgets", "Widget").with_status());
        r
    }

    fn resolve_path(method: Method, path: &str) -> Result<Resolved, ApiError> {
        let Route::Resource(p) = parse(path).unwrap() else { panic!("{path} is not a resource path") };
        resolve(&registry(), &p, &method, &Query::default())
    }

    fn names(method: Method, path: &str) -> (Verb, Option<String>, Option<String>, Option<String>) {
        let r = resolve_path(method, path).unwrap();
        (r.verb, r.target.namespace, r.target.name, r.target.subresource)
    }

    #[test]
    fn core_namespaces_and_namespaced_builtins_share_the_prefix() {
        assert_eq!(names(Method::GET, "/api/v1/namespaces/ns1"), (Verb::Get, None, Some("ns1".into()), None));
        let status = names(Method::PUT, "/api/v1/namespaces/ns1/status");
        assert_eq!(status, (Verb::Update, None, Some("ns1".into()), Some("status".into())));
        let secret = names(Method::DELETE, "/api/v1/namespaces/ns1/secrets/s");
        assert_eq!(secret, (Verb::Delete, Some("ns1".into()), Some("s".into()), None));
        assert_eq!(names(Method::GET, "/api/v1/secrets").0, Verb::List);
        assert_eq!(resolve_path(Method::GET, "/api/v1/secrets/s").unwrap_err(), ApiError::no_route());
        assert_eq!(resolve_path(Method::POST, "/api/v1/secrets").unwrap_err(), method_not_allowed());
        assert_eq!(resolve_path(Method::DELETE, "/api/v1/namespaces").unwrap_err(), method_not_allowed());
        let deep = resolve_path(Method::GET, "/api/v1/namespaces/d/secrets/x/y/z").unwrap_err();
        assert_eq!(deep, ApiError::no_route());
    }

    #[test]
    fn custom_kinds_read_paths_as_request_info_does() {
        let cluster_ns = resolve_path(Method::GET, "/apis/cellplane.io/v1alpha1/namespaces/acme").unwrap_err();
        assert_eq!(cluster_ns, ApiError::PageNotFound);
        assert_eq!(names(Method::GET, "/apis/cellplane.io/v1alpha1/namespaces").0, Verb::List);
        let widget = names(Method::GET, "/apis/test.io/v1/namespaces/a/widgets/w/status");
        assert_eq!(widget, (Verb::Get, Some("a".into()), Some("w".into()), Some("status".into())));
        assert_eq!(names(Method::GET, "/apis/test.io/v1/widgets").0, Verb::List);
        let unscoped = resolve_path(Method::POST, "/apis/test.io/v1/widgets").unwrap_err();
        assert_eq!(unscoped, ApiError::PageNotFound);
        let scale = resolve_path(Method::GET, "/apis/test.io/v1/namespaces/a/widgets/w/scale").unwrap_err();
        assert_eq!(scale, ApiError::not_found("widgets", "test.io", "w"));
        assert_eq!(resolve_path(Method::GET, "/apis/test.io/v1/gadgets").unwrap_err(), ApiError::PageNotFound);
    }
}
