//! The per-message queue state kept in sled.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::id::QueueId;

/// Which queue a message is in (the names follow Postfix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// Committed and not yet tried.
    Incoming,
    /// Tried at least once; some recipients wait for a retry.
    Deferred,
    /// Not to be delivered until an admin releases it (file in `hold/`).
    Hold,
}

impl QueueKind {
    /// The lowercase name used in JSON, the CLI and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Incoming => "incoming",
            QueueKind::Deferred => "deferred",
            QueueKind::Hold => "hold",
        }
    }
}

/// Where delivery to one recipient stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not tried yet.
    Pending,
    /// Accepted by the next hop (final).
    Delivered {
        /// When the next hop accepted it.
        at: DateTime<Utc>,
        /// The next hop's reply.
        reply: String,
    },
    /// Permanently refused (final; a DSN goes to the sender).
    Bounced {
        /// When it was refused.
        at: DateTime<Utc>,
        /// The reply or reason.
        reply: String,
    },
    /// Temporarily refused; retried later.
    Deferred {
        /// When the last attempt failed.
        at: DateTime<Utc>,
        /// The reply or reason.
        reply: String,
    },
}

impl RecipientStatus {
    /// Delivered or bounced: nothing more will be done for this recipient.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RecipientStatus::Delivered { .. } | RecipientStatus::Bounced { .. }
        )
    }
}

/// One recipient of a queued message and its delivery status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    /// The RCPT TO address.
    pub address: String,
    /// Where delivery to it stands.
    pub status: RecipientStatus,
}

/// The queue's knowledge about one committed message (stored in sled as JSON, keyed by id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The message's queue id (and spool file name).
    pub id: QueueId,
    /// Which queue it is in.
    pub kind: QueueKind,
    /// The envelope as received.
    pub envelope: Envelope,
    /// One state per envelope recipient, same order.
    pub recipients: Vec<RecipientState>,
    /// Size of the message bytes (without the spool header).
    pub size: u64,
    /// The Message-ID header (without angle brackets), if any.
    pub message_id: Option<String>,
    /// The Subject header, decoded, if any.
    pub subject: Option<String>,
    /// Number of completed delivery attempts.
    pub attempts: u32,
    /// Not to be tried before this time.
    pub next_attempt: DateTime<Utc>,
    /// The last temporary error, for `queue list`.
    pub last_error: Option<String>,
    /// A delay DSN has been sent to the sender.
    pub delay_notice_sent: bool,
    /// How many times the process died while delivering this message.
    pub crashes: u32,
    /// A delivery attempt is running (set by `begin_attempt`, cleared by `end_attempt`).
    pub in_flight: bool,
    /// Why the message is on hold (admin reason or "suspect: …").
    pub hold_reason: Option<String>,
    /// The scanning stage has decided about this message (set by [`crate::Queue::mark_scanned`]).
    /// Entries written before scanning existed, and entries rebuilt from a spool file after a
    /// crash, read as `false`, so they are scanned (again) before delivery.
    #[serde(default)]
    pub scanned: bool,
}

impl QueueEntry {
    /// The state of a freshly committed (or rebuilt) message: incoming, every recipient pending, due now.
    pub(crate) fn new(
        id: QueueId,
        envelope: Envelope,
        size: u64,
        message_id: Option<String>,
        subject: Option<String>,
    ) -> QueueEntry {
        let recipients = envelope
            .recipients
            .iter()
            .map(|address| RecipientState {
                address: address.clone(),
                status: RecipientStatus::Pending,
            })
            .collect();
        QueueEntry {
            id,
            kind: QueueKind::Incoming,
            envelope,
            recipients,
            size,
            message_id,
            subject,
            attempts: 0,
            next_attempt: Utc::now(),
            last_error: None,
            delay_notice_sent: false,
            crashes: 0,
            in_flight: false,
            hold_reason: None,
            scanned: false,
        }
    }

    /// Every recipient is delivered or bounced, so the spool file may go.
    pub fn is_done(&self) -> bool {
        self.recipients.iter().all(|r| r.status.is_final())
    }
}
