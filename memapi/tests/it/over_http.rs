use std::time::Duration;

use cellplane_memapi::ApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};

use crate::common::*;

/// The same API over a real loopback socket: a client built from a kube Config
/// (as the operator builds it in production) works, including chunked watches.
#[tokio::test]
async fn serves_a_config_built_client_over_http() {
    let server = ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");

    let mut stream = cms.watch(&WatchParams::default().timeout(2), "0").await.unwrap().boxed();
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("over-http".into()), ..Default::default() },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let added = next_matching(&mut stream, "ADDED over http", |e| matches!(e, Ok(WatchEvent::Added(_)))).await;
    assert!(added.is_ok());
    assert_eq!(api_error(cms.get("missing").await.unwrap_err()).code, 404);
    // The stream ends when its timeout passes, over the socket as well.
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>()).await;
    assert!(rest.is_ok(), "watch stream did not end");
    serving.abort();
}
