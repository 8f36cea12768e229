use std::fmt::Debug;
use std::time::Duration;

use cellplane_memapi::ApiServer;
use futures::{Stream, StreamExt};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Upper bound for any wait in these tests; passing runs take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A namespaced test kind with a status subresource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "test.cellplane.io", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    pub size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A cluster-scoped test kind without a status subresource.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "test.cellplane.io", version = "v1", kind = "Gadget")]
pub struct GadgetSpec {
    pub size: i32,
}

pub fn widget(name: &str, size: i32) -> Widget {
    Widget::new(name, WidgetSpec { size, color: None })
}

/// A server with the test kinds installed, and a client for it.
pub fn setup() -> (ApiServer, kube::Client) {
    setup_with(ApiServer::new())
}

pub fn setup_with(server: ApiServer) -> (ApiServer, kube::Client) {
    server.register::<Widget>().expect("Widget CRD");
    server.register::<Gadget>().expect("Gadget CRD");
    let client = server.client();
    (server, client)
}

/// Creates a namespace, as a test must before writing into it.
pub async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("a Namespace");
    namespaces.create(&Default::default(), &ns).await.expect("namespace created");
}

/// Pulls items from a stream until one satisfies `pred`, failing after DEADLINE.
pub async fn next_matching<S, T>(stream: &mut S, what: &str, mut pred: impl FnMut(&T) -> bool) -> T
where
    S: Stream<Item = T> + Unpin,
    T: Debug,
{
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = stream.next().await {
            if pred(&item) {
                return Some(item);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(item)) => item,
        Ok(None) => panic!("stream ended before {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `check` until it returns Some, failing after DEADLINE. Each poll is a
/// request to the server, not a sleep-and-hope.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, what, check).await
}

pub async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let result = tokio::time::timeout(deadline, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    result.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
