//! Message decomposition and content filtering for Portcullis.
//!
//! A message is taken apart once by [`decompose`]: MIME parts (nested multiparts and attached messages) and the
//! members of containers (zip, gzip, bzip2, xz, tar, 7z), each as a [`Part`] with its decoded bytes, its true
//! type found from its content and, where it is text, its text. Every scanner (antivirus, content rules, file
//! names, spam) reads the same [`Decomposition`]. Everything is bounded by [`Limits`]; whatever could not be
//! inspected is reported as a [`Finding`] that names the limit and the part.
//!
//! A [`Policy`] (serde config) is compiled once into a [`CompiledPolicy`]; [`CompiledPolicy::evaluate`] turns a
//! decomposition into a [`Verdict`]: one decisive [`Action`] and the [`Reason`]s behind it, each explainable to
//! an admin in one line.

#![warn(missing_docs)]

mod content;
mod decompose;
mod disclaimer;
mod error;
mod filetype;
mod finding;
mod limits;
mod mbox;
mod mime_text;
mod notify;
mod part;
mod policy;
mod wildcard;

pub use content::{ContentRule, MatchMode, Scope};
pub use decompose::decompose;
pub use disclaimer::{
    Disclaimer, DisclaimerConfig, DisclaimerEdit, DisclaimerOutcome, InternalDomains,
    MAX_DISCLAIMER_CHARS, NotAdded, SkippedPart, TextKind,
};
pub use error::{DisclaimerError, NotifyError, PolicyError};
pub use filetype::FileType;
pub use finding::{Finding, LimitHit};
pub use limits::Limits;
pub use mbox::split_mbox;
pub use notify::{
    Audience, CompiledNotifications, MessageFacts, NOTIFICATION_HEADER, Notification,
    NotificationPlan, NotificationTemplates, NotificationsConfig, NotifyWhom, OriginalHeaders,
    Outcome, Suppressed, SuppressedNotification, TEMPLATE_TAGS, Template, Violation,
    ViolationReport, validate_template,
};
pub use part::{Decomposition, Part, PartPath, PartRole};
pub use policy::{
    Action, AttachmentSizePolicy, CLASSIC_BLOCKED_EXTENSIONS, CompiledPolicy, EncryptedAction,
    EncryptedPolicy, FileNamePolicy, Policy, Reason, RuleRef, ScanMode, ScanScope, SubjectPolicy,
    UnscannableAction, UnscannablePolicy, Verdict,
};
pub use wildcard::Wildcard;

#[cfg(test)]
mod verdict_tests;
