//! Policies (serde config, defaults in one place) and their evaluation into a [`Verdict`].

use serde::{Deserialize, Serialize};

use crate::content::{ContentMatcher, ContentRule, Scope, Source};
use crate::error::PolicyError;
use crate::filetype::FileType;
use crate::finding::Finding;
use crate::part::{Decomposition, Part, PartPath, PartRole};
use crate::wildcard::Wildcard;

/// The classic list of dangerous attachment extensions blocked by default.
pub const CLASSIC_BLOCKED_EXTENSIONS: &[&str] = &[
    "ad", "ade", "adp", "asp", "bas", "bat", "chm", "cmd", "com", "cpl", "crt", "exe", "hlp",
    "hta", "inf", "ins", "isp", "js", "jse", "lnk", "mdb", "mde", "msc", "msi", "msp", "mst",
    "pcd", "pif", "reg", "scr", "sct", "shb", "shs", "url", "vb", "vbe", "vbs", "vsd", "vss",
    "vst", "vsw", "ws", "wsc", "wsf", "wsh",
];

/// What to do with a message (or a part of it). Written in the config as `"drop"`, or for the actions with
/// parameters as `{ forward = { to = "security@example.com" } }` / `{ tag = { subject_prefix = "[SUSPECT]" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Deliver unchanged.
    Deliver,
    /// Deliver unchanged, but record the reason on the tracking record.
    Log,
    /// Deliver with a header and/or a subject prefix added.
    Tag {
        /// Header line to add, e.g. `X-Portcullis-Policy: suspect`.
        #[serde(default)]
        header: Option<String>,
        /// Prefix for the Subject, e.g. `[SUSPECT]`.
        #[serde(default)]
        subject_prefix: Option<String>,
    },
    /// Deliver, and send a copy to an address.
    Forward {
        /// Where the copy goes.
        to: String,
    },
    /// Deliver with the offending attachment removed and replaced by a short text note.
    StripPart,
    /// Keep the message in the hold queue until an admin releases or deletes it.
    Hold,
    /// Move the message to the quarantine store.
    Quarantine,
    /// Accept and discard silently.
    Drop,
    /// Refuse at SMTP time (5xx) when the verdict is known before the 250; otherwise the gateway drops
    /// (never bounces, since the sender may be forged).
    Reject,
}

impl Action {
    /// Rank used to pick the decisive action among several reasons: higher wins.
    pub fn severity(&self) -> u8 {
        match self {
            Action::Deliver => 0,
            Action::Log => 1,
            Action::Tag { .. } => 2,
            Action::Forward { .. } => 3,
            Action::StripPart => 4,
            Action::Hold => 5,
            Action::Quarantine => 6,
            Action::Drop => 7,
            Action::Reject => 8,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Deliver => f.write_str("deliver"),
            Action::Log => f.write_str("log only"),
            Action::Tag {
                header,
                subject_prefix,
            } => {
                f.write_str("tag")?;
                if let Some(h) = header {
                    write!(f, " header \"{h}\"")?;
                }
                if let Some(p) = subject_prefix {
                    write!(f, " subject \"{p}\"")?;
                }
                Ok(())
            }
            Action::Forward { to } => write!(f, "forward a copy to {to}"),
            Action::StripPart => f.write_str("strip the attachment"),
            Action::Hold => f.write_str("hold"),
            Action::Quarantine => f.write_str("quarantine"),
            Action::Drop => f.write_str("drop"),
            Action::Reject => f.write_str("reject"),
        }
    }
}

/// Which attachments are scanned (content rules on attachment text; antivirus uses the same test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanMode {
    /// Every file.
    #[default]
    All,
    /// Only files whose extension is listed.
    Only,
    /// Every file except those whose extension is listed.
    AllBut,
}

/// Scan policy: all files, only listed extensions, or all but listed extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanScope {
    /// The mode.
    pub mode: ScanMode,
    /// Extensions without the dot, case-insensitive.
    pub extensions: Vec<String>,
}

impl ScanScope {
    /// Whether `part` is to be scanned. Parts without a file name (message text) are always scanned.
    pub fn includes(&self, part: &Part) -> bool {
        let Some(ext) = part.file_name.as_deref().and_then(extension) else {
            return match self.mode {
                ScanMode::Only => part.file_name.is_none(),
                _ => true,
            };
        };
        let listed = self
            .extensions
            .iter()
            .any(|e| e.trim_start_matches('.').eq_ignore_ascii_case(&ext));
        match self.mode {
            ScanMode::All => true,
            ScanMode::Only => listed,
            ScanMode::AllBut => !listed,
        }
    }
}

