//! Fetching the IdP's discovery document and key set ahead of need: at start and after
//! every reload, in the background (start never waits on the IdP), retried with a capped
//! backoff until held. An IdP that cannot be reached is then a log line, a metric and a
//! line in `/readyz` long before the first step-up, not a surprise during an incident.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};

use super::oidc::IdpClient;

/// First retry after a failed attempt; doubled after each failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// A minute between attempts keeps an outage's log readable and the IdP unbothered,
/// while a recovered IdP is noticed soon enough for `/readyz`.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Where the attempts are counted.
#[derive(Clone)]
pub struct Meters {
    pub failures: IntCounter,
    pub ready: IntGauge,
}

/// The delay after `failures` consecutive failed attempts.
pub fn backoff(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX)).min(MAX_RETRY)
}

/// Starts warming `idp` up on the current runtime. The task holds the client weakly and
/// ends once a reload has replaced it ([`IdpClient::retire`]), without touching the
/// metrics its successor's task now keeps. Configured
/// endpoints need no discovery; their keys are fetched at first use.
pub fn spawn(idp: &Arc<IdpClient>, meters: Meters) {
    if !idp.discovers() {
        meters.ready.set(1);
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no runtime to fetch the IdP's discovery document on; it is fetched at first use");
        return;
    };
    meters.ready.set(0);
    let client = Arc::downgrade(idp);
    runtime.spawn(async move {
        let mut failures = 0u32;
        loop {
            let Some(idp) = client.upgrade().filter(|c| !c.is_retired()) else { return };
            let outcome = idp.warm_up().await;
            // Replaced while fetching: the metrics now belong to its successor's task.
            if idp.is_retired() {
                return;
            }
            match outcome {
                Ok(()) => {
                    meters.ready.set(1);
                    if failures > 0 {
                        tracing::info!(attempts = failures + 1, "IdP discovery succeeded");
                    }
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    meters.failures.inc();
                    meters.ready.set(0);
                    tracing::warn!(error = %e, retry_in = ?backoff(failures), "IdP discovery failed; step-ups answer 401 until it succeeds");
                }
            }
            drop(idp);
            tokio::time::sleep(backoff(failures)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
