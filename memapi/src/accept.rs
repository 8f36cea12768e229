//! Content negotiation: which representation of a response the `Accept` header asks for.

use crate::error::ApiError;

/// A representation the server can send instead of plain JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    Json,
    /// `meta.k8s.io` PartialObjectMetadata(List).
    Metadata,
    /// `meta.k8s.io` Table (server-side printing), in this API version.
    Table(&'static str),
    /// `apidiscovery.k8s.io/v2` APIGroupDiscoveryList (aggregated discovery; v2beta1 is
    /// which Kubernetes 1.37 no longer serves).
    Discovery,
}

impl Representation {
    /// The response `Content-Type`; clients read aggregated discovery only when it says so.
    pub fn content_type(self) -> String {
        match self {
            Self::Discovery => "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList".into(),
            _ => "application/json".into(),
        }
    }
}

fn parse_range(range: &str) -> Option<Representation> {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next()?;
    let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
    let param = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    if !matches!(media, "application/json" | "application/*" | "*/*") {
        return None;
    }
    Some(match (param("as"), param("g"), param("v")) {
        (None, _, _) => Representation::Json,
        (Some("Table"), Some("meta.k8s.io"), Some("v1")) => Representation::Table("v1"),
        (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => Representation::Table("v1beta1"),
        (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io"), _) => {
            Representation::Metadata
        }
        (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => Representation::Discovery,
        _ => return None,
    })
}

/// The first representation in the client's order of preference that `serves` accepts;
/// plain JSON when no `Accept` was sent, 406 when it names nothing the server can send.
pub fn negotiate(accept: Option<&str>, serves: impl Fn(Representation) -> bool) -> Result<Representation, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Representation::Json);
    };
    accept
        .split(',')
        .filter_map(parse_range)
        .find(|r| *r == Representation::Json || serves(*r))
        .ok_or_else(ApiError::not_acceptable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    const KUBECTL_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn picks_the_first_servable_range() {
        let tables = |r: Representation| matches!(r, Representation::Table(_));
        let pick = |accept, serves: &dyn Fn(Representation) -> bool| negotiate(accept, serves).ok();
        assert_eq!(pick(Some(KUBECTL_GET), &tables), Some(Representation::Table("v1")));
        assert_eq!(pick(Some(KUBECTL_GET), &|_| false), Some(Representation::Json));
        let discovery = |r: Representation| r == Representation::Discovery;
        assert_eq!(pick(Some(KUBECTL_DISCOVERY), &discovery), Some(Representation::Discovery));
        assert_eq!(pick(Some(KUBECTL_DISCOVERY), &tables), Some(Representation::Json));
        assert_eq!(pick(None, &tables), Some(Representation::Json));
        let metadata = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(pick(Some(metadata), &|_| true), Some(Representation::Metadata));
    }

    #[test]
    fn nothing_servable_is_not_acceptable() {
        let v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        for accept in [v2beta1, "application/json;as=Table;v=v2;g=meta.k8s.io", "text/html"] {
            let refused = negotiate(Some(accept), |_| true).unwrap_err();
            assert_eq!((refused.code().as_u16(), refused.reason()), (406, "NotAcceptable"), "{accept}");
        }
    }
}
