//! The clock durable timers run on. Leases always use the wall clock; workflow time (sleeps,
//! signal timeouts, retry backoff, `ctx.now()`) uses this one, so tests can move it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Resolves once `now_ms() >= deadline`.
    fn sleep_until(&self, deadline: i64) -> BoxFuture<'static, ()>;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        wall_ms()
    }

    fn sleep_until(&self, deadline: i64) -> BoxFuture<'static, ()> {
        let wait = Duration::from_millis((deadline - wall_ms()).max(0) as u64);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to: for tests of week-long bakes.
#[derive(Clone)]
pub struct TestClock {
    now: Arc<AtomicI64>,
    moved: Arc<watch::Sender<i64>>,
}

impl TestClock {
    pub fn starting_at(ms: i64) -> Self {
        TestClock { now: Arc::new(AtomicI64::new(ms)), moved: Arc::new(watch::channel(ms).0) }
    }

    pub fn advance(&self, by: Duration) {
        let now = self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst) + by.as_millis() as i64;
        self.moved.send_replace(now);
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::starting_at(wall_ms())
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline: i64) -> BoxFuture<'static, ()> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, nothing will ever wake us.
            let _ = moved.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_clock_wakes_sleepers_when_advanced_past_their_deadline() {
        let clock = TestClock::starting_at(1_000);
        let sleeper = tokio::spawn(clock.sleep_until(61_000));
        clock.advance(Duration::from_secs(30));
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.expect("woken").expect("joined");
        assert_eq!(clock.now_ms(), 61_000);
    }
}
