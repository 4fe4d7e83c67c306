//! Notifications: telling the sender, the recipients and/or the admin what the policy did to a message.
//!
//! [`NotificationsConfig`] (serde, defaults in this file) says who is told about which [`Violation`] and with
//! which templates. [`CompiledNotifications::compile`] checks it once per config load; its
//! [`notifications`](CompiledNotifications::notifications) method is pure: [`MessageFacts`] in, the
//! [`NotificationPlan`] out (complete RFC 5322 messages for the gateway to queue with the null envelope
//! sender, and the notifications it decided not to send, with why).
//!
//! Loop protection lives here, in one place: the null sender, auto-submitted mail and mailing lists never get a
//! notification, and our own notifications (marked with [`NOTIFICATION_HEADER`]) never cause another one.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::NotifyError;
use crate::mime_text::{display_name, header_field, one_line, to_crlf};
use crate::policy::{Action, Reason, RuleRef, Verdict};

/// The header every notification carries. A message that has it is one of ours and is never notified about,
/// whatever happens to it, so two gateways (or one gateway and itself) cannot ping-pong notifications.
pub const NOTIFICATION_HEADER: &str = "X-Portcullis-Notification";

/// The template tags that are replaced; any other `${…}` is left as text and reported by
/// [`validate_template`].
pub const TEMPLATE_TAGS: &[&str] = &[
    "MSGINFO",
    "VIRUSINFO",
    "CONTENTINFO",
    "ENCRYPTINFO",
    "UNSCANNABLEINFO",
    "DISPOSITION",
    "SUBJECT",
];

/// Subjects quoted from a message are cut here so a notification subject stays readable.
const MAX_QUOTED_SUBJECT_CHARS: usize = 200;

const DEFAULT_FROM_NAME: &str = "Mail Security";

const DEFAULT_SENDER_SUBJECT: &str = "Mail security notice about your message: ${SUBJECT}";
const DEFAULT_SENDER_BODY: &str = "\
This is an automatic notice from the mail security gateway; please do not reply to it.

A message you sent broke the mail security policy of the recipient's organisation.

${MSGINFO}
${VIRUSINFO}${CONTENTINFO}${ENCRYPTINFO}${UNSCANNABLEINFO}
What was done: ${DISPOSITION}

If you think this is a mistake, contact the recipient by other means.
";
const DEFAULT_RECIPIENTS_SUBJECT: &str = "Mail security notice about a message to you: ${SUBJECT}";
const DEFAULT_RECIPIENTS_BODY: &str = "\
This is an automatic notice from the mail security gateway; please do not reply to it.

A message addressed to you broke the mail security policy.

${MSGINFO}
${VIRUSINFO}${CONTENTINFO}${ENCRYPTINFO}${UNSCANNABLEINFO}
What was done: ${DISPOSITION}

If you need this message, contact your mail administrator.
";
const DEFAULT_ADMIN_SUBJECT: &str = "Mail security report: ${SUBJECT}";
const DEFAULT_ADMIN_BODY: &str = "\
A message broke the mail security policy.

${MSGINFO}
${VIRUSINFO}${CONTENTINFO}${ENCRYPTINFO}${UNSCANNABLEINFO}
What was done: ${DISPOSITION}
";

/// A kind of policy violation; each has its own choice of who is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Violation {
    /// The antivirus found a virus.
    Virus,
    /// A content rule, subject pattern, file-name rule, true-type rule or attachment size limit hit.
    Content,
    /// An encrypted (password-protected) container.
    Encrypted,
    /// Some content could not be inspected (a limit was hit, a container is damaged or not opened).
    Unscannable,
}

impl Violation {
    /// The name used in the config and in [`NOTIFICATION_HEADER`].
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::Virus => "virus",
            Violation::Content => "content",
            Violation::Encrypted => "encrypted",
            Violation::Unscannable => "unscannable",
        }
    }
}

