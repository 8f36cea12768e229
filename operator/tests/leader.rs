//! Leader election on the in-memory API server's Leases.

use std::time::Duration;

use cellplane::controllers::leader::LeaderElection;
use cellplane_memapi::ApiServer;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn one_replica_leads_and_the_next_takes_over_when_it_lets_go() {
    let server = ApiServer::new();
    let lease = Duration::from_secs(30);
    let first = LeaderElection::new(server.client(), "default", "cellplane", "replica-a", lease);
    let second = LeaderElection::new(server.client(), "default", "cellplane", "replica-b", lease);
    assert!(first.try_acquire().await.unwrap(), "a free lease is taken");
    assert!(!second.try_acquire().await.unwrap(), "a held, unexpired lease is not");
    assert!(first.try_acquire().await.unwrap(), "the holder renews");

    // The holder shuts down: it releases the lease instead of letting it run out.
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    assert!(first.hold(&shutdown).await);
    assert!(second.try_acquire().await.unwrap(), "a released lease is taken at once");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let server = ApiServer::new();
    let short = LeaderElection::new(server.client(), "default", "cellplane", "replica-a", Duration::from_secs(1));
    let other = LeaderElection::new(server.client(), "default", "cellplane", "replica-b", Duration::from_secs(1));
    assert!(short.try_acquire().await.unwrap());
    assert!(!other.try_acquire().await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !other.try_acquire().await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "the expired lease was never taken over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!short.try_acquire().await.unwrap(), "the old holder lost it");
}
