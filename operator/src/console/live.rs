//! Live updates: a page's live region names what it shows (`/live?kind=…`), and this stream
//! of server-sent events says `changed` whenever a Kubernetes watch (made with the user's own
//! credentials) sees one of those objects change; the browser then fetches the region again.
//! Workflow pages follow their objects too: the controllers mirror each workflow checkpoint
//! into its object's status, so a console in another process than the engine still hears of
//! every step. Bursts collapse into one event per [`DEBOUNCE`].

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc;

use super::ConsoleError;
use super::server::{Ctx, Reply};
use crate::api::{Cell, DeploymentRing, Namespace};

const DEBOUNCE: Duration = Duration::from_millis(200);
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Workflows that belong to no object have no watch: their pages look again this often.
const WORKFLOW_TICK: Duration = Duration::from_secs(5);

/// What a live region shows, as its `/live` URL names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    Namespaces { account: Option<String> },
    Namespace { account: String, name: String },
    Cells,
    Rings,
    Workflows,
}

impl Watch {
    /// The `/live` URL of this watch.
    pub fn source(&self) -> String {
        let enc = super::html::url;
        match self {
            Watch::Namespaces { account: Some(account) } => format!("/live?kind=namespaces&account={}", enc(account)),
            Watch::Namespaces { account: None } => "/live?kind=namespaces".into(),
            Watch::Namespace { account, name } => {
                format!("/live?kind=namespace&account={}&name={}", enc(account), enc(name))
            }
            Watch::Cells => "/live?kind=cells".into(),
            Watch::Rings => "/live?kind=rings".into(),
            Watch::Workflows => "/live?kind=workflows".into(),
        }
    }

    fn parse(kind: &str, account: &str, name: &str) -> Result<Self, ConsoleError> {
        let account = (!account.is_empty()).then(|| account.to_string());
        match (kind, account) {
            ("namespaces", account) => Ok(Watch::Namespaces { account }),
            ("namespace", Some(account)) if !name.is_empty() => Ok(Watch::Namespace { account, name: name.into() }),
            ("cells", _) => Ok(Watch::Cells),
            ("rings", _) => Ok(Watch::Rings),
            ("workflows", _) => Ok(Watch::Workflows),
            _ => Err(ConsoleError::BadRequest(format!("nothing to follow for kind {kind:?}"))),
        }
    }
}

/// `GET /live`: the event stream for one live region.
pub fn events(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let request = ctx.request;
    let watch = Watch::parse(request.query("kind"), request.query("account"), request.query("name"))?;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let changes = changes(&ctx.client(), &watch);
    let ticks = matches!(watch, Watch::Workflows);
    tokio::spawn(pump(changes, ticks, tx));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    Ok(Reply::Events(BodyExt::boxed(StreamBody::new(frames))))
}

/// Something changed (Ok) or a watch cannot go on (Err, with the API's message).
type Changes = BoxStream<'static, Result<(), String>>;

fn changes(client: &Client, watch: &Watch) -> Changes {
    let streams: Vec<Changes> = match watch {
        Watch::Namespaces { account: Some(account) } => {
            vec![follow(Api::<Namespace>::namespaced(client.clone(), account), None)]
        }
        Watch::Namespaces { account: None } => vec![follow(Api::<Namespace>::all(client.clone()), None)],
        Watch::Namespace { account, name } => vec![
            follow(Api::<Namespace>::namespaced(client.clone(), account), Some(format!("metadata.name={name}"))),
            follow(Api::<K8sEvent>::namespaced(client.clone(), account), None),
        ],
        Watch::Cells => vec![follow(Api::<Cell>::all(client.clone()), None)],
        Watch::Rings => vec![
            follow(Api::<DeploymentRing>::all(client.clone()), None),
            follow(Api::<Cell>::all(client.clone()), None),
        ],
        Watch::Workflows => vec![
            follow(Api::<Cell>::all(client.clone()), None),
            follow(Api::<DeploymentRing>::all(client.clone()), None),
            follow(Api::<Namespace>::all(client.clone()), None),
        ],
    };
    futures::stream::select_all(streams).boxed()
}

/// Changes to the objects `api` reaches, after the initial listing.
fn follow<K>(api: Api<K>, fields: Option<String>) -> Changes
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = match fields {
        Some(fields) => watcher::Config::default().fields(&fields),
        None => watcher::Config::default(),
    };
    watcher(api, config)
        .filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Some(Ok(())),
                Ok(_) => None,
                Err(e) => Some(Err(e.to_string())),
            }
        })
        .boxed()
}

/// Writes server-sent events until the browser goes away.
async fn pump(mut changes: Changes, ticks: bool, tx: mpsc::Sender<Bytes>) {
    if tx.send(Bytes::from_static(b"retry: 3000\n\n")).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let mut tick = tokio::time::interval(if ticks { WORKFLOW_TICK } else { Duration::from_secs(86_400) });
    tick.reset();
    // When the next `changed` is due: the first change of a burst plus DEBOUNCE.
    let mut due: Option<tokio::time::Instant> = None;
    let mut last_problem = String::new();
    loop {
        let debounce = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now));
        let frame = tokio::select! {
            _ = tx.closed() => return,
            change = changes.next() => match change {
                Some(Ok(())) => {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
                    continue;
                }
                Some(Err(problem)) if problem != last_problem => {
                    last_problem = problem.clone();
                    format!("event: problem\ndata: {}\n\n", problem.replace('\n', " "))
                }
                Some(Err(_)) => continue,
                None => return,
            },
            _ = debounce, if due.is_some() => { due = None; "event: changed\ndata: changed\n\n".to_string() }
            _ = tick.tick() => "event: changed\ndata: tick\n\n".to_string(),
            _ = keepalive.tick() => ": keepalive\n\n".to_string(),
        };
        if tx.send(Bytes::from(frame)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watch_reads_back_from_its_source() {
        let watches = [
            Watch::Namespaces { account: None },
            Watch::Namespaces { account: Some("acme".into()) },
            Watch::Namespace { account: "acme".into(), name: "web".into() },
            Watch::Cells,
            Watch::Rings,
            Watch::Workflows,
        ];
        for watch in watches {
            let source = watch.source();
            let query: Vec<(String, String)> =
                form_urlencoded::parse(source.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
            let get = |k: &str| query.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v.as_str());
            assert_eq!(Watch::parse(get("kind"), get("account"), get("name")).unwrap(), watch);
        }
    }
}
