//! Which backend answers: the module when the server has it, the script otherwise, detected at
//! connect, after every failure and every `redetect_interval`.

use super::connection::Connection;
use super::{mode_backend, RedisStore, Request, MODULE, SCRIPT, UNKNOWN};
use crate::decision::{Backend, Decision};
use crate::error::Error;
use crate::module;
use std::sync::atomic::Ordering;
use tracing::{debug, info, warn};

impl RedisStore {
    pub(super) async fn remote_decide(
        &self,
        conn: &mut Connection,
        key: &str,
        limit: &ratelimit_core::Limit,
        request: Request,
    ) -> Result<Decision, Error> {
        if self.current_backend(conn).await? == Backend::Module {
            let reply = match request {
                Request::Check { cost, dry_run } => {
                    module::check(conn, key, limit, cost, dry_run).await
                }
                Request::Quota => module::quota(conn, key, limit).await,
            };
            match reply.map_err(Error::from) {
                Err(error) if error.is_unknown_command() => self.module_vanished(),
                other => return other.map(|d| Decision::from_core(d, Backend::Module)),
            }
        }
        let decision = match request {
            Request::Check { cost, dry_run } => {
                self.inner
                    .script
                    .check(conn, key, limit, cost, dry_run)
                    .await?
            }
            Request::Quota => self.inner.script.quota(conn, key, limit, 1).await?,
        };
        Ok(Decision::from_core(decision, Backend::Script))
    }

    pub(super) async fn remote_reset(
        &self,
        conn: &mut Connection,
        key: &str,
    ) -> Result<bool, Error> {
        if self.current_backend(conn).await? == Backend::Module {
            match module::reset(conn, key).await.map_err(Error::from) {
                Err(error) if error.is_unknown_command() => self.module_vanished(),
                other => return other,
            }
        }
        Ok(self.inner.script.reset(conn, key).await?)
    }

    /// The backend to use now: the known one, or a fresh detection when none is known or the
    /// re-detection is due (one caller re-detects; the others go on with the known one).
    pub(super) async fn current_backend(&self, conn: &mut Connection) -> Result<Backend, Error> {
        let inner = &self.inner;
        if let Some(backend) = mode_backend(inner.mode.load(Ordering::Acquire)) {
            let now = self.elapsed_ms();
            let due = inner.next_detect_ms.load(Ordering::Acquire);
            let claimed = now >= due
                && inner
                    .next_detect_ms
                    .compare_exchange(
                        due,
                        now + self.redetect_ms(),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
            if !claimed {
                return Ok(backend);
            }
        }
        self.detect(conn).await
    }

    /// Asks the server whether the module is loaded, and records the answer. A server that
    /// refuses `COMMAND INFO` (renamed, or denied by an ACL) gets the script.
    pub(super) async fn detect(&self, conn: &mut Connection) -> Result<Backend, Error> {
        let loaded = match module::detect(conn).await.map_err(Error::from) {
            Ok(loaded) => loaded,
            Err(error) if error.is_outage() => return Err(error),
            Err(error) => {
                debug!(error = %error, "COMMAND INFO failed: using the Lua script");
                false
            }
        };
        let backend = if loaded {
            Backend::Module
        } else {
            Backend::Script
        };
        self.set_backend(backend);
        Ok(backend)
    }

    /// The module's command answered "unknown command": use the script from now on, until the
    /// next re-detection.
    pub(super) fn module_vanished(&self) {
        warn!(
            url = %self.inner.masked_url,
            "the ratelimit module is no longer loaded in Redis: using the Lua script"
        );
        self.set_backend(Backend::Script);
    }

    pub(super) fn set_backend(&self, backend: Backend) {
        let inner = &self.inner;
        let mode = match backend {
            Backend::Module => MODULE,
            _ => SCRIPT,
        };
        inner.mode.store(mode, Ordering::Release);
        inner
            .next_detect_ms
            .store(self.elapsed_ms() + self.redetect_ms(), Ordering::Release);
        let previous = inner.last_mode.swap(mode, Ordering::AcqRel);
        if previous != mode && previous != UNKNOWN {
            info!(url = %inner.masked_url, backend = %backend, "rate limiting backend changed");
        }
    }

    pub(super) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn redetect_ms(&self) -> u64 {
        u64::try_from(self.inner.config.redetect_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}
