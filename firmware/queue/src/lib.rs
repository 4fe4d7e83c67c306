//! portcullis-queue: the durable spool and the queue state.
//!
//! This crate is the "nothing lost" guarantee: a message is acknowledged with SMTP 250 only after
//! [`Queue::commit`] returns Ok, and from then on a crash, kill -9, power cut or full disk can
//! delay it but never lose it. See README.md for the on-disk layout and the crash-safety argument.
//!
//! - [`Queue`]: drafts, the commit point (with group commit of directory fsyncs), per-message
//!   state in sled, hold/release/delete, and reconciliation at start-up ([`Recovery`]).
//! - [`Tracking`]: the best-effort message-tracking log for search and reports.

#![warn(missing_docs)]

mod cache;
mod draft;
mod entry;
mod envelope;
mod error;
mod id;
mod log;
mod queue;
mod recovery;
mod schedule;
mod spool;
mod tracking;
mod writer;

pub use draft::Draft;
pub use entry::{QueueEntry, QueueKind, RecipientState, RecipientStatus};
pub use envelope::{ClientInfo, Envelope};
pub use error::QueueError;
pub use id::{InvalidQueueId, QueueId};
pub use queue::{Queue, QueueConfig, QueueCounts, Recovery};
pub use tracking::{MessageRecord, Outcome, SessionRecord, TrackEvent, Tracking};
