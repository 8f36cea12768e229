//! Long cloud operations: a create or delete is started once, then its progress is polled with
//! backoff until it is done or a deadline passes.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::CloudError;

/// Where a long operation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress<T> {
    Ready(T),
    /// Not yet; the reason names the state (`CREATING`, `DELETING`, `operation RUNNING`).
    Pending(String),
}

/// How [`wait_for`] polls.
#[derive(Clone, Copy, Debug)]
pub struct WaitPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    /// After this long still pending, the wait fails transiently (the step retries it later).
    pub timeout: Duration,
}

impl WaitPolicy {
    /// For cloud control planes: EKS and GKE clusters take 10 to 20 minutes.
    pub fn cloud() -> Self {
        WaitPolicy {
            initial: Duration::from_secs(2),
            max_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30 * 60),
        }
    }

    /// For tests against local peers.
    pub fn quick() -> Self {
        WaitPolicy {
            initial: Duration::from_millis(20),
            max_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Polls `poll` until it is ready, doubling the interval up to `policy.max_interval`. Errors
/// of `poll` end the wait (the caller's step decides whether to retry); still pending after
/// `policy.timeout` is a transient error naming what was awaited and its last state.
pub async fn wait_for<T, F, Fut>(what: &str, policy: WaitPolicy, mut poll: F) -> Result<T, CloudError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress<T>, CloudError>>,
{
    let deadline = Instant::now() + policy.timeout;
    let mut interval = policy.initial;
    loop {
        let reason = match poll().await? {
            Progress::Ready(value) => return Ok(value),
            Progress::Pending(reason) => reason,
        };
        tracing::debug!(what, %reason, "waiting");
        if Instant::now() + interval > deadline {
            return Err(CloudError::Transient(format!("{what}: still {reason} after {:?}", policy.timeout)));
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(policy.max_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_until_ready_and_gives_up_at_the_deadline() {
        let mut polls = 0;
        let ready = wait_for("cluster c", WaitPolicy::quick(), || {
            polls += 1;
            let progress = if polls < 4 { Progress::Pending("CREATING".into()) } else { Progress::Ready(polls) };
            async move { Ok(progress) }
        })
        .await;
        assert_eq!(ready, Ok(4));

        let never =
            wait_for("cluster c", WaitPolicy::quick(), || async { Ok(Progress::<()>::Pending("CREATING".into())) })
                .await
                .unwrap_err();
        assert!(never.is_transient());
        assert!(never.to_string().contains("cluster c: still CREATING after 30s"), "{never}");
    }
}
