//! The gateway's side of an inbound SMTP session: relay decisions, spooling, the commit point
//! and the place where scanning plugs in before the `250`.

use std::sync::Arc;

use chrono::Utc;
use portcullis_queue as queue;
use portcullis_smtp::{
    BodyType, Envelope, MailHandler, MailParams, Path, Reply, SessionEnd, SessionInfo, SessionStats,
};
use tokio::io::AsyncWriteExt;

use crate::alerts::{Alert, AlertKind};
use crate::disposition::{self, Applied};
use crate::scan::Inspection;
use crate::state::Shared;

/// Implements the SMTP server's hooks on top of the queue.
pub struct Inbound {
    shared: Arc<Shared>,
}

impl Inbound {
    /// A handler sharing the gateway's state.
    pub fn new(shared: Arc<Shared>) -> Inbound {
        Inbound { shared }
    }
}

impl MailHandler for Inbound {
    type Body = queue::Draft;

    async fn connect(&self, _session: &SessionInfo) -> Result<(), Reply> {
        Ok(())
    }

    async fn mail_from(
        &self,
        session: &SessionInfo,
        from: &Path,
        _params: &MailParams,
    ) -> Result<(), Reply> {
        if self.shared.switches.rejecting_incoming() {
            tracing::info!(session_id = session.id, client_ip = %session.peer.ip(), "refused MAIL: incoming mail is switched off");
            return Err(Reply::new(
                450,
                "4.3.2",
                "not accepting mail right now, try later",
            ));
        }
        if self.shared.switches.disk_floor() {
            tracing::warn!(session_id = session.id, client_ip = %session.peer.ip(), "refused MAIL: disk space below the floor");
            return Err(Reply::new(
                452,
                "4.3.1",
                "insufficient system storage, try again later",
            ));
        }
        if from.source_route {
            return Err(Reply::new(553, "5.1.7", "source routes are not accepted"));
        }
        if !from.address.is_empty() {
            let snap = self.shared.snapshot();
            snap.relay.check_address(&from.address)?;
        }
        Ok(())
    }

    async fn rcpt_to(
        &self,
        session: &SessionInfo,
        _envelope: &Envelope,
        rcpt: &Path,
    ) -> Result<(), Reply> {
        if rcpt.source_route {
            return Err(Reply::new(553, "5.1.3", "source routes are not accepted"));
        }
        let snap = self.shared.snapshot();
        let decision = snap.relay.check_recipient(session.peer.ip(), &rcpt.address);
        if let Err(reply) = &decision {
            tracing::info!(session_id = session.id, client_ip = %session.peer.ip(), rcpt = %rcpt.address, reply = %reply, "recipient refused");
            if reply.code == 554 {
                self.shared.alert(Alert::new(
                    AlertKind::UnauthorizedAccess,
                    session.peer.ip().to_string(),
                    format!(
                        "relay attempt from {} to <{}>",
                        session.peer.ip(),
                        rcpt.address
                    ),
                    format!("HELO: {}", session.helo.as_deref().unwrap_or("none")),
                ));
            }
        }
        decision
    }

    async fn begin_body(
        &self,
        session: &SessionInfo,
        envelope: &Envelope,
    ) -> Result<queue::Draft, Reply> {
        let snap = self.shared.snapshot();
        let stored = queue::Envelope {
            sender: envelope.mail_from.address.clone(),
            recipients: envelope.rcpt_to.iter().map(|p| p.address.clone()).collect(),
            smtputf8: envelope.params.smtputf8,
            eight_bit: matches!(envelope.params.body, Some(BodyType::EightBitMime)),
            received_at: Utc::now(),
            client: Some(queue::ClientInfo {
                ip: session.peer.ip(),
                helo: session.helo.clone(),
                tls: session
                    .tls
                    .as_ref()
                    .map(|t| format!("{} {}", t.protocol, t.cipher)),
                session_id: session.id,
            }),
        };
        let mut draft = self
            .shared
            .queue
            .draft(stored)
            .map_err(|e| storage_reply(&e))?;
        let header = received_header(
            &snap.config.server.hostname,
            session,
            envelope,
            &draft.id().to_string(),
        );
        if let Err(e) = draft.write_all(header.as_bytes()).await {
            tracing::error!(session_id = session.id, error = %e, "cannot write to the spool");
            self.shared.queue.discard(draft).await;
            return Err(Reply::new(
                451,
                "4.3.0",
                "local error writing the message, try again later",
            ));
        }
        Ok(draft)
    }

    async fn end_body(
        &self,
        session: &SessionInfo,
        _envelope: &Envelope,
        body: queue::Draft,
    ) -> Reply {
        let id = body.id().clone();
        // Claimed before the commit, so the scheduler never sees the message unclaimed and
        // unscanned while this session is still deciding about it.
        self.shared.scan.claim(&id);
        let entry = match self.shared.queue.commit(body).await {
            Ok(entry) => entry,
            Err(e) => {
                self.shared.scan.unclaim(&id);
                tracing::error!(session_id = session.id, queue_id = %id, error = %e, "commit failed; message not accepted");
                return storage_reply(&e);
            }
        };
        // The queue started the tracking record at commit, with the client, HELO and TLS from the
        // envelope: nothing more to write here on the hot path.
        self.shared.metrics.messages_received.inc();
        let reply = self.scan_and_dispose(session, &entry).await;
        self.shared.scan.unclaim(&id);
        self.shared.queue.notify_new().notify_one();
        reply
    }