/// Attachment size limit (the whole-message limit is enforced at SMTP time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentSizePolicy {
    /// Largest decoded attachment in bytes; none means no limit.
    pub max_bytes: Option<u64>,
    /// What to do with a larger one.
    pub action: Action,
}

impl Default for AttachmentSizePolicy {
    fn default() -> Self {
        AttachmentSizePolicy {
            max_bytes: None,
            action: Action::StripPart,
        }
    }
}

/// Subject blocking with wildcard patterns matched against the whole subject (`*lottery*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectPolicy {
    /// Case-insensitive wildcard patterns.
    pub patterns: Vec<String>,
    /// What to do on a match (the issue names drop, log only and forward).
    pub action: Action,
}

impl Default for SubjectPolicy {
    fn default() -> Self {
        SubjectPolicy {
            patterns: Vec::new(),
            action: Action::Drop,
        }
    }
}

/// File-name blocking: extensions, wildcards, double extensions, names inside archives and true types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileNamePolicy {
    /// Whether file-name blocking is on.
    pub enabled: bool,
    /// Blocked extensions (without the dot, case-insensitive); the classic list by default.
    pub blocked_extensions: Vec<String>,
    /// Blocked names as wildcard patterns matched against the whole name (`invoice*.zip`).
    pub patterns: Vec<String>,
    /// Block `name.doc.exe`: a blocked extension hidden behind a harmless-looking one.
    pub double_extensions: bool,
    /// Block by true type whatever the name says (an executable renamed `.txt`).
    pub blocked_true_types: Vec<FileType>,
    /// Apply all of the above to members of archives too.
    pub inside_archives: bool,
    /// What to do with a blocked file (the carrying attachment is what gets stripped).
    pub action: Action,
}

impl Default for FileNamePolicy {
    fn default() -> Self {
        FileNamePolicy {
            enabled: true,
            blocked_extensions: CLASSIC_BLOCKED_EXTENSIONS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            patterns: Vec::new(),
            double_extensions: true,
            blocked_true_types: vec![
                FileType::WindowsExecutable,
                FileType::Elf,
                FileType::MachO,
                FileType::WindowsShortcut,
            ],
            inside_archives: true,
            action: Action::StripPart,
        }
    }
}

/// What to do with an unscannable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnscannableAction {
    /// Deliver (the reason is still recorded).
    Deliver,
    /// Drop.
    Drop,
    /// Hold for an admin.
    #[default]
    Hold,
}

/// Unscannable policy: a limit was hit or a container is damaged.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnscannablePolicy {
    /// The action.
    pub action: UnscannableAction,
    /// Also treat archives we cannot open (RAR) as unscannable.
    pub unopened_containers: bool,
}

/// What to do with password-protected containers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EncryptedAction {
    /// Remove the attachment that carries the encrypted container.
    DeleteContainer,
    /// Drop the message.
    Drop,
    /// Deliver and record it.
    #[default]
    Log,
    /// Deliver and forward a copy to an address.
    Forward {
        /// Where the copy goes.
        to: String,
    },
}

/// Encrypted-container policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptedPolicy {
    /// The action.
    pub action: EncryptedAction,
}

/// The whole content filtering policy as configured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Which attachments content rules read.
    pub scan: ScanScope,
    /// Attachment size limit.
    pub attachment_size: AttachmentSizePolicy,
    /// Subject blocking.
    pub subjects: SubjectPolicy,
    /// File-name blocking.
    pub file_names: FileNamePolicy,
    /// Content rules (at most 100, 50 terms each).
    pub content_rules: Vec<ContentRule>,
    /// Unscannable messages.
    pub unscannable: UnscannablePolicy,
    /// Encrypted containers.
    pub encrypted: EncryptedPolicy,
}

