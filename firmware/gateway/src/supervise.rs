//! Supervision: every long-running part of the appliance is a named task with a health state.
//!
//! A part that panics or returns is restarted with backoff and logged; a part that stops making
//! progress (no heartbeat within its deadline) is marked stuck. The watchdogs (systemd's and the
//! hardware one) are fed only while every part is healthy, so a wedged process ends in a restart
//! or a reboot instead of a silent outage. The model is Hubris's supervisor task: parts are
//! named, their failures are counted, and restarting them is policy, not an accident.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so the paused-time tests drive heartbeats and deadlines together.
use tokio::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The shortest and longest wait before restarting a failed part.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A part that ran this long before failing starts its backoff from the beginning again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What a supervised part is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum PartState {
    /// Running and (if it has a deadline) making progress.
    Running,
    /// Running but silent for longer than its deadline.
    Stuck {
        /// Seconds since its last heartbeat.
        silent_for_s: u64,
    },
    /// Failed; waiting to be restarted.
    Restarting {
        /// The failure.
        reason: String,
    },
    /// Stopped on purpose (shutdown).
    Stopped,
}

/// One part's report for `portcullis status`.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    /// The part's name, e.g. `smtp 0.0.0.0:25`.
    pub name: String,
    /// Its state.
    #[serde(flatten)]
    pub state: PartState,
    /// Seconds since its current run started.
    pub uptime_s: u64,
    /// How often it has been restarted.
    pub restarts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

struct Part {
    name: String,
    deadline: Option<Duration>,
    origin: Instant,
    /// Milliseconds since `origin` of the last heartbeat.
    last_beat_ms: AtomicU64,
    restarts: AtomicU32,
    state: Mutex<PartState>,
    run_started: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
}

impl Part {
    fn beat(&self) {
        self.last_beat_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_beat_ms.load(Ordering::Relaxed)))
    }

    fn set(&self, state: PartState) {
        *self.state.lock().expect("part state lock") = state;
    }

    fn state(&self) -> PartState {
        self.state.lock().expect("part state lock").clone()
    }
}

/// Handed to a part so it can report progress.
#[derive(Clone)]
pub struct Heartbeat(Arc<Part>);

impl Heartbeat {
    /// "I am making progress." Cheap enough to call on every loop iteration.
    pub fn beat(&self) {
        self.0.beat();
    }
}

/// Something the supervisor wants the rest of the appliance to know (alerts, logs).
#[derive(Debug, Clone)]
pub enum SupervisionEvent {
    /// A part failed and will be restarted.
    PartFailed {
        /// Which part.
        name: String,
        /// Why.
        reason: String,
    },
    /// A part stopped making progress.
    PartStuck {
        /// Which part.
        name: String,
        /// For how long.
        silent_for: Duration,
    },
    /// A stuck part is making progress again.
    PartRecovered {
        /// Which part.
        name: String,
    },
}

/// The registry of supervised parts.
pub struct Supervisor {
    parts: Mutex<Vec<Arc<Part>>>,
    shutdown: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    events: tokio::sync::mpsc::UnboundedSender<SupervisionEvent>,
}