/// Who is told about one kind of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyWhom {
    /// The envelope sender (off by default: senders of viruses and spam are usually forged, and telling them
    /// is backscatter).
    pub sender: bool,
    /// Each envelope recipient, separately.
    pub recipients: bool,
    /// The admin address ([`NotificationsConfig::admin`], which must then be set).
    pub admin: bool,
}

impl Default for NotifyWhom {
    fn default() -> Self {
        NotifyWhom {
            sender: false,
            recipients: true,
            admin: false,
        }
    }
}

/// Who a notification is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The envelope sender of the message.
    Sender,
    /// One envelope recipient of the message.
    Recipient,
    /// The configured admin address.
    Admin,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Audience::Sender => "sender",
            Audience::Recipient => "recipient",
            Audience::Admin => "admin",
        }
    }
}

/// One editable template. A missing subject or body uses the built-in default for its audience.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Template {
    /// The Subject line (made one line; non-ASCII is encoded).
    pub subject: Option<String>,
    /// The body (plain text, UTF-8; line breaks become CRLF).
    pub body: Option<String>,
}

/// The templates for each audience.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationTemplates {
    /// For the envelope sender.
    pub sender: Template,
    /// For each envelope recipient.
    pub recipients: Template,
    /// For the admin.
    pub admin: Template,
}

impl NotificationTemplates {
    /// The (subject, body) template text for an audience, the built-in default where none is configured.
    pub fn resolved(&self, audience: Audience) -> (&str, &str) {
        let (template, subject, body) = match audience {
            Audience::Sender => (&self.sender, DEFAULT_SENDER_SUBJECT, DEFAULT_SENDER_BODY),
            Audience::Recipient => (
                &self.recipients,
                DEFAULT_RECIPIENTS_SUBJECT,
                DEFAULT_RECIPIENTS_BODY,
            ),
            Audience::Admin => (&self.admin, DEFAULT_ADMIN_SUBJECT, DEFAULT_ADMIN_BODY),
        };
        (
            template.subject.as_deref().unwrap_or(subject),
            template.body.as_deref().unwrap_or(body),
        )
    }
}

/// Notification settings as configured (`[scan.notifications]` or wherever the gateway mounts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Where admin notifications go; required as soon as any `admin = true`.
    pub admin: Option<String>,
    /// The From address; `postmaster@<host name>` when not set.
    pub from: Option<String>,
    /// The display name in From.
    pub from_name: String,
    /// Who is told about viruses.
    pub virus: NotifyWhom,
    /// Who is told about content, subject, file-name and size rules.
    pub content: NotifyWhom,
    /// Who is told about encrypted containers.
    pub encrypted: NotifyWhom,
    /// Who is told about unscannable content.
    pub unscannable: NotifyWhom,
    /// Subject and body templates per audience.
    pub templates: NotificationTemplates,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            admin: None,
            from: None,
            from_name: DEFAULT_FROM_NAME.to_owned(),
            virus: NotifyWhom::default(),
            content: NotifyWhom::default(),
            encrypted: NotifyWhom::default(),
            unscannable: NotifyWhom::default(),
            templates: NotificationTemplates::default(),
        }
    }
}

impl NotificationsConfig {
    /// Who is told about `violation`.
    pub fn whom(&self, violation: Violation) -> NotifyWhom {
        match violation {
            Violation::Virus => self.virus,
            Violation::Content => self.content,
            Violation::Encrypted => self.encrypted,
            Violation::Unscannable => self.unscannable,
        }
    }

