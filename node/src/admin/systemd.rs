//! systemd integration for `Type=notify` units: `READY=1` once the
//! listeners are bound and the pipelines serve, `RELOADING=1` and
//! `READY=1` around a reload, `STOPPING=1` when the node drains, and
//! `WATCHDOG=1` every half `WatchdogSec` while no data thread is stuck
//! ([`crate::supervisor::pulse`]). The pings come from the async runtime,
//! so a wedged runtime stops them too.
//!
//! Without `$NOTIFY_SOCKET` (not run by systemd) all of this does nothing.
//! Messages go out on a thread of their own, in order, so async code never
//! waits on the socket.

use crate::supervisor::pulse::{self, STUCK_AFTER};
use sd_notify::NotifyState;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the node tells systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
}

/// The node's link to systemd. Cheap to clone.
#[derive(Clone, Default)]
pub struct Systemd {
    tx: Option<mpsc::Sender<State>>,
}

impl Systemd {
    /// Connects to `$NOTIFY_SOCKET`, if systemd gave one.
    pub fn from_env() -> Systemd {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Systemd::default();
        }
        let (tx, rx) = mpsc::channel::<State>();
        let spawned = std::thread::Builder::new().name("systemd-notify".into()).spawn(move || {
            let mut warned = false;
            for state in rx {
                let result = match state {
                    State::Ready => sd_notify::notify(&[NotifyState::Ready]),
                    // systemd 253+ wants the monotonic time of the reload.
                    State::Reloading => match NotifyState::monotonic_usec_now() {
                        Ok(now) => sd_notify::notify(&[NotifyState::Reloading, now]),
                        Err(_) => sd_notify::notify(&[NotifyState::Reloading]),
                    },
                    State::Stopping => sd_notify::notify(&[NotifyState::Stopping]),
                    State::Watchdog => sd_notify::notify(&[NotifyState::Watchdog]),
                };
                if let Err(e) = result
                    && !std::mem::replace(&mut warned, true)
                {
                    tracing::warn!("cannot notify systemd: {e}");
                }
            }
        });
        match spawned {
            Ok(_) => Systemd { tx: Some(tx) },
            Err(e) => {
                tracing::warn!("systemd notifications off: cannot start their thread: {e}");
                Systemd::default()
            }
        }
    }

    fn send(&self, state: State) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(state);
        }
    }

    pub fn ready(&self) {
        self.send(State::Ready);
    }

    pub fn reloading(&self) {
        self.send(State::Reloading);
    }

    pub fn stopping(&self) {
        self.send(State::Stopping);
    }

    /// Pings the watchdog every half `$WATCHDOG_USEC` from the current
    /// runtime, skipping pings while a data thread is stuck. `None` when
    /// systemd set no watchdog.
    pub fn watchdog(&self) -> Option<tokio::task::JoinHandle<()>> {
        let every = sd_notify::watchdog_enabled()? / 2;
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            let mut was_stuck = false;
            loop {
                ticks.tick().await;
                let stuck = pulse::stuck(Instant::now(), STUCK_AFTER);
                if stuck.is_empty() {
                    if std::mem::replace(&mut was_stuck, false) {
                        tracing::info!("no thread is stuck any more: pinging the watchdog again");
                    }
                    me.send(State::Watchdog);
                } else if !std::mem::replace(&mut was_stuck, true) {
                    tracing::error!(?stuck, "a data thread is stuck: not pinging the watchdog, so systemd restarts the node");
                }
            }
        }))
    }
}