impl Supervisor {
    /// A supervisor whose parts stop when `shutdown` is cancelled. Events (failures, stuck
    /// parts) are sent to the returned receiver.
    pub fn new(
        shutdown: CancellationToken,
    ) -> (
        Arc<Supervisor>,
        tokio::sync::mpsc::UnboundedReceiver<SupervisionEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Arc::new(Supervisor {
                parts: Mutex::new(Vec::new()),
                shutdown,
                tracker: tokio_util::task::TaskTracker::new(),
                events: tx,
            }),
            rx,
        )
    }

    /// Starts a supervised part. `run` is called for each (re)start with a heartbeat and the
    /// shutdown token; it should run until the token is cancelled. If `deadline` is set, the
    /// part must call `beat()` at least that often or it is reported stuck.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, deadline: Option<Duration>, run: F)
    where
        F: Fn(Heartbeat, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let part = Arc::new(Part {
            name: name.into(),
            deadline,
            origin: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            state: Mutex::new(PartState::Running),
            run_started: Mutex::new(Instant::now()),
            last_error: Mutex::new(None),
        });
        self.parts.lock().expect("parts lock").push(part.clone());
        let shutdown = self.shutdown.clone();
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                part.beat();
                *part.run_started.lock().expect("run lock") = Instant::now();
                part.set(PartState::Running);
                tracing::info!(target: "portcullis_gateway::supervise", part = %part.name, "part started");
                let started = Instant::now();
                let outcome = tokio::spawn(run(Heartbeat(part.clone()), shutdown.clone())).await;
                if shutdown.is_cancelled() {
                    part.set(PartState::Stopped);
                    tracing::info!(target: "portcullis_gateway::supervise", part = %part.name, "part stopped");
                    return;
                }
                let reason = match outcome {
                    Ok(Ok(())) => "exited unexpectedly".to_string(),
                    Ok(Err(e)) => e,
                    Err(join) if join.is_panic() => format!("panicked: {}", panic_message(join.into_panic())),
                    Err(_) => "was cancelled".to_string(),
                };
                part.restarts.fetch_add(1, Ordering::Relaxed);
                *part.last_error.lock().expect("error lock") = Some(reason.clone());
                part.set(PartState::Restarting { reason: reason.clone() });
                if started.elapsed() >= STABLE_AFTER {
                    backoff = BACKOFF_MIN;
                }
                tracing::error!(
                    target: "portcullis_gateway::supervise",
                    part = %part.name,
                    reason = %reason,
                    restart_in_ms = backoff.as_millis() as u64,
                    "part failed; restarting"
                );
                let _ = events.send(SupervisionEvent::PartFailed { name: part.name.clone(), reason });
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        part.set(PartState::Stopped);
                        return;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// Checks every part's heartbeat against its deadline; call periodically. Returns whether
    /// every part is healthy.
    pub fn check(&self) -> bool {
        let parts = self.parts.lock().expect("parts lock").clone();
        let mut healthy = true;
        for part in parts {
            let state = part.state();
            match (&state, part.deadline) {
                (PartState::Running, Some(deadline)) if part.silent_for() > deadline => {
                    let silent_for = part.silent_for();
                    part.set(PartState::Stuck {
                        silent_for_s: silent_for.as_secs(),
                    });
                    *part.last_error.lock().expect("error lock") =
                        Some(format!("no progress for {}s", silent_for.as_secs()));
                    tracing::error!(target: "portcullis_gateway::supervise", part = %part.name, silent_for_s = silent_for.as_secs(), "part is stuck");
                    let _ = self.events.send(SupervisionEvent::PartStuck {
                        name: part.name.clone(),
                        silent_for,
                    });
                    healthy = false;
                }
                (PartState::Stuck { .. }, Some(deadline)) => {
                    if part.silent_for() <= deadline {
                        part.set(PartState::Running);
                        tracing::warn!(target: "portcullis_gateway::supervise", part = %part.name, "stuck part is making progress again");
                        let _ = self.events.send(SupervisionEvent::PartRecovered {
                            name: part.name.clone(),
                        });
                    } else {
                        part.set(PartState::Stuck {
                            silent_for_s: part.silent_for().as_secs(),
                        });
                        healthy = false;
                    }
                }
                (PartState::Running, _) | (PartState::Stopped, _) => {}
                _ => healthy = false,
            }
        }
        healthy
    }

    /// The parts' states for `portcullis status`.
    pub fn report(&self) -> Vec<PartReport> {
        let parts = self.parts.lock().expect("parts lock").clone();
        parts
            .iter()
            .map(|p| PartReport {
                name: p.name.clone(),
                state: p.state(),
                uptime_s: p.run_started.lock().expect("run lock").elapsed().as_secs(),
                restarts: p.restarts.load(Ordering::Relaxed),
                last_error: p.last_error.lock().expect("error lock").clone(),
            })
            .collect()
    }

    /// Waits until every part has stopped (after the shutdown token was cancelled).
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_part_is_restarted_and_counted() {
        let token = CancellationToken::new();
        let (sup, mut events) = Supervisor::new(token.clone());
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        sup.spawn("flaky", None, move |_hb, token| {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                token.cancelled().await;
                Ok(())
            }
        });
        let first = events.recv().await.unwrap();
        assert!(
            matches!(first, SupervisionEvent::PartFailed { ref reason, .. } if reason.contains("boom 0")),
            "{first:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let report = sup.report();
        assert_eq!(report[0].restarts, 2);
        assert_eq!(report[0].state, PartState::Running);
        assert!(report[0].last_error.as_deref().unwrap().contains("boom 1"));
        token.cancel();
        sup.stopped().await;
        assert_eq!(sup.report()[0].state, PartState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_without_heartbeats_is_reported_stuck_and_recovers() {
        let token = CancellationToken::new();
        let (sup, mut events) = Supervisor::new(token.clone());
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = hang.clone();
        sup.spawn("worker", Some(Duration::from_secs(3)), move |hb, token| {
            let h = h.clone();
            async move {
                loop {
                    if !h.load(Ordering::SeqCst) {
                        hb.beat();
                    }
                    tokio::select! {
                        _ = token.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(sup.check(), "healthy within the deadline");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!sup.check(), "silent past the deadline");
        assert!(matches!(
            events.recv().await.unwrap(),
            SupervisionEvent::PartStuck { .. }
        ));
        assert!(matches!(sup.report()[0].state, PartState::Stuck { .. }));
        hang.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(sup.check(), "healthy again once it beats");
        assert!(matches!(
            events.recv().await.unwrap(),
            SupervisionEvent::PartRecovered { .. }
        ));
        token.cancel();
        sup.stopped().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_returns_an_error_is_restarted_with_backoff() {
        let token = CancellationToken::new();
        let (sup, _events) = Supervisor::new(token.clone());
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        sup.spawn("failing", None, move |_hb, _token| {
            r.fetch_add(1, Ordering::SeqCst);
            async { Err("cannot bind".to_string()) }
        });
        // Backoff 1s, 2s, 4s: after 7.5s there were 4 runs.
        tokio::time::sleep(Duration::from_millis(7500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert!(!sup.check());
        token.cancel();
        sup.stopped().await;
    }
}