    /// Checks the settings for config load: addresses are plain addresses, an admin address exists when admin
    /// notifications are on, and every template uses only known tags.
    pub fn validate(&self) -> Result<(), NotifyError> {
        for (key, address) in [("admin", &self.admin), ("from", &self.from)] {
            if let Some(address) = address
                && !is_plain_address(address)
            {
                return Err(NotifyError::BadAddress {
                    key,
                    address: address.clone(),
                });
            }
        }
        let violations = [
            Violation::Virus,
            Violation::Content,
            Violation::Encrypted,
            Violation::Unscannable,
        ];
        if self.admin.is_none()
            && let Some(v) = violations.into_iter().find(|v| self.whom(*v).admin)
        {
            return Err(NotifyError::NoAdminAddress {
                violation: v.as_str(),
            });
        }
        for audience in [Audience::Sender, Audience::Recipient, Audience::Admin] {
            let (subject, body) = self.templates.resolved(audience);
            for (part, text) in [("subject", subject), ("body", body)] {
                if let Some(tag) = validate_template(text).into_iter().next() {
                    return Err(NotifyError::UnknownTag {
                        template: format!("{}.{part}", audience_key(audience)),
                        tag,
                    });
                }
            }
        }
        Ok(())
    }
}

fn audience_key(audience: Audience) -> &'static str {
    match audience {
        Audience::Sender => "templates.sender",
        Audience::Recipient => "templates.recipients",
        Audience::Admin => "templates.admin",
    }
}

/// The unknown `${…}` tags in a template, in order of appearance (each once). Known tags are
/// [`TEMPLATE_TAGS`]; unknown ones are left as text when rendering.
pub fn validate_template(text: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    for piece in parse_template(text) {
        if let Piece::Unknown(tag) = piece
            && !unknown.contains(&tag)
        {
            unknown.push(tag);
        }
    }
    unknown
}

enum Piece<'a> {
    Text(&'a str),
    Tag(&'static str),
    Unknown(String),
}

fn parse_template(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        match TEMPLATE_TAGS.iter().find(|t| **t == name) {
            Some(tag) => pieces.push(Piece::Tag(tag)),
            None => pieces.push(Piece::Unknown(format!("${{{name}}}"))),
        }
        rest = &rest[start + 3 + len..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    pieces
}

/// A plain address (`local@domain`): no blanks, controls or angle brackets, so it can stand in a header.
fn is_plain_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !address.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"' | ',' | ';')
        })
}

/// The header fields of the original message that notifications quote or that decide whether to notify.
/// Values are as found (decoded where RFC 2047 applies); [`OriginalHeaders::from_message`] fills them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OriginalHeaders {
    /// Subject, decoded.
    pub subject: Option<String>,
    /// Date, as written.
    pub date: Option<String>,
    /// Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// Auto-Submitted (RFC 3834), as written.
    pub auto_submitted: Option<String>,
    /// List-Id (RFC 2919), as written.
    pub list_id: Option<String>,
    /// List-Unsubscribe (RFC 2369), as written.
    pub list_unsubscribe: Option<String>,
    /// Precedence, as written.
    pub precedence: Option<String>,
    /// Our own [`NOTIFICATION_HEADER`], when the message is one of our notifications.
    pub portcullis_notification: Option<String>,
}

impl OriginalHeaders {
    /// Reads the fields from a raw message (only the header is parsed).
    pub fn from_message(raw: &[u8]) -> OriginalHeaders {
        let Some(message) = mail_parser::MessageParser::default().parse_headers(raw) else {
            return OriginalHeaders::default();
        };
        let raw_field = |name: &str| {
            message
                .headers_raw()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        OriginalHeaders {
            subject: message.subject().map(str::to_owned),
            date: raw_field("Date"),
            message_id: message.message_id().map(str::to_owned),
            auto_submitted: raw_field("Auto-Submitted"),
            list_id: raw_field("List-Id"),
            list_unsubscribe: raw_field("List-Unsubscribe"),
            precedence: raw_field("Precedence"),
            portcullis_notification: raw_field(NOTIFICATION_HEADER),
        }
    }
}

/// One thing the policy (or the antivirus) objected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationReport {
    /// The kind, which decides who is told.
    pub violation: Violation,
    /// What hit, for people: a virus name, a rule explanation, a finding.
    pub detail: String,
    /// The part it hit on (`message/attachment[1] "a.zip"/x.exe`), if any.
    pub part: Option<String>,
}

