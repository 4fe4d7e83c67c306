//! Errors raised while compiling a policy (decomposition itself never fails: it reports findings instead).

/// A policy that cannot be used as written. Each message names the rule so the admin can fix the config.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// More content rules than the engine accepts.
    #[error("{count} content rules configured; at most {max} are allowed")]
    TooManyRules {
        /// Rules configured.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A content rule has more terms (including NOT terms) than allowed.
    #[error("content rule \"{rule}\" has {count} terms; at most {max} are allowed")]
    TooManyTerms {
        /// Rule name.
        rule: String,
        /// Terms configured (terms plus NOT terms).
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A content rule has no positive term, so it could never match.
    #[error("content rule \"{rule}\" has no terms")]
    NoTerms {
        /// Rule name.
        rule: String,
    },
    /// A term is only wildcards (or empty): it would match everything and cannot be searched for efficiently.
    #[error(
        "content rule \"{rule}\": term \"{term}\" needs at least one literal character besides wildcards"
    )]
    TermWithoutLiteral {
        /// Rule name.
        rule: String,
        /// The offending term.
        term: String,
    },
    /// Two content rules share a name, which would make verdicts ambiguous.
    #[error("content rule name \"{rule}\" is used more than once")]
    DuplicateRule {
        /// Rule name.
        rule: String,
    },
    /// A pattern (subject or file name) is empty.
    #[error("empty {what} pattern")]
    EmptyPattern {
        /// Which list the pattern is in ("subject", "file name").
        what: &'static str,
    },
    /// The term matcher could not be built (should not happen with the limits above).
    #[error("content rules could not be compiled: {0}")]
    Matcher(String),
}

/// Notification settings that cannot be used as written. Raised at config load, naming the key to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifyError {
    /// An address key is not a plain `local@domain` address.
    #[error(
        "notifications.{key}: \"{address}\" is not a plain address (local@domain, no blanks or brackets)"
    )]
    BadAddress {
        /// The key (`admin`, `from`).
        key: &'static str,
        /// The value found.
        address: String,
    },
    /// Admin notifications are on but no admin address is set.
    #[error(
        "notifications.{violation}.admin is on but notifications.admin (the admin address) is not set"
    )]
    NoAdminAddress {
        /// The violation kind whose `admin` is on.
        violation: &'static str,
    },
    /// A template uses a tag that is not known.
    #[error(
        "notifications.{template}: unknown tag {tag} (known: ${{MSGINFO}}, ${{VIRUSINFO}}, ${{CONTENTINFO}}, ${{ENCRYPTINFO}}, ${{UNSCANNABLEINFO}}, ${{DISPOSITION}}, ${{SUBJECT}})"
    )]
    UnknownTag {
        /// Which template (`templates.sender.body`, …).
        template: String,
        /// The tag as written, e.g. `${VIRUSNAME}`.
        tag: String,
    },
}

/// A disclaimer that cannot be used as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DisclaimerError {
    /// The text is longer than allowed.
    #[error("disclaimer.text has {chars} characters; at most {max} are allowed")]
    TooLong {
        /// Characters in the text.
        chars: usize,
        /// The maximum.
        max: usize,
    },
    /// The text contains a control character other than a line break or tab.
    #[error(
        "disclaimer.text contains a control character (U+{code:04X}); only line breaks and tabs are allowed"
    )]
    ControlCharacter {
        /// The code point.
        code: u32,
    },
}
