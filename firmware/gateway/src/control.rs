//! The admin API: one set of actions, reached by the CLI over a root-only unix socket (and later
//! by the web console), so no action is ever implemented twice.
//!
//! The wire format is one JSON request per line and one JSON response per line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_queue::{QueueEntry, QueueId, QueueKind, RecipientStatus};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::quarantine::{QuarantineError, QuarantineStore};
use crate::state::Shared;
use crate::supervise::Supervisor;

/// An admin action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Request {
    /// List every queued message.
    QueueList,
    /// One message with its tracking record.
    QueueShow {
        /// Queue id.
        id: String,
    },
    /// Move a message to the hold queue.
    QueueHold {
        /// Queue id.
        id: String,
    },
    /// Move a held message back to delivery.
    QueueRelease {
        /// Queue id.
        id: String,
    },
    /// Delete a message (no bounce).
    QueueDelete {
        /// Queue id.
        id: String,
    },
    /// Retry every deferred message now.
    QueueFlush,
    /// Stop outbound delivery (mail keeps being accepted and queued).
    PauseDelivery,
    /// Resume outbound delivery.
    ResumeDelivery,
    /// Answer new mail with 450 (temporary) until accept-incoming.
    RejectIncoming,
    /// Accept new mail again.
    AcceptIncoming,
    /// Short status of the running instance.
    Status,
    /// Change log levels at run time (`smtp=debug,queue=trace`), or reset them to the
    /// configured ones; with neither, report the levels in force.
    LogLevel {
        /// Directives to apply.
        #[serde(default)]
        directives: Option<String>,
        /// Back to the configured levels.
        #[serde(default)]
        reset: bool,
    },
    /// List the quarantined messages.
    QuarantineList,
    /// One quarantined message: its record (envelope, verdict, reasons) and its headers.
    QuarantineShow {
        /// Quarantine id (the queue id it had).
        id: String,
    },
    /// Put a quarantined message back in the queue for delivery, marked scanned.
    QuarantineRelease {
        /// Quarantine id.
        id: String,
    },
    /// Delete a quarantined message for good.
    QuarantineDelete {
        /// Quarantine id.
        id: String,
    },
    /// Try a definitions update now, and wait for its outcome.
    DefinitionsUpdateNow,
    /// The definitions updater's status: installed version, last attempt, next attempt…
    DefinitionsStatus,
    /// Switch back to the previous definitions version (the current one is deleted and never
    /// installed again).
    DefinitionsRollback,
    /// The newest alerts from the alert log.
    Alerts {
        /// How many (default 50).
        #[serde(default)]
        limit: Option<usize>,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// The action was done; `message` says what happened, `data` carries the listing if any.
    Ok {
        /// One line for a human.
        message: String,
        /// Structured data (listing, entry, status).
        #[serde(default)]
        data: serde_json::Value,
    },
    /// The action was refused (unknown id, wrong state…).
    Refused {
        /// Why, for a human.
        message: String,
    },
}

/// A queue entry as the admin sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueView {
    /// Queue id.
    pub id: String,
    /// `incoming`, `deferred` or `hold`.
    pub queue: String,
    /// Envelope sender (empty for the null sender).
    pub sender: String,
    /// Recipients with their state.
    pub recipients: Vec<RecipientView>,
    /// Message size in bytes.
    pub size: u64,
    /// When it arrived (RFC 3339).
    pub arrived: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (RFC 3339).
    pub next_attempt: String,
    /// The last temporary error.
    pub last_error: Option<String>,
    /// Why it is on hold.
    pub hold_reason: Option<String>,
    /// The Message-ID header.
    pub message_id: Option<String>,
    /// The Subject header.
    pub subject: Option<String>,
}

/// One recipient's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientView {
    /// Address.
    pub address: String,
    /// `pending`, `delivered`, `bounced` or `deferred`.
    pub status: String,
    /// The last reply for it, if any.
    pub reply: Option<String>,
}

impl From<&QueueEntry> for QueueView {
    fn from(e: &QueueEntry) -> Self {
        QueueView {
            id: e.id.to_string(),
            queue: match e.kind {
                QueueKind::Incoming => "incoming",
                QueueKind::Deferred => "deferred",
                QueueKind::Hold => "hold",
            }
            .into(),
            sender: e.envelope.sender.clone(),
            recipients: e
                .recipients
                .iter()
                .map(|r| {
                    let (status, reply) = match &r.status {
                        RecipientStatus::Pending => ("pending", None),
                        RecipientStatus::Delivered { reply, .. } => {
                            ("delivered", Some(reply.clone()))
                        }
                        RecipientStatus::Bounced { reply, .. } => ("bounced", Some(reply.clone())),
                        RecipientStatus::Deferred { reply, .. } => {
                            ("deferred", Some(reply.clone()))
                        }
                    };
                    RecipientView {
                        address: r.address.clone(),
                        status: status.into(),
                        reply,
                    }
                })
                .collect(),
            size: e.size,
            arrived: e.envelope.received_at.to_rfc3339(),
            attempts: e.attempts,
            next_attempt: e.next_attempt.to_rfc3339(),
            last_error: e.last_error.clone(),
            hold_reason: e.hold_reason.clone(),
            message_id: e.message_id.clone(),
            subject: e.subject.clone(),
        }
    }
}

