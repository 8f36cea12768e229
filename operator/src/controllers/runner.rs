//! Running a controller: what triggers reconciles (object changes and the progress of the
//! workflows the objects own), how often they may run, and the backoff after a failure.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use cellplane_workflows::Engine;
use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::driver::{self, Reconciled};
use super::error::ReconcileError;
use super::gauges;
use crate::api::object_key;
use crate::flows::{Owner, ids};

/// Runs the controller of kind `K`: it reconciles on changes to its objects and on the progress
/// of the workflows of `owners`, until `shutdown`.
pub async fn run<K>(ctx: Arc<Context>, shutdown: CancellationToken, owners: &'static [Owner])
where
    K: Reconciled + gauges::Tracked,
{
    let controller = controller_for(Api::<K>::all(ctx.client.clone()), ctx.watch_config());
    ctx.metrics.objects.track(controller.store());
    let progress = triggers(&ctx.engine, owners, controller.store());
    let store = controller.store();
    let results = controller.reconcile_on(progress).graceful_shutdown_on(shutdown.clone().cancelled_owned()).run(
        driver::reconcile::<K>,
        error_policy,
        ctx,
    );
    drain_until_shutdown(store, results, shutdown).await;
}

/// Drains a controller's results until it has shut down gracefully. kube-runtime holds the
/// reconciles until the store's first list, and its graceful shutdown waits for that too: a
/// shutdown before the first list (a SIGTERM at start-up, an API server refusing the list) would
/// wait forever. Then nothing is in flight, and the controller is dropped instead.
pub async fn drain_until_shutdown<K, R>(store: Store<K>, results: impl Stream<Item = R>, shutdown: CancellationToken)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let stopped_before_first_list = async move {
        shutdown.cancelled().await;
        if store.wait_until_ready().now_or_never().is_none() {
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = results.for_each(|_| futures::future::ready(())) => {}
        () = stopped_before_first_list => tracing::debug!("stopped before the first list of {}", K::kind(&())),
    }
}

/// The error policy shared by the controllers: back off with jitter, per object.
pub fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&object_key(obj.as_ref()));
    tracing::warn!(object = %object_key(obj.as_ref()), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconcile triggers for objects of one kind: every change of a workflow it owns (its checkpoint
/// or the view it published, on any replica), as an ObjectRef. When changes were missed (a burst
/// larger than the channel), every object in `store` is reconciled, so no final progress goes
/// unseen.
pub fn triggers<K>(
    engine: &Engine,
    owners: &'static [Owner],
    store: Store<K>,
) -> impl Stream<Item = ObjectRef<K>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    receiver_stream(engine.changes()).flat_map(move |id| {
        let refs: Vec<ObjectRef<K>> = match id {
            Some(id) => ids::owner(&id)
                .filter(|(owner, ..)| owners.contains(owner))
                .map(|(_, namespace, name)| match namespace {
                    Some(namespace) => ObjectRef::new(name).within(namespace),
                    None => ObjectRef::new(name),
                })
                .into_iter()
                .collect(),
            None => store.state().iter().map(|obj| ObjectRef::from(obj.as_ref())).collect(),
        };
        futures::stream::iter(refs)
    })
}

/// Items of a broadcast channel; None where some were missed.
fn receiver_stream<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> impl Stream<Item = Option<T>> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(item) => Some((Some(item), rx)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// A controller whose cache drops managedFields (most of an object's bytes, never read here).
pub fn controller_for<K>(api: Api<K>, config: kube::runtime::watcher::Config) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store();
    let objects = watcher(api, config)
        .default_backoff()
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    kube::runtime::Controller::for_stream(objects, reader).with_config(controller_config())
}

/// Bursts of workflow progress (several checkpoints per step) collapse into one reconcile, and
/// at most [`RECONCILE_CONCURRENCY`] reconciles of a kind run at once.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().debounce(Duration::from_millis(250)).concurrency(RECONCILE_CONCURRENCY)
}

/// Reconciles of one kind in flight at once. Each holds an HTTP/1 connection to the API server
/// while it writes, and idle connections keep their buffers: unbounded, a burst of ten thousand
/// namespaces meant ten thousand connections and hundreds of MiB.
pub const RECONCILE_CONCURRENCY: u16 = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test]
    async fn a_controller_whose_first_list_never_came_stops_at_shutdown() {
        let unreachable = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
        let client = kube::Client::try_from(unreachable).expect("a client");
        let controller = controller_for(Api::<ConfigMap>::all(client), Default::default());
        let store = controller.store();
        let shutdown = CancellationToken::new();
        let results = controller.graceful_shutdown_on(shutdown.clone().cancelled_owned()).run(
            |_, _| async { Ok::<_, ReconcileError>(Action::await_change()) },
            |_, _, _| Action::await_change(),
            Arc::new(()),
        );
        let drained = tokio::spawn(drain_until_shutdown(store, results, shutdown.clone()));
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), drained).await;
        assert!(matches!(stopped, Ok(Ok(()))), "the controller did not stop: {stopped:?}");
    }
}
