//! Content negotiation: which representation of a response the `Accept` header asks for.

/// A representation the server can send instead of plain JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    Json,
    /// `meta.k8s.io` PartialObjectMetadata(List).
    Metadata,
    /// `meta.k8s.io` Table (server-side printing), in this API version.
    Table(&'static str),
    /// `apidiscovery.k8s.io` APIGroupDiscoveryList (aggregated discovery), in this version.
    Discovery(&'static str),
}

impl Representation {
    /// The response `Content-Type`; clients read aggregated discovery only when it says so.
    pub fn content_type(self) -> String {
        match self {
            Self::Discovery(v) => format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"),
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
        (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => Representation::Discovery("v2"),
        (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1")) => {
            Representation::Discovery("v2beta1")
        }
        _ => return None,
    })
}

/// The first representation in the client's order of preference that `serves` accepts;
/// plain JSON when none is (or no `Accept` was sent).
pub fn negotiate(accept: Option<&str>, serves: impl Fn(Representation) -> bool) -> Representation {
    accept
        .into_iter()
        .flat_map(|a| a.split(','))
        .filter_map(parse_range)
        .find(|r| *r == Representation::Json || serves(*r))
        .unwrap_or(Representation::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    const KUBECTL_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn picks_the_first_servable_range() {
        let tables = |r: Representation| matches!(r, Representation::Table(_));
        assert_eq!(negotiate(Some(KUBECTL_GET), tables), Representation::Table("v1"));
        assert_eq!(negotiate(Some(KUBECTL_GET), |_| false), Representation::Json);
        let discovery = |r: Representation| matches!(r, Representation::Discovery(_));
        assert_eq!(negotiate(Some(KUBECTL_DISCOVERY), discovery), Representation::Discovery("v2"));
        assert_eq!(negotiate(Some(KUBECTL_DISCOVERY), tables), Representation::Json);
        assert_eq!(negotiate(None, tables), Representation::Json);
        let metadata = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(negotiate(Some(metadata), |_| true), Representation::Metadata);
    }
}