/// Which rule or list produced a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RuleRef {
    /// A subject pattern matched.
    Subject {
        /// The pattern.
        pattern: String,
        /// The subject.
        subject: String,
    },
    /// The file's extension is on the blocked list.
    BlockedExtension {
        /// The file name.
        name: String,
        /// The extension.
        extension: String,
    },
    /// A blocked extension hides behind another one (`invoice.pdf.exe`).
    DoubleExtension {
        /// The file name.
        name: String,
        /// The blocked (last) extension.
        extension: String,
    },
    /// A file-name wildcard pattern matched.
    FileNamePattern {
        /// The file name.
        name: String,
        /// The pattern.
        pattern: String,
    },
    /// The name contains a right-to-left override that disguises its real extension.
    BidiOverride {
        /// The file name.
        name: String,
    },
    /// The content is of a blocked type whatever its name.
    TrueType {
        /// The file name, if any.
        name: Option<String>,
        /// The detected type.
        true_type: FileType,
    },
    /// An attachment is larger than allowed.
    AttachmentSize {
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A content rule hit.
    ContentRule {
        /// Rule name.
        rule: String,
        /// Terms found, each with where (`body`, `subject`, … and the part).
        matched: Vec<String>,
    },
    /// Some content could not be inspected.
    Unscannable {
        /// The finding.
        finding: Finding,
    },
    /// An encrypted container.
    Encrypted,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleRef::Subject { pattern, subject } => write!(
                f,
                "subject \"{subject}\" matches blocked pattern \"{pattern}\""
            ),
            RuleRef::BlockedExtension { name, extension } => {
                write!(f, "file name \"{name}\" has blocked extension .{extension}")
            }
            RuleRef::DoubleExtension { name, extension } => {
                write!(
                    f,
                    "file name \"{name}\" has a double extension ending in blocked .{extension}"
                )
            }
            RuleRef::FileNamePattern { name, pattern } => {
                write!(
                    f,
                    "file name \"{name}\" matches blocked pattern \"{pattern}\""
                )
            }
            RuleRef::BidiOverride { name } => {
                write!(
                    f,
                    "file name \"{}\" hides its extension with a right-to-left override",
                    name.escape_unicode()
                )
            }
            RuleRef::TrueType { name, true_type } => match name {
                Some(name) => write!(f, "\"{name}\" is really a {true_type} (blocked type)"),
                None => write!(f, "content is a {true_type} (blocked type)"),
            },
            RuleRef::AttachmentSize { size, limit } => {
                write!(
                    f,
                    "attachment size {size} bytes exceeds limit {limit} bytes"
                )
            }
            RuleRef::ContentRule { rule, matched } => {
                write!(f, "content rule \"{rule}\" matched {}", matched.join(", "))
            }
            RuleRef::Unscannable { finding } => write!(f, "unscannable: {finding}"),
            RuleRef::Encrypted => f.write_str("encrypted container"),
        }
    }
}

/// One reason for a verdict: which rule hit, on which part, and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule or list that hit, with the details.
    pub rule: RuleRef,
    /// The part it hit on (None for the subject and headers).
    pub part: Option<PartPath>,
    /// The top-level attachment that carries that part: what `StripPart` removes.
    pub carrier: Option<PartPath>,
    /// What this rule asks for.
    pub action: Action,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.rule)?;
        match (&self.part, &self.rule) {
            (_, RuleRef::Unscannable { .. } | RuleRef::ContentRule { .. }) | (None, _) => {}
            (Some(part), _) => write!(f, " in {part}")?,
        }
        write!(f, " -> {}", self.action)
    }
}

/// The outcome of evaluating a policy: the decisive action and every reason behind it. Plain data, so it can
/// be stored on the tracking record and shown by `portcullis check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The most severe action asked for by any reason (deliver when there is none).
    pub action: Action,
    /// Every rule that hit, in evaluation order: subject, parts, content rules, findings.
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// One line per reason, for logs, the tracking record and notifications.
    pub fn explain(&self) -> Vec<String> {
        self.reasons.iter().map(ToString::to_string).collect()
    }

    /// The attachments to strip when the message is delivered (from `StripPart` reasons), without repeats.
    pub fn parts_to_strip(&self) -> Vec<&PartPath> {
        let mut out: Vec<&PartPath> = Vec::new();
        for reason in &self.reasons {
            if reason.action == Action::StripPart
                && let Some(carrier) = &reason.carrier
                && !out.contains(&carrier)
            {
                out.push(carrier);
            }
        }
        out
    }

    /// Addresses that get a copy (from `Forward` reasons), without repeats.
    pub fn forward_to(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for reason in &self.reasons {
            if let Action::Forward { to } = &reason.action
                && !out.contains(&to.as_str())
            {
                out.push(to);
            }
        }
        out
    }

    /// Tags to apply on delivery (from `Tag` reasons): (header, subject prefix) pairs.
    pub fn tags(&self) -> Vec<(Option<&str>, Option<&str>)> {
        self.reasons
            .iter()
            .filter_map(|r| match &r.action {
                Action::Tag {
                    header,
                    subject_prefix,
                } => Some((header.as_deref(), subject_prefix.as_deref())),
                _ => None,
            })
            .collect()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.action)?;
        for reason in &self.reasons {
            write!(f, "; {reason}")?;
        }
        Ok(())
    }
}