impl ViolationReport {
    /// A virus found by the antivirus in a part.
    pub fn virus(name: &str, part: Option<&str>) -> ViolationReport {
        ViolationReport {
            violation: Violation::Virus,
            detail: name.to_owned(),
            part: part.map(str::to_owned),
        }
    }

    /// A policy reason, classified: encrypted containers, unscannable findings, and everything else as content.
    pub fn from_reason(reason: &Reason) -> ViolationReport {
        let violation = match reason.rule {
            RuleRef::Encrypted => Violation::Encrypted,
            RuleRef::Unscannable { .. } => Violation::Unscannable,
            _ => Violation::Content,
        };
        ViolationReport {
            violation,
            detail: reason.rule.to_string(),
            part: reason.part.as_ref().map(|p| p.as_str().to_owned()),
        }
    }
}

/// What was done with the message, for `${DISPOSITION}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered unchanged.
    Delivered,
    /// Delivered with a header or subject tag.
    DeliveredTagged,
    /// Delivered with these parts removed.
    PartsStripped {
        /// The removed parts.
        parts: Vec<String>,
    },
    /// Held for an admin.
    Held,
    /// Moved to quarantine.
    Quarantined,
    /// Accepted and deleted.
    Dropped,
    /// Refused during the SMTP session (the sender's server was told).
    Rejected,
}

impl Outcome {
    /// The outcome of a verdict's decisive action.
    pub fn from_verdict(verdict: &Verdict) -> Outcome {
        match verdict.action {
            Action::Deliver | Action::Log | Action::Forward { .. } => Outcome::Delivered,
            Action::Tag { .. } => Outcome::DeliveredTagged,
            Action::StripPart => Outcome::PartsStripped {
                parts: verdict
                    .parts_to_strip()
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
            },
            Action::Hold => Outcome::Held,
            Action::Quarantine => Outcome::Quarantined,
            Action::Drop => Outcome::Dropped,
            Action::Reject => Outcome::Rejected,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Delivered => f.write_str("the message was delivered"),
            Outcome::DeliveredTagged => f.write_str("the message was delivered marked as suspect"),
            Outcome::PartsStripped { parts } => {
                write!(
                    f,
                    "the message was delivered without these parts: {}",
                    parts.join(", ")
                )
            }
            Outcome::Held => {
                f.write_str("the message is held for review by the mail administrator")
            }
            Outcome::Quarantined => f.write_str("the message was quarantined"),
            Outcome::Dropped => f.write_str("the message was deleted and not delivered"),
            Outcome::Rejected => f.write_str("the message was refused"),
        }
    }
}

/// Everything notifications need to know about one message. Plain data: the gateway fills it from the queue
/// entry, the verdict and the disposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFacts {
    /// The queue id.
    pub queue_id: String,
    /// The envelope sender; empty (or `<>`) for the null sender.
    pub envelope_sender: String,
    /// The envelope recipients.
    pub envelope_recipients: Vec<String>,
    /// Header fields of the message.
    pub headers: OriginalHeaders,
    /// Size in bytes.
    pub size: u64,
    /// What was objected to; nothing is sent when empty.
    pub violations: Vec<ViolationReport>,
    /// What was done.
    pub outcome: Outcome,
}