/// Carries out admin actions against the shared state.
pub struct Control {
    shared: Arc<Shared>,
    supervisor: Arc<Supervisor>,
}

impl Control {
    /// The admin API over the running gateway.
    pub fn new(shared: Arc<Shared>, supervisor: Arc<Supervisor>) -> Control {
        Control { shared, supervisor }
    }

    /// Carries out one request.
    pub async fn handle(&self, request: Request) -> Response {
        let q = &self.shared.queue;
        let ok = |message: String| Response::Ok {
            message,
            data: serde_json::Value::Null,
        };
        let parse = |id: &str| -> Result<QueueId, Response> {
            id.parse::<QueueId>().map_err(|_| Response::Refused {
                message: format!("no message with queue id {id}"),
            })
        };
        macro_rules! id_or_refuse {
            ($id:expr) => {
                match parse($id) {
                    Ok(id) => id,
                    Err(r) => return r,
                }
            };
        }
        let missing = |id: &str| Response::Refused {
            message: format!("no message with queue id {id}"),
        };
        tracing::info!(target: "control", ?request, "admin action");
        match request {
            Request::QueueList => {
                let views: Vec<QueueView> = q.list().iter().map(QueueView::from).collect();
                Response::Ok {
                    message: format!("{} message(s)", views.len()),
                    data: serde_json::to_value(views).unwrap_or_default(),
                }
            }
            Request::QueueShow { id } => {
                let qid = id_or_refuse!(&id);
                let Some(entry) = q.get(&qid) else {
                    return missing(&id);
                };
                let tracking = q.tracking().get(&qid);
                Response::Ok {
                    message: String::new(),
                    data: serde_json::json!({ "entry": QueueView::from(&entry), "tracking": tracking }),
                }
            }
            Request::QueueHold { id } => {
                let qid = id_or_refuse!(&id);
                if q.get(&qid).is_none() {
                    return missing(&id);
                }
                match q.hold(&qid, "held by the administrator").await {
                    Ok(()) => {
                        self.shared.metrics.messages_held.inc();
                        ok(format!("{id} is on hold"))
                    }
                    Err(e) => Response::Refused {
                        message: format!("{id}: {e}"),
                    },
                }
            }
            Request::QueueRelease { id } => {
                let qid = id_or_refuse!(&id);
                if q.get(&qid).is_none() {
                    return missing(&id);
                }
                match crate::disposition::release_held(&self.shared, &qid).await {
                    Ok(delivered_as) => {
                        q.notify_new().notify_one();
                        if delivered_as == qid {
                            ok(format!("{id} released for delivery"))
                        } else {
                            ok(format!(
                                "{id} released for delivery as {delivered_as} (disclaimer added)"
                            ))
                        }
                    }
                    Err(e) => Response::Refused {
                        message: format!("{id}: {e}"),
                    },
                }
            }
            Request::QueueDelete { id } => {
                let qid = id_or_refuse!(&id);
                if q.get(&qid).is_none() {
                    return missing(&id);
                }
                match q.delete(&qid).await {
                    Ok(()) => ok(format!("{id} deleted")),
                    Err(e) => Response::Refused {
                        message: format!("{id}: {e}"),
                    },
                }
            }
            Request::QueueFlush => {
                let n = q.retry_all_now();
                q.notify_new().notify_one();
                ok(format!(
                    "{n} deferred message(s) scheduled for immediate retry"
                ))
            }
            Request::PauseDelivery => {
                self.shared.switches.set_delivery_paused(true);
                ok("delivery paused; mail is still accepted and queued".into())
            }
            Request::ResumeDelivery => {
                self.shared.switches.set_delivery_paused(false);
                q.notify_new().notify_one();
                ok("delivery resumed".into())
            }
            Request::RejectIncoming => {
                self.shared.switches.set_rejecting_incoming(true);
                ok("new mail is now refused with 450 4.3.2".into())
            }
            Request::AcceptIncoming => {
                self.shared.switches.set_rejecting_incoming(false);
                ok("new mail is accepted again".into())
            }
            Request::Status => {
                let counts = q.counts();
                let sw = &self.shared.switches;
                let parts = self.supervisor.report();
                let healthy = parts
                    .iter()
                    .all(|p| matches!(p.state, crate::supervise::PartState::Running));
                let last_error = self.shared.alerter.recent(1).into_iter().next();
                Response::Ok {
                    message: String::new(),
                    data: serde_json::json!({
                        "healthy": healthy,
                        "uptime_seconds": self.shared.started.elapsed().as_secs(),
                        "version": env!("CARGO_PKG_VERSION"),
                        "parts": parts,
                        "queues": { "incoming": counts.incoming, "deferred": counts.deferred, "hold": counts.hold },
                        "delivery_paused": sw.delivery_paused(),
                        "rejecting_incoming": sw.rejecting_incoming(),
                        "disk_floor": sw.disk_floor(),
                        "definitions": self.definitions_summary(),
                        "last_alert": last_error,
                    }),
                }
            }
            Request::LogLevel { directives, reset } => {
                let Some(log) = &self.shared.log else {
                    return Response::Refused {
                        message: "logging is not managed by this process".into(),
                    };
                };
                let result = match (directives, reset) {
                    (_, true) => log.reset_levels(),
                    (Some(d), false) => log.set_levels(&d),
                    (None, false) => Ok(()),
                };
                match result {
                    Ok(()) => ok(format!("log levels: {}", log.levels())),
                    Err(e) => Response::Refused {
                        message: e.to_string(),
                    },
                }
            }
            Request::QuarantineList => {
                let store = self.quarantine();
                match tokio::task::spawn_blocking(move || store.list()).await {
                    Ok(Ok(records)) => Response::Ok {
                        message: format!("{} quarantined message(s)", records.len()),
                        data: serde_json::to_value(records).unwrap_or_default(),
                    },
                    Ok(Err(e)) => Response::Refused {
                        message: e.to_string(),
                    },
                    Err(e) => Response::Refused {
                        message: format!("internal error: {e}"),
                    },
                }
            }
            Request::QuarantineShow { id } => {
                let store = self.quarantine();
                let shown = tokio::task::spawn_blocking(move || -> Result<_, QuarantineError> {
                    let record = store.get(&id)?;
                    let raw = store.read_message(&id)?;
                    let end = raw
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|p| p + 2)
                        .unwrap_or(raw.len());
                    Ok((record, String::from_utf8_lossy(&raw[..end]).to_string()))
                })
                .await;
                match shown {
                    Ok(Ok((record, headers))) => Response::Ok {
                        message: String::new(),
                        data: serde_json::json!({ "record": record, "headers": headers }),
                    },
                    Ok(Err(e)) => Response::Refused {
                        message: e.to_string(),
                    },
                    Err(e) => Response::Refused {
                        message: format!("internal error: {e}"),
                    },
                }
            }
            Request::QuarantineRelease { id } => match self.release_from_quarantine(&id).await {
                Ok(queue_id) => ok(format!("{id} released for delivery as {queue_id}")),
                Err(message) => Response::Refused { message },
            },
            Request::QuarantineDelete { id } => {
                let store = self.quarantine();
                let name = id.clone();
                match tokio::task::spawn_blocking(move || store.delete(&name)).await {
                    Ok(Ok(())) => {
                        tracing::info!(quarantine_id = %id, "quarantined message deleted");
                        ok(format!("{id} deleted from quarantine"))
                    }
                    Ok(Err(e)) => Response::Refused {
                        message: e.to_string(),
                    },
                    Err(e) => Response::Refused {
                        message: format!("internal error: {e}"),
                    },
                }
            }
            Request::DefinitionsUpdateNow => {
                let Some(updater) = self.shared.definitions.get() else {
                    return not_running_updater();
                };
                match updater.update_now().await {
                    outcome @ (crate::definitions::UpdateOutcome::Failed(_)
                    | crate::definitions::UpdateOutcome::Disabled(_)) => Response::Refused {
                        message: outcome.describe(),
                    },
                    outcome => Response::Ok {
                        message: outcome.describe(),
                        data: serde_json::to_value(updater.status()).unwrap_or_default(),
                    },
                }
            }
            Request::DefinitionsStatus => {
                let Some(updater) = self.shared.definitions.get() else {
                    return not_running_updater();
                };
                let status = updater.status();
                Response::Ok {
                    message: String::new(),
                    data: serde_json::to_value(status).unwrap_or_default(),
                }
            }
            Request::DefinitionsRollback => {
                let Some(updater) = self.shared.definitions.get() else {
                    return not_running_updater();
                };
                match updater.roll_back("rolled back by the administrator").await {
                    Ok(line) => ok(line),
                    Err(message) => Response::Refused { message },
                }
            }
            Request::Alerts { limit } => {
                let alerts = self.shared.alerter.recent(limit.unwrap_or(50));
                Response::Ok {
                    message: format!("{} alert(s)", alerts.len()),
                    data: serde_json::to_value(alerts).unwrap_or_default(),
                }
            }
        }
    }

    /// The installed definitions for `portcullis status`; `null` when none are installed.
    fn definitions_summary(&self) -> serde_json::Value {
        let Some(status) = self.shared.definitions.get().map(|u| u.status()) else {
            return serde_json::Value::Null;
        };
        match status.installed {
            Some(v) => serde_json::json!({
                "version": v.version,
                "created": v.created,
                "expires": v.expires,
                "signatures": status.signatures,
                "updates": if status.enabled { "enabled" } else { "disabled" },
                "last_error": status.last_error,
            }),
            None => serde_json::Value::Null,
        }
    }

    fn quarantine(&self) -> QuarantineStore {
        QuarantineStore::new(&self.shared.snapshot().config.quarantine_dir())
    }

    /// Queues a quarantined message again with its original envelope, marked scanned (the
    /// admin has decided), then removes it from the quarantine. A crash in between leaves it in
    /// both places (a second release would deliver it twice), never in neither.
    async fn release_from_quarantine(&self, id: &str) -> Result<String, String> {
        let store = self.quarantine();
        let name = id.to_string();
        let (record, raw) = tokio::task::spawn_blocking(move || -> Result<_, QuarantineError> {
            Ok((store.get(&name)?, store.read_message(&name)?))
        })
        .await
        .map_err(|e| format!("internal error: {e}"))?
        .map_err(|e| e.to_string())?;
        let q = &self.shared.queue;
        // A fresh arrival time: the lifetime limit counts from the release, not from the
        // original arrival (the quarantine record keeps that).
        let mut envelope = record.envelope.clone();
        envelope.received_at = chrono::Utc::now();
        // Claimed while committed and marked scanned, so the scheduler cannot scan the released
        // copy in between and quarantine it again.
        // Released mail skips the scan, and with it the step that adds the disclaimer.
        let (raw, _) = crate::disposition::with_outbound_disclaimer(
            &self.shared,
            &record.id.parse().map_err(|e| format!("{id}: {e}"))?,
            &envelope,
            raw,
        )
        .await?;
        let entry = crate::disposition::queue_scanned(&self.shared, envelope, &raw).await?;
        // The queue started the tracking record at commit; say where this copy came from.
        q.tracking().event(
            &entry.id,
            portcullis_queue::TrackEvent::now(
                "released",
                None,
                format!("released from quarantine (was {id})"),
            ),
        );
        let store = self.quarantine();
        let name = id.to_string();
        match tokio::task::spawn_blocking(move || store.delete(&name)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(quarantine_id = %id, error = %e, "released message could not be removed from the quarantine")
            }
            Err(e) => {
                tracing::error!(quarantine_id = %id, error = %e, "released message could not be removed from the quarantine")
            }
        }
        tracing::info!(quarantine_id = %id, queue_id = %entry.id, "message released from quarantine");
        q.notify_new().notify_one();
        Ok(entry.id.to_string())
    }

    /// Serves the control socket until `shutdown`. The socket is created mode 0600: only the
    /// user running the appliance (root on the box) may act on the queue.
    pub async fn serve(
        self: Arc<Self>,
        path: PathBuf,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let _ = std::fs::remove_file(&path);
        let listener = {
            // Create it private from the start, not chmod afterwards, so there is no window.
            let old = unsafe { libc::umask(0o077) };
            let l = UnixListener::bind(&path);
            unsafe { libc::umask(old) };
            l?
        };
        tracing::info!(socket = %path.display(), "control socket listening");
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                s = listener.accept() => match s {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                },
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.session(stream).await {
                    tracing::debug!(error = %e, "control session ended with an error");
                }
            });
        }
        let _ = std::fs::remove_file(&path);
        Ok(())
    }

    async fn session(&self, stream: UnixStream) -> std::io::Result<()> {
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        while let Some(line) = lines.next_line().await? {
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(req).await,
                Err(e) => Response::Refused {
                    message: format!("malformed request: {e}"),
                },
            };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            w.write_all(&out).await?;
        }
        Ok(())
    }
}

fn not_running_updater() -> Response {
    Response::Refused {
        message: "the definitions updater is not running in this process".into(),
    }
}

/// Why the CLI could not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon is listening on the socket.
    #[error(
        "portcullis is not running: no control socket at {0} (start it with `portcullis run`, or pass the same --data-dir)"
    )]
    NotRunning(PathBuf),
    /// Talking to it failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It answered something we cannot read.
    #[error("unreadable answer from the daemon: {0}")]
    Protocol(String),
}

/// Sends one request to the daemon at `socket` and returns its answer.
pub async fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(socket.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await.map_err(io)?;
    w.shutdown().await.map_err(io)?;
    let mut reader = BufReader::new(r);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::Protocol(
            "the daemon closed the connection without answering".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))
}
