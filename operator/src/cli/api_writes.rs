//! What a batch of work cost the API server in writes, by its own count: the difference of
//! `apiserver_request_total` (its `/metrics`) before and after, by verb and resource.

use std::collections::BTreeMap;

use kube::Client;

/// The verbs that write.
const WRITES: &[&str] = &["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// Write requests the API server has counted, as `VERB resource[/subresource][.group]`.
pub async fn counted(client: &Client) -> Result<BTreeMap<String, f64>, kube::Error> {
    let request = http::Request::get("/metrics").body(Vec::new()).map_err(kube::Error::HttpError)?;
    Ok(parse(&client.request_text(request).await?))
}

/// `after` less `before`, less what the caller wrote itself (`own`, by the same keys).
pub fn since(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    own: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(key, count)| {
            let spent = count - before.get(key).unwrap_or(&0.0) - own.get(key).unwrap_or(&0.0);
            (key.clone(), spent)
        })
        .filter(|(_, spent)| *spent > 0.0)
        .collect()
}

fn parse(metrics: &str) -> BTreeMap<String, f64> {
    let mut writes = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let labels = format!(",{labels}");
        let label = |name: &str| {
            let start = format!(",{name}=\"");
            labels.split_once(&start).and_then(|(_, tail)| tail.split('"').next()).unwrap_or_default().to_string()
        };
        let verb = label("verb");
        if !WRITES.contains(&verb.as_str()) {
            continue;
        }
        let (resource, subresource, group) = (label("resource"), label("subresource"), label("group"));
        let mut key = format!("{verb} {resource}");
        if !subresource.is_empty() {
            key = format!("{key}/{subresource}");
        }
        if !group.is_empty() {
            key = format!("{key}.{group}");
        }
        *writes.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_summed_by_verb_and_resource_and_reads_left_out() {
        let metrics = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="PATCH",version="v1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="cellplane.io",resource="namespaces",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="secrets",scope="namespace",subresource="",verb="LIST",version="v1"} 40
"#;
        let writes = parse(metrics);
        assert_eq!(writes.get("PATCH secrets"), Some(&9.0));
        assert_eq!(writes.get("APPLY namespaces/status.cellplane.io"), Some(&3.0));
        assert_eq!(writes.len(), 2, "{writes:?}");
        let own = BTreeMap::from([("PATCH secrets".to_string(), 1.0)]);
        let before = BTreeMap::from([("PATCH secrets".to_string(), 4.0)]);
        let spent = since(&before, &writes, &own);
        assert_eq!(spent.get("PATCH secrets"), Some(&4.0));
    }
}
