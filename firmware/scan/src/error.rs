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
    #[error("content rule \"{rule}\": term \"{term}\" needs at least one literal character besides wildcards")]
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
