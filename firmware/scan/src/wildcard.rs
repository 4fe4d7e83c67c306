//! Wildcard patterns as admins write them: `*` any run of characters, `?` one character, `\` escapes the next.

/// One element of a parsed pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// This character (already lower-cased).
    Literal(char),
    /// Any one character.
    One,
    /// Any run of characters, possibly empty.
    Run,
}

/// Splits a pattern into tokens, lower-casing literals so matching is case-insensitive.
pub(crate) fn tokenize(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // `**` means the same as `*`; collapsing keeps matching linear.
                if tokens.last() != Some(&Token::Run) {
                    tokens.push(Token::Run);
                }
            }
            '?' => tokens.push(Token::One),
            '\\' => {
                let escaped = chars.next().unwrap_or('\\');
                tokens.extend(escaped.to_lowercase().map(Token::Literal));
            }
            c => tokens.extend(c.to_lowercase().map(Token::Literal)),
        }
    }
    tokens
}

/// A case-insensitive wildcard pattern matched against a whole string (subjects, file names).
///
/// `*` matches any run of characters (including none), `?` exactly one character, `\*`, `\?` and `\\` the
/// characters themselves. To find a word anywhere in a subject, write `*word*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard {
    source: String,
    tokens: Vec<Token>,
}

impl Wildcard {
    /// Parses a pattern. Every string is a valid pattern.
    pub fn new(pattern: &str) -> Wildcard {
        Wildcard {
            source: pattern.to_owned(),
            tokens: tokenize(pattern),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches, ignoring case.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        let tokens = &self.tokens;
        // Classic glob matching with one backtrack point: on a mismatch, let the last `*` absorb one more
        // character. Runs in O(text × pattern) at worst, never exponential.
        let (mut t, mut p) = (0usize, 0usize);
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::Run) => {
                    backtrack = Some((p, t));
                    p += 1;
                }
                Some(Token::One) => {
                    t += 1;
                    p += 1;
                }
                Some(Token::Literal(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match backtrack {
                    Some((star, star_t)) => {
                        p = star + 1;
                        t = star_t + 1;
                        backtrack = Some((star, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|tok| *tok == Token::Run)
    }
}

impl std::fmt::Display for Wildcard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_and_question_mark_one_character() {
        let w = Wildcard::new("*viagra*");
        assert!(w.matches("Buy VIAGRA now"));
        assert!(w.matches("viagra"));
        assert!(!w.matches("via gra"));
        assert!(Wildcard::new("invoice-????.pdf").matches("Invoice-2024.PDF"));
        assert!(!Wildcard::new("invoice-????.pdf").matches("invoice-24.pdf"));
    }

    #[test]
    fn escaped_wildcards_match_only_themselves() {
        let w = Wildcard::new(r"win\*\?\\");
        assert!(w.matches(r"WIN*?\"));
        assert!(!w.matches(r"winXY\"));
    }

    #[test]
    fn whole_string_must_match() {
        assert!(!Wildcard::new("*.exe").matches("a.exe.txt"));
        assert!(Wildcard::new("*.exe").matches("a.txt.exe"));
        assert!(Wildcard::new("").matches(""));
        assert!(!Wildcard::new("").matches("x"));
    }

    #[test]
    fn pathological_pattern_finishes_quickly() {
        let w = Wildcard::new(&"*a".repeat(40));
        assert!(!w.matches(&format!("{}b", "a".repeat(5000))));
    }
}