    async fn abort_body(&self, session: &SessionInfo, body: queue::Draft) {
        tracing::debug!(session_id = session.id, queue_id = %body.id(), "message body discarded");
        self.shared.queue.discard(body).await;
    }

    async fn session_closed(&self, session: &SessionInfo, stats: &SessionStats) {
        let end = match stats.end {
            SessionEnd::Quit => "quit",
            SessionEnd::ClientClosed => "client-closed",
            SessionEnd::Timeout => "timeout",
            SessionEnd::TooManyErrors => "too-many-errors",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::ProtocolViolation(_) => "protocol-violation",
            SessionEnd::IoError(_) => "io-error",
            SessionEnd::RefusedAtConnect => "refused-at-connect",
        };
        self.shared
            .metrics
            .sessions
            .get_or_create(&vec![("end", end)])
            .inc();
        if matches!(
            stats.end,
            SessionEnd::ProtocolViolation(_) | SessionEnd::TooManyErrors
        ) {
            self.shared.alert(Alert::new(
                AlertKind::SmtpProtocolViolation,
                session.peer.ip().to_string(),
                format!(
                    "SMTP protocol violation by {}: {}",
                    session.peer.ip(),
                    stats.end
                ),
                format!(
                    "HELO: {}\nerrors: {}",
                    session.helo.as_deref().unwrap_or("none"),
                    stats.errors
                ),
            ));
        }
        let started = chrono::DateTime::<Utc>::from(session.started);
        self.shared
            .queue
            .tracking()
            .record_session(&queue::SessionRecord {
                session_id: session.id,
                started,
                ended: Utc::now(),
                client_ip: session.peer.ip(),
                helo: session.helo.clone(),
                tls: session
                    .tls
                    .as_ref()
                    .map(|t| format!("{} {}", t.protocol, t.cipher)),
                messages: stats.messages_accepted,
                rejected: stats.messages_rejected + stats.recipients_rejected,
                end: stats.end.to_string(),
            });
    }
}

impl Inbound {
    /// The scan stage between the commit and the `250`: a verdict known within the budget is
    /// applied here (a reject becomes the session's reply); otherwise the scheduler scans the
    /// message after queueing.
    async fn scan_and_dispose(&self, session: &SessionInfo, entry: &queue::QueueEntry) -> Reply {
        let queued = Reply::new(250, "2.0.0", format!("Ok: queued as {}", entry.id));
        let snap = self.shared.snapshot();
        let budget = snap.config.queue.scan_budget;
        let verdict = match self
            .shared
            .scan
            .inspect_within(snap, &self.shared.queue, budget, entry)
            .await
        {
            Inspection::Verdict(v) => v,
            Inspection::Deferred => {
                self.shared
                    .metrics
                    .verdicts
                    .get_or_create(&vec![("verdict", "scan-after-queueing")])
                    .inc();
                tracing::info!(queue_id = %entry.id, session_id = session.id, "scan budget used up; the message is scanned after queueing");
                return queued;
            }
            Inspection::Failed(e) => {
                self.shared
                    .metrics
                    .verdicts
                    .get_or_create(&vec![("verdict", "error")])
                    .inc();
                tracing::error!(queue_id = %entry.id, session_id = session.id, error = %e, "scan failed; the message is scanned after queueing");
                return queued;
            }
        };
        match disposition::apply(&self.shared, entry, &verdict, true).await {
            Ok(Applied::Rejected {
                code,
                enhanced,
                text,
            }) => {
                tracing::info!(queue_id = %entry.id, session_id = session.id, client_ip = %session.peer.ip(), code, reply = %text, "message refused after scanning");
                Reply::new(code, enhanced, text)
            }
            Ok(Applied::Queued(id)) => Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
            Ok(Applied::Held | Applied::Quarantined | Applied::Dropped) => queued,
            Err(e) => {
                // The message is safely queued and still unscanned: the scheduler retries.
                tracing::error!(queue_id = %entry.id, session_id = session.id, error = %e, "cannot apply the scan verdict; the message is scanned again after queueing");
                queued
            }
        }
    }
}

/// Maps a storage failure to a reply that makes the client keep the message and retry.
fn storage_reply(e: &queue::QueueError) -> Reply {
    if e.is_disk_full() {
        Reply::new(452, "4.3.1", "insufficient system storage, try again later")
    } else {
        Reply::new(451, "4.3.0", "local error in processing, try again later")
    }
}

/// The trace header we prepend (RFC 5321 §4.4), with the protocol keyword of RFC 3848.
fn received_header(
    hostname: &str,
    session: &SessionInfo,
    envelope: &Envelope,
    queue_id: &str,
) -> String {
    let helo = session.helo.as_deref().unwrap_or("unknown");
    let protocol = match (
        envelope.params.smtputf8,
        session.esmtp,
        session.tls.is_some(),
    ) {
        (true, _, true) => "UTF8SMTPS",
        (true, _, false) => "UTF8SMTP",
        (false, true, true) => "ESMTPS",
        (false, true, false) => "ESMTP",
        (false, false, _) => "SMTP",
    };
    let mut h = format!(
        "Received: from {helo} ([{}])\r\n\tby {hostname} (Portcullis) with {protocol} id {queue_id}",
        session.peer.ip()
    );
    if let Some(tls) = &session.tls {
        h.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            tls.protocol, tls.cipher
        ));
    }
    if let [only] = envelope.rcpt_to.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", Utc::now().to_rfc2822()));
    h
}