impl MessageFacts {
    fn sender_is_null(&self) -> bool {
        let s = self.envelope_sender.trim();
        s.is_empty() || s == "<>"
    }
}

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Suppressed {
    /// The message is one of our own notifications.
    #[error("the message is itself a notification")]
    OwnNotification,
    /// The envelope sender is null (a bounce or another notification).
    #[error("the envelope sender is null")]
    NullSender,
    /// The message was sent automatically (RFC 3834); answering could start a loop.
    #[error("the message is auto-submitted ({0})")]
    AutoSubmitted(String),
    /// The message came from a mailing list; the list, not a person, would get the notice.
    #[error("the message is from a mailing list ({0})")]
    MailingList(String),
    /// The message was refused in the SMTP session, so the sender's server already has the reason.
    #[error("the sender was already told by the SMTP reply")]
    RejectedInSession,
    /// The address cannot be written in a header (controls, blanks or brackets).
    #[error("address {0:?} cannot be notified")]
    UnusableAddress(String),
}

/// A notification suppressed for one audience, with why (for the tracking record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressedNotification {
    /// Who would have been told.
    pub audience: Audience,
    /// Why not.
    pub reason: Suppressed,
}

/// One notification ready to queue: send it with the null envelope sender (`MAIL FROM:<>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Who it is for.
    pub audience: Audience,
    /// The envelope recipients (one address).
    pub recipients: Vec<String>,
    /// The violations it tells about.
    pub violations: Vec<Violation>,
    /// The complete message: CRLF line endings, UTF-8 text, MIME headers.
    pub message: Vec<u8>,
}

/// What to send about one message, and what was deliberately not sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotificationPlan {
    /// Notifications to queue.
    pub notifications: Vec<Notification>,
    /// Notifications that the settings asked for but loop protection (or a bad address) stopped.
    pub suppressed: Vec<SuppressedNotification>,
}

/// Notification settings checked once per config load.
#[derive(Debug, Clone)]
pub struct CompiledNotifications {
    config: NotificationsConfig,
    from: String,
    hostname: String,
}

impl CompiledNotifications {
    /// Checks `config` ([`NotificationsConfig::validate`]). `hostname` is the gateway's name: it is the domain of
    /// the default From address and of the notifications' Message-IDs.
    pub fn compile(
        config: NotificationsConfig,
        hostname: &str,
    ) -> Result<CompiledNotifications, NotifyError> {
        config.validate()?;
        let hostname = one_line(hostname);
        let from = config
            .from
            .clone()
            .unwrap_or_else(|| format!("postmaster@{hostname}"));
        if !is_plain_address(&from) {
            return Err(NotifyError::BadAddress {
                key: "from",
                address: from,
            });
        }
        Ok(CompiledNotifications {
            config,
            from,
            hostname,
        })
    }

    /// The settings.
    pub fn config(&self) -> &NotificationsConfig {
        &self.config
    }

    /// The notifications to send about a message (pure). `now` is the Date of the notifications.
    pub fn notifications(&self, facts: &MessageFacts, now: DateTime<Utc>) -> NotificationPlan {
        let mut plan = NotificationPlan::default();
        let own = facts.headers.portcullis_notification.is_some();
        for audience in [Audience::Sender, Audience::Recipient, Audience::Admin] {
            let violations: BTreeSet<Violation> = facts
                .violations
                .iter()
                .map(|v| v.violation)
                .filter(|v| {
                    let whom = self.config.whom(*v);
                    match audience {
                        Audience::Sender => whom.sender,
                        Audience::Recipient => whom.recipients,
                        Audience::Admin => whom.admin,
                    }
                })
                .collect();
            if violations.is_empty() {
                continue;
            }
            let suppress = |reason| SuppressedNotification { audience, reason };
            if own {
                plan.suppressed.push(suppress(Suppressed::OwnNotification));
                continue;
            }
            let addresses: Vec<String> = match audience {
                Audience::Sender => match sender_suppressed(facts) {
                    Some(reason) => {
                        plan.suppressed.push(suppress(reason));
                        continue;
                    }
                    None => vec![facts.envelope_sender.clone()],
                },
                Audience::Recipient => facts.envelope_recipients.clone(),
                Audience::Admin => self.config.admin.iter().cloned().collect(),
            };
            let violations: Vec<Violation> = violations.into_iter().collect();
            for address in addresses {
                let address = address
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned();
                if !is_plain_address(&address) {
                    plan.suppressed
                        .push(suppress(Suppressed::UnusableAddress(address)));
                    continue;
                }
                let index = plan.notifications.len();
                let message = self.render(facts, audience, &address, &violations, now, index);
                plan.notifications.push(Notification {
                    audience,
                    recipients: vec![address],
                    violations: violations.clone(),
                    message,
                });
            }
        }
        plan
    }

