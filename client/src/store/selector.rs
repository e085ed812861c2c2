//! [`BackendSelector`]: which backend answers in Redis, the module or the Lua script.

use crate::command::{Command, Reply};
use crate::decision::Backend;
use crate::error::Error;
use crate::module;
use crate::script::ScriptBackend;
use redis::aio::ConnectionLike;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The backend is not known: never detected, or Redis failed since.
const UNKNOWN: u8 = 0;
const MODULE: u8 = 1;
const SCRIPT: u8 = 2;

/// Sends each command to the module when the server has it, otherwise to the Lua script of
/// identical meaning.
///
/// The module is detected (`COMMAND INFO ratelimit.check`) on first use, after every outage,
/// and again every `redetect_interval`, so a module loaded later is picked up. A module that
/// vanishes (`ERR unknown command`) sends that command and the next ones to the script at once.
pub(crate) struct BackendSelector {
    script: ScriptBackend,
    /// `UNKNOWN`, `MODULE` or `SCRIPT`.
    mode: AtomicU8,
    /// The last backend detected, to log changes only; never `UNKNOWN` once set.
    last_mode: AtomicU8,
    /// When the module is next detected again, in milliseconds since `started`.
    next_detect_ms: AtomicU64,
    started: Instant,
    redetect_ms: u64,
    /// Where Redis is, with passwords masked, for logs.
    target: String,
}

impl BackendSelector {
    /// A selector that detects again every `redetect_interval` (at least 1 ms).
    pub(crate) fn new(redetect_interval: Duration, target: String) -> BackendSelector {
        BackendSelector {
            script: ScriptBackend::new(),
            mode: AtomicU8::new(UNKNOWN),
            last_mode: AtomicU8::new(UNKNOWN),
            next_detect_ms: AtomicU64::new(0),
            started: Instant::now(),
            redetect_ms: u64::try_from(redetect_interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            target,
        }
    }

    /// The backend in use; `None` before the first detection and after an outage.
    pub(crate) fn current(&self) -> Option<Backend> {
        match self.mode.load(Ordering::Acquire) {
            MODULE => Some(Backend::Module),
            SCRIPT => Some(Backend::Script),
            _ => None,
        }
    }

    /// Forgets the backend after an outage: Redis may come back without the module.
    pub(crate) fn forget(&self) {
        self.mode.store(UNKNOWN, Ordering::Release);
    }

    /// Runs `command` on the backend in use, detecting it first when needed.
    pub(crate) async fn run<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        command: &Command<'_>,
    ) -> Result<(Reply, Backend), Error> {
        if self.backend(conn).await? == Backend::Module {
            match module::run(conn, command).await.map_err(Error::from) {
                Err(error) if error.is_unknown_command() => self.module_vanished(),
                other => return Ok((other?, Backend::Module)),
            }
        }
        let reply = self.script.run(conn, command).await?;
        Ok((reply, Backend::Script))
    }

    /// Asks the server whether the module is loaded, and records the answer. A server that
    /// refuses `COMMAND INFO` (renamed, or denied by an ACL) gets the script.
    pub(crate) async fn detect<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> Result<Backend, Error> {
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
        self.set(backend);
        Ok(backend)
    }

    /// The backend to use now: the known one, or a fresh detection when none is known or the
    /// re-detection is due (one caller re-detects; the others go on with the known one).
    async fn backend<C: ConnectionLike + Send>(&self, conn: &mut C) -> Result<Backend, Error> {
        if let Some(backend) = self.current() {
            let now = self.elapsed_ms();
            let due = self.next_detect_ms.load(Ordering::Acquire);
            let claimed = now >= due
                && self
                    .next_detect_ms
                    .compare_exchange(
                        due,
                        now.saturating_add(self.redetect_ms),
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

    /// The module's command answered "unknown command": the script from now on, until the
    /// next detection.
    fn module_vanished(&self) {
        warn!(
            url = %self.target,
            "the ratelimit module is no longer loaded in Redis: using the Lua script"
        );
        self.set(Backend::Script);
    }

    fn set(&self, backend: Backend) {
        let mode = match backend {
            Backend::Module => MODULE,
            _ => SCRIPT,
        };
        self.mode.store(mode, Ordering::Release);
        self.next_detect_ms.store(
            self.elapsed_ms().saturating_add(self.redetect_ms),
            Ordering::Release,
        );
        let previous = self.last_mode.swap(mode, Ordering::AcqRel);
        if previous != mode && previous != UNKNOWN {
            info!(url = %self.target, backend = %backend, "rate limiting backend changed");
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
