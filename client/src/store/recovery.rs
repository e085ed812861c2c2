//! The probe that finds Redis back after an outage.
//!
//! While the breaker is open, no request touches Redis. One task per store probes it instead,
//! at each of the breaker's deadlines (100 ms after the outage starts, then doubling up to the
//! breaker's `max_backoff`, 1 s by default), and each probe is a **fresh connection**: a
//! connection manager that failed while Redis was down would answer its stale failure once
//! more after Redis is back, and cost a whole backoff. So the store is back on Redis within
//! one backoff of Redis answering, and the first probe after that succeeds.

use super::connection::{Connection, SharedConnection};
use super::fallback::Fallback;
use super::selector::BackendSelector;
use crate::config::Config;
use crate::decision::Backend;
use crate::error::Error;
use std::sync::{Arc, Weak};

/// The collaborators a probe needs. It holds them weakly: a store that is dropped during an
/// outage stops its probe.
pub(crate) struct Probe {
    config: Arc<Config>,
    connection: Weak<SharedConnection>,
    selector: Weak<BackendSelector>,
    fallback: Weak<Fallback>,
}

impl Probe {
    pub(crate) fn new(
        config: &Arc<Config>,
        connection: &Arc<SharedConnection>,
        selector: &Arc<BackendSelector>,
        fallback: &Arc<Fallback>,
    ) -> Probe {
        Probe {
            config: Arc::clone(config),
            connection: Arc::downgrade(connection),
            selector: Arc::downgrade(selector),
            fallback: Arc::downgrade(fallback),
        }
    }

    /// Probes Redis in the background until it answers, or the store is dropped. The
    /// fallback's outage ends, and is logged, when it answers.
    pub(crate) fn spawn(self) {
        tokio::spawn(async move {
            let _ended = Ended(self.fallback.clone());
            loop {
                let Some(wait) = self.fallback.upgrade().and_then(|f| f.next_probe()) else {
                    return;
                };
                tokio::time::sleep(wait).await;
                let (Some(connection), Some(selector), Some(fallback)) = (
                    self.connection.upgrade(),
                    self.selector.upgrade(),
                    self.fallback.upgrade(),
                ) else {
                    return;
                };
                if !fallback.take_probe_turn() {
                    continue;
                }
                match reconnect(&self.config, &connection, &selector).await {
                    Ok(_) => {
                        // Before the breaker closes: a failure right after must start a new
                        // probe.
                        fallback.probe_ended();
                        fallback.redis_answered();
                        return;
                    }
                    Err(error) => fallback.probe_failed(&error),
                }
            }
        });
    }
}

/// Marks the probe ended however its task ends, even when the runtime drops it.
struct Ended(Weak<Fallback>);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(fallback) = self.0.upgrade() {
            fallback.probe_ended();
        }
    }
}

/// Connects anew, pings, detects the backend, and puts the new connection in use. Fails, with
/// nothing changed, when Redis does not answer within the store's deadline.
pub(crate) async fn reconnect(
    config: &Config,
    connection: &SharedConnection,
    selector: &BackendSelector,
) -> Result<Backend, Error> {
    let deadline = config.call_deadline();
    let attempt = async {
        let mut fresh = Connection::connect(config).await?;
        redis::cmd("PING").query_async::<()>(&mut fresh).await?;
        let backend = selector.detect(&mut fresh).await?;
        connection.replace(fresh);
        Ok(backend)
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or(Err(Error::Timeout(deadline)))
}