    fn render(
        &self,
        facts: &MessageFacts,
        audience: Audience,
        to: &str,
        violations: &[Violation],
        now: DateTime<Utc>,
        index: usize,
    ) -> Vec<u8> {
        let values = TagValues {
            facts,
            audience,
            to,
            violations,
        };
        let (subject, body) = self.config.templates.resolved(audience);
        let subject = render_template(subject, &values, Context::Header);
        let body = to_crlf(&render_template(body, &values, Context::Body));
        let body = if body.ends_with("\r\n") {
            body
        } else {
            body + "\r\n"
        };
        let queue_id: String = facts
            .queue_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let kinds: Vec<&str> = violations.iter().map(|v| v.as_str()).collect();

        let mut head = String::new();
        head.push_str(&format!(
            "From: {} <{}>\r\n",
            display_name(&self.config.from_name),
            self.from
        ));
        head.push_str(&format!("To: <{to}>\r\n"));
        head.push_str(&header_field("Subject", &subject));
        head.push_str(&format!("Date: {}\r\n", now.to_rfc2822()));
        head.push_str(&format!(
            "Message-ID: <{}.{}.{}.notify@{}>\r\n",
            if queue_id.is_empty() {
                "message"
            } else {
                &queue_id
            },
            audience.as_str(),
            index,
            self.hostname
        ));
        head.push_str("Auto-Submitted: auto-replied\r\n");
        head.push_str(&format!(
            "{NOTIFICATION_HEADER}: {} {}\r\n",
            audience.as_str(),
            kinds.join(",")
        ));
        head.push_str("MIME-Version: 1.0\r\n");
        head.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        // Plain ASCII with short lines is sent as is; anything else is quoted-printable so the message survives a
        // next hop without 8BITMIME.
        let body_bytes = if body.is_ascii() && body.split("\r\n").all(|l| l.len() <= 998) {
            head.push_str("Content-Transfer-Encoding: 7bit\r\n");
            body.into_bytes()
        } else {
            head.push_str("Content-Transfer-Encoding: quoted-printable\r\n");
            quoted_printable::encode(body.as_bytes())
        };
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(&body_bytes);
        if !message.ends_with(b"\r\n") {
            message.extend_from_slice(b"\r\n");
        }
        message
    }
}

/// Why the sender of this message must not be told, if so.
fn sender_suppressed(facts: &MessageFacts) -> Option<Suppressed> {
    let headers = &facts.headers;
    if facts.sender_is_null() {
        return Some(Suppressed::NullSender);
    }
    if let Some(value) = &headers.auto_submitted {
        let token = value
            .split(';')
            .next()
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("")
            .trim();
        if !token.eq_ignore_ascii_case("no") {
            return Some(Suppressed::AutoSubmitted(format!(
                "Auto-Submitted: {}",
                one_line(value)
            )));
        }
    }
    if headers.list_id.is_some() {
        return Some(Suppressed::MailingList("List-Id".to_owned()));
    }
    if headers.list_unsubscribe.is_some() {
        return Some(Suppressed::MailingList("List-Unsubscribe".to_owned()));
    }
    if let Some(p) = &headers.precedence {
        let p = p.trim();
        if ["bulk", "list", "junk"]
            .iter()
            .any(|k| p.eq_ignore_ascii_case(k))
        {
            return Some(Suppressed::MailingList(format!(
                "Precedence: {}",
                one_line(p)
            )));
        }
    }
    if facts.outcome == Outcome::Rejected {
        return Some(Suppressed::RejectedInSession);
    }
    None
}

