//! The Kubernetes client the operator runs with: from a kubeconfig (as kubectl finds one) or the
//! in-cluster configuration, counting its requests by verb in `cellplane_kube_requests_total`
//! so that an SRE (and `bench fleet`) sees what the operator costs the API server.

use std::path::Path;
use std::task::{Context, Poll};

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config) and not in a cluster: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {}", crate::kube_error::describe(.0))]
    Client(#[from] kube::Error),
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A client for the cluster the kubeconfig names (`path`, else `KUBECONFIG` or ~/.kube/config),
/// else the in-cluster configuration; with the namespace the kubeconfig's current context
/// names, if any. With a registry, its requests are counted there.
pub async fn connect(
    path: Option<&Path>,
    registry: Option<&Registry>,
) -> Result<(kube::Client, Option<String>), ConnectError> {
    let (config, namespace) = config(path).await?;
    let builder = ClientBuilder::try_from(config)?;
    let client = match registry {
        Some(registry) => builder.with_layer(&CountRequests::register(registry)?).build(),
        None => builder.build(),
    };
    Ok((client, namespace))
}

/// The configuration [`connect`] uses: the kubeconfig's (`path`, else `KUBECONFIG` or
/// ~/.kube/config), else the in-cluster one; with the current context's namespace, if any.
pub async fn config(path: Option<&Path>) -> Result<(kube::Config, Option<String>), ConnectError> {
    let kubeconfig = match path {
        Some(path) => Some(Kubeconfig::read_from(path)?),
        None => Kubeconfig::read().ok(),
    };
    Ok(match kubeconfig {
        Some(kubeconfig) => {
            let namespace = context_namespace(&kubeconfig);
            (kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?, namespace)
        }
        None => (kube::Config::incluster()?, None),
    })
}

/// The namespace of the kubeconfig's current context, as kubectl uses it.
fn context_namespace(kubeconfig: &Kubeconfig) -> Option<String> {
    let current = kubeconfig.current_context.as_ref()?;
    let context = kubeconfig.contexts.iter().find(|c| &c.name == current)?.context.as_ref()?;
    context.namespace.clone().filter(|ns| !ns.is_empty())
}

/// Counts requests by verb: get (a read or list), watch, create, patch, update, delete.
#[derive(Clone)]
pub struct CountRequests {
    requests: IntCounterVec,
}

impl CountRequests {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let opts = Opts::new("cellplane_kube_requests_total", "Requests to the Kubernetes API server, by verb");
        let requests = IntCounterVec::new(opts, &["verb"])?;
        registry.register(Box::new(requests.clone()))?;
        Ok(CountRequests { requests })
    }
}

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, requests: self.requests.clone() }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    requests: IntCounterVec,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.requests.with_label_values(&[verb(&request)]).inc();
        self.inner.call(request)
    }
}

fn verb<B>(request: &http::Request<B>) -> &'static str {
    let watch = request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *request.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Requests counted so far, all verbs; and the watches among them.
pub fn totals(registry: &Registry) -> (u64, u64) {
    let mut total = 0;
    let mut watches = 0;
    for family in registry.gather().iter().filter(|f| f.name() == "cellplane_kube_requests_total") {
        for metric in family.get_metric() {
            let value = metric.get_counter().get_value() as u64;
            total += value;
            if metric.get_label().iter().any(|l| l.name() == "verb" && l.value() == "watch") {
                watches += value;
            }
        }
    }
    (total, watches)
}