/// A policy checked and compiled once (patterns parsed, content rules in one automaton); evaluate it against
/// any number of messages.
#[derive(Debug)]
pub struct CompiledPolicy {
    policy: Policy,
    subjects: Vec<Wildcard>,
    file_patterns: Vec<Wildcard>,
    blocked_extensions: Vec<String>,
    content: ContentMatcher,
}

impl CompiledPolicy {
    /// Checks and compiles `policy`; errors name the offending rule.
    pub fn compile(policy: Policy) -> Result<CompiledPolicy, PolicyError> {
        if policy.subjects.patterns.iter().any(|p| p.is_empty()) {
            return Err(PolicyError::EmptyPattern { what: "subject" });
        }
        if policy.file_names.patterns.iter().any(|p| p.is_empty()) {
            return Err(PolicyError::EmptyPattern { what: "file name" });
        }
        let content = ContentMatcher::compile(&policy.content_rules)?;
        Ok(CompiledPolicy {
            subjects: policy
                .subjects
                .patterns
                .iter()
                .map(|p| Wildcard::new(p))
                .collect(),
            file_patterns: policy
                .file_names
                .patterns
                .iter()
                .map(|p| Wildcard::new(p))
                .collect(),
            blocked_extensions: policy
                .file_names
                .blocked_extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_lowercase())
                .collect(),
            content,
            policy,
        })
    }

    /// The policy as configured.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Evaluates every rule against a decomposed message. Pure: no I/O, same input, same verdict.
    pub fn evaluate(&self, message: &Decomposition) -> Verdict {
        let policy = &self.policy;
        let mut reasons = Vec::new();

        if let Some(subject) = &message.subject
            && let Some(pattern) = self.subjects.iter().find(|w| w.matches(subject))
        {
            reasons.push(Reason {
                rule: RuleRef::Subject {
                    pattern: pattern.to_string(),
                    subject: subject.clone(),
                },
                part: None,
                carrier: None,
                action: policy.subjects.action.clone(),
            });
        }

        for part in &message.parts {
            if let Some(limit) = policy.attachment_size.max_bytes
                && part.role == PartRole::Attachment
                && part.size() > limit
            {
                reasons.push(self.part_reason(
                    RuleRef::AttachmentSize {
                        size: part.size(),
                        limit,
                    },
                    part,
                    policy.attachment_size.action.clone(),
                ));
            }
            if let Some(rule) = self.file_rule(part) {
                reasons.push(self.part_reason(rule, part, policy.file_names.action.clone()));
            }
        }

        let mut sources = Vec::new();
        if let Some(subject) = &message.subject {
            sources.push(Source {
                scope: Scope::Subject,
                part: None,
                text: subject,
            });
        }
        if self.content.uses(Scope::Headers) {
            sources.push(Source {
                scope: Scope::Headers,
                part: None,
                text: &message.header_text,
            });
        }
        for part in &message.parts {
            let Some(text) = &part.text else { continue };
            let scope = if part.role == PartRole::Body {
                Scope::Body
            } else {
                Scope::Attachments
            };
            if scope == Scope::Attachments && !policy.scan.includes(part) {
                continue;
            }
            sources.push(Source {
                scope,
                part: Some(&part.path),
                text,
            });
        }
        for hit in self.content.evaluate(sources) {
            let first_part = hit.matched.iter().find_map(|(_, _, part)| part.clone());
            let matched = hit
                .matched
                .iter()
                .map(|(term, scope, part)| match part {
                    Some(part) => format!("\"{term}\" in {part}"),
                    None => format!("\"{term}\" in {}", scope_name(*scope)),
                })
                .collect();
            let carrier = first_part.as_ref().and_then(|p| carrier_of(message, p));
            reasons.push(Reason {
                rule: RuleRef::ContentRule {
                    rule: hit.rule.name.clone(),
                    matched,
                },
                part: first_part,
                carrier,
                action: hit.rule.action.clone(),
            });
        }

        for finding in &message.findings {
            let unscannable = finding.is_unscannable()
                || (policy.unscannable.unopened_containers
                    && matches!(finding, Finding::NotOpened { .. }));
            let (rule, action) = if unscannable {
                let action = match policy.unscannable.action {
                    UnscannableAction::Deliver => Action::Log,
                    UnscannableAction::Drop => Action::Drop,
                    UnscannableAction::Hold => Action::Hold,
                };
                (
                    RuleRef::Unscannable {
                        finding: finding.clone(),
                    },
                    action,
                )
            } else if matches!(finding, Finding::Encrypted { .. }) {
                let action = match &policy.encrypted.action {
                    EncryptedAction::DeleteContainer => Action::StripPart,
                    EncryptedAction::Drop => Action::Drop,
                    EncryptedAction::Log => Action::Log,
                    EncryptedAction::Forward { to } => Action::Forward { to: to.clone() },
                };
                (RuleRef::Encrypted, action)
            } else {
                continue;
            };
            reasons.push(Reason {
                rule,
                part: Some(finding.path().clone()),
                carrier: carrier_of(message, finding.path()),
                action,
            });
        }

        let action = reasons
            .iter()
            .map(|r| &r.action)
            .max_by_key(|a| a.severity())
            .cloned()
            .unwrap_or(Action::Deliver);
        let verdict = Verdict { action, reasons };
        // The gateway logs the verdict with the queue id; this line is for debugging the policy.
        tracing::debug!(action = %verdict.action, reasons = verdict.reasons.len(), "policy verdict");
        for reason in &verdict.reasons {
            tracing::info!(reason = %reason, "policy reason");
        }
        verdict
    }

    fn part_reason(&self, rule: RuleRef, part: &Part, action: Action) -> Reason {
        Reason {
            rule,
            part: Some(part.path.clone()),
            carrier: Some(part.carrier.clone()),
            action,
        }
    }

    /// The first file-name rule that blocks `part`, most specific first.
    fn file_rule(&self, part: &Part) -> Option<RuleRef> {
        let rules = &self.policy.file_names;
        if !rules.enabled
            || part.role == PartRole::Body
            || (part.role == PartRole::Member && !rules.inside_archives)
        {
            return None;
        }
        if let Some(raw_name) = &part.file_name {
            // Windows ignores trailing dots and blanks, so `a.exe. ` runs as `a.exe`.
            let name = raw_name.trim_end_matches(['.', ' ']);
            if name.contains(['\u{202e}', '\u{202d}', '\u{2066}', '\u{2067}', '\u{2068}']) {
                return Some(RuleRef::BidiOverride {
                    name: raw_name.clone(),
                });
            }
            if let Some(ext) = extension(name)
                && self.blocked_extensions.contains(&ext)
            {
                let stem = &name[..name.len() - ext.len() - 1];
                let double = rules.double_extensions
                    && extension(stem.trim_end()).is_some_and(|inner| {
                        inner.len() <= 5 && inner.chars().all(char::is_alphanumeric)
                    });
                return Some(if double {
                    RuleRef::DoubleExtension {
                        name: raw_name.clone(),
                        extension: ext,
                    }
                } else {
                    RuleRef::BlockedExtension {
                        name: raw_name.clone(),
                        extension: ext,
                    }
                });
            }
            if let Some(pattern) = self.file_patterns.iter().find(|w| w.matches(name)) {
                return Some(RuleRef::FileNamePattern {
                    name: raw_name.clone(),
                    pattern: pattern.to_string(),
                });
            }
        }
        if rules.blocked_true_types.contains(&part.true_type) {
            return Some(RuleRef::TrueType {
                name: part.file_name.clone(),
                true_type: part.true_type,
            });
        }
        None
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Headers => "headers",
        Scope::Subject => "subject",
        Scope::Body => "body",
        Scope::Attachments => "attachments",
    }
}

/// The lower-cased extension of a file name (after the last dot), if it has one.
fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && !ext.contains(['/', '\\', ' ']))
        .then(|| ext.to_lowercase())
}

/// The carrier of the part at `path`, or of the nearest enclosing part (findings name members that were never
/// extracted, such as an encrypted file inside a zip).
fn carrier_of(message: &Decomposition, path: &PartPath) -> Option<PartPath> {
    message
        .parts
        .iter()
        .filter(|p| {
            path.as_str() == p.path.as_str()
                || path
                    .as_str()
                    .strip_prefix(p.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|p| p.path.as_str().len())
        .map(|p| p.carrier.clone())
}