/// Where a tag value goes: a header value is forced onto one line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Header,
    Body,
}

struct TagValues<'a> {
    facts: &'a MessageFacts,
    audience: Audience,
    to: &'a str,
    violations: &'a [Violation],
}

impl TagValues<'_> {
    fn value(&self, tag: &str) -> String {
        let facts = self.facts;
        match tag {
            "SUBJECT" => quoted_subject(facts),
            "MSGINFO" => {
                // A recipient sees only itself: the others may have been Bcc.
                let recipients = match self.audience {
                    Audience::Recipient => self.to.to_owned(),
                    _ => facts
                        .envelope_recipients
                        .iter()
                        .map(|r| one_line(r))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let sender = if facts.sender_is_null() {
                    "<>".to_owned()
                } else {
                    one_line(&facts.envelope_sender)
                };
                let h = &facts.headers;
                let field = |v: &Option<String>| {
                    v.as_deref()
                        .map(one_line)
                        .unwrap_or_else(|| "(none)".to_owned())
                };
                format!(
                    "Sender:     {sender}\nRecipients: {recipients}\nSubject:    {}\nDate:       {}\nMessage-ID: {}\nSize:       {} bytes\nQueue ID:   {}\n",
                    quoted_subject(facts),
                    field(&h.date),
                    h.message_id
                        .as_deref()
                        .map(|m| format!("<{}>", one_line(m)))
                        .unwrap_or_else(|| "(none)".to_owned()),
                    facts.size,
                    one_line(&facts.queue_id),
                )
            }
            "VIRUSINFO" => self.section(Violation::Virus, "Viruses found:"),
            "CONTENTINFO" => self.section(Violation::Content, "Policy rules that hit:"),
            "ENCRYPTINFO" => self.section(
                Violation::Encrypted,
                "Encrypted containers (cannot be checked):",
            ),
            "UNSCANNABLEINFO" => {
                self.section(Violation::Unscannable, "Content that could not be checked:")
            }
            "DISPOSITION" => one_line(&facts.outcome.to_string()),
            _ => String::new(),
        }
    }

    /// A titled list of the reports of one kind, or nothing when that kind is absent or not for this audience.
    fn section(&self, violation: Violation, title: &str) -> String {
        if !self.violations.contains(&violation) {
            return String::new();
        }
        let mut out = format!("{title}\n");
        for report in self
            .facts
            .violations
            .iter()
            .filter(|r| r.violation == violation)
        {
            match &report.part {
                Some(part) if !report.detail.contains(part.as_str()) => out.push_str(&format!(
                    "  - {} in {}\n",
                    one_line(&report.detail),
                    one_line(part)
                )),
                _ => out.push_str(&format!("  - {}\n", one_line(&report.detail))),
            }
        }
        out
    }
}

fn quoted_subject(facts: &MessageFacts) -> String {
    let subject = one_line(facts.headers.subject.as_deref().unwrap_or(""));
    if subject.is_empty() {
        return "(no subject)".to_owned();
    }
    if subject.chars().count() > MAX_QUOTED_SUBJECT_CHARS {
        let cut: String = subject.chars().take(MAX_QUOTED_SUBJECT_CHARS).collect();
        return format!("{cut}…");
    }
    subject
}

/// Replaces the known tags; unknown `${…}` stays as written. In a header every value is made one line.
fn render_template(template: &str, values: &TagValues<'_>, context: Context) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    for piece in parse_template(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Unknown(tag) => out.push_str(&tag),
            Piece::Tag(tag) => {
                let value = values.value(tag);
                match context {
                    Context::Header => out.push_str(&one_line(&value)),
                    Context::Body => out.push_str(&value),
                }
            }
        }
    }
    match context {
        Context::Header => one_line(&out),
        Context::Body => out,
    }
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
