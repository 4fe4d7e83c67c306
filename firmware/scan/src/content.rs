//! Content rules: terms with wildcards, compiled once into one Aho-Corasick automaton over literal anchors.
//!
//! Each term's longest literal run is its anchor. Every text is normalised once (lower case, whitespace runs
//! folded to one space) and scanned once for all anchors of all rules; only where an anchor is found is the
//! rest of its term checked around it. Rules are then decided from the set of terms found.

use aho_corasick::{AhoCorasick, MatchKind};
use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::part::PartPath;
use crate::policy::Action;
use crate::wildcard::{Token, tokenize};

/// Most content rules a policy may hold.
pub const MAX_RULES: usize = 100;
/// Most terms (including NOT terms) one rule may hold.
pub const MAX_TERMS_PER_RULE: usize = 50;
/// Longest run of characters a `*` in a content term may stand for; bounds the work per anchor hit.
const MAX_RUN_CHARS: usize = 256;

/// Where a content rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The top-level header fields, decoded, as `Name: value` lines.
    Headers,
    /// The top-level Subject.
    Subject,
    /// The text the recipient reads: inline text and HTML (rendered to text) of the top-level message.
    Body,
    /// Text of attachments, attached messages and archive members, where text could be extracted.
    Attachments,
}

impl Scope {
    const ALL: [Scope; 4] = [
        Scope::Headers,
        Scope::Subject,
        Scope::Body,
        Scope::Attachments,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether a rule needs all of its terms or any one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Every term must be found (anywhere in the rule's scopes).
    All,
    /// One term is enough.
    #[default]
    Any,
}

/// One content rule as the admin writes it.
///
/// Terms are case-insensitive and match anywhere in the text; `*` stands for a run of non-blank characters
/// (at most 256), `?` for one non-blank character, `\` escapes the next character. Any whitespace in a term
/// matches any run of whitespace (line breaks included). The rule hits when its terms are found (all or any,
/// per `match`) and none of its `not_terms` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRule {
    /// Name shown in verdicts and logs; unique within the policy.
    pub name: String,
    /// All or any of `terms`.
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
    /// Terms to look for.
    pub terms: Vec<String>,
    /// Terms that, when found, stop the rule from hitting (exceptions).
    #[serde(default)]
    pub not_terms: Vec<String>,
    /// Where to look; by default subject, body and attachments.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
    /// What to do when the rule hits.
    #[serde(default = "default_rule_action")]
    pub action: Action,
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Subject, Scope::Body, Scope::Attachments]
}

fn default_rule_action() -> Action {
    Action::Quarantine
}

/// A compiled term: the anchor is found by the automaton, the tokens around it are checked at each hit.
#[derive(Debug)]
struct Term {
    source: String,
    /// Tokens before the anchor, in reverse order (matched leftwards from the anchor).
    before: Vec<Token>,
    /// Tokens after the anchor.
    after: Vec<Token>,
}

#[derive(Debug)]
struct CompiledRule {
    rule: ContentRule,
    terms: Vec<usize>,
    not_terms: Vec<usize>,
    scopes: [bool; 4],
}

/// Where a term was first found, per scope.
pub(crate) type TermHits = Vec<[Option<Option<PartPath>>; 4]>;

/// A text to scan, tagged with where it came from.
pub(crate) struct Source<'a> {
    pub(crate) scope: Scope,
    pub(crate) part: Option<&'a PartPath>,
    pub(crate) text: &'a str,
}

/// A rule that hit, with the terms that made it hit.
#[derive(Debug, Clone)]
pub(crate) struct RuleHit<'r> {
    pub(crate) rule: &'r ContentRule,
    /// Each matched term with where it was found (scope and part).
    pub(crate) matched: Vec<(String, Scope, Option<PartPath>)>,
}

/// All content rules of a policy, compiled once.
#[derive(Debug)]
pub(crate) struct ContentMatcher {
    automaton: Option<AhoCorasick>,
    /// For each automaton pattern (a distinct anchor), the terms that use it.
    anchor_terms: Vec<Vec<usize>>,
    terms: Vec<Term>,
    rules: Vec<CompiledRule>,
    scopes_used: [bool; 4],
}

impl ContentMatcher {
    pub(crate) fn compile(rules: &[ContentRule]) -> Result<ContentMatcher, PolicyError> {
        if rules.len() > MAX_RULES {
            return Err(PolicyError::TooManyRules {
                count: rules.len(),
                max: MAX_RULES,
            });
        }
        let mut anchors: Vec<String> = Vec::new();
        let mut anchor_terms: Vec<Vec<usize>> = Vec::new();
        let mut terms = Vec::new();
        let mut compiled = Vec::new();
        let mut scopes_used = [false; 4];
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(PolicyError::DuplicateRule {
                    rule: rule.name.clone(),
                });
            }
            let count = rule.terms.len() + rule.not_terms.len();
            if count > MAX_TERMS_PER_RULE {
                return Err(PolicyError::TooManyTerms {
                    rule: rule.name.clone(),
                    count,
                    max: MAX_TERMS_PER_RULE,
                });
            }
            if rule.terms.is_empty() {
                return Err(PolicyError::NoTerms {
                    rule: rule.name.clone(),
                });
            }
            let mut add = |source: &str| -> Result<usize, PolicyError> {
                let (anchor, before, after) =
                    split_term(source).ok_or_else(|| PolicyError::TermWithoutLiteral {
                        rule: rule.name.clone(),
                        term: source.to_owned(),
                    })?;
                let id = terms.len();
                terms.push(Term {
                    source: source.to_owned(),
                    before,
                    after,
                });
                match anchors.iter().position(|a| *a == anchor) {
                    Some(p) => anchor_terms[p].push(id),
                    None => {
                        anchors.push(anchor);
                        anchor_terms.push(vec![id]);
                    }
                }
                Ok(id)
            };
            let positive = rule
                .terms
                .iter()
                .map(|t| add(t))
                .collect::<Result<Vec<_>, _>>()?;
            let negative = rule
                .not_terms
                .iter()
                .map(|t| add(t))
                .collect::<Result<Vec<_>, _>>()?;
            let mut scopes = [false; 4];
            for scope in &rule.scopes {
                scopes[scope.index()] = true;
                scopes_used[scope.index()] = true;
            }
            compiled.push(CompiledRule {
                rule: rule.clone(),
                terms: positive,
                not_terms: negative,
                scopes,
            });
        }
        let automaton = if anchors.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&anchors)
                    .map_err(|e| PolicyError::Matcher(e.to_string()))?,
            )
        };
        Ok(ContentMatcher {
            automaton,
            anchor_terms,
            terms,
            rules: compiled,
            scopes_used,
        })
    }

    /// Whether any rule looks at `scope` (so callers can skip collecting texts nobody reads).
    pub(crate) fn uses(&self, scope: Scope) -> bool {
        self.scopes_used[scope.index()]
    }

    /// Scans every source once and returns the rules that hit, in configuration order.
    pub(crate) fn evaluate<'s, 'a>(
        &'s self,
        sources: impl IntoIterator<Item = Source<'a>>,
    ) -> Vec<RuleHit<'s>> {
        let mut hits: TermHits = vec![Default::default(); self.terms.len()];
        if let Some(automaton) = &self.automaton {
            for source in sources {
                if !self.uses(source.scope) {
                    continue;
                }
                self.scan(automaton, &source, &mut hits);
            }
        }
        let mut out = Vec::new();
        for compiled in &self.rules {
            let found = |term: usize| -> Option<(Scope, Option<PartPath>)> {
                Scope::ALL
                    .iter()
                    .filter(|s| compiled.scopes[s.index()])
                    .find_map(|s| hits[term][s.index()].clone().map(|part| (*s, part)))
            };
            if compiled.not_terms.iter().any(|&t| found(t).is_some()) {
                continue;
            }
            let matched: Vec<(String, Scope, Option<PartPath>)> = compiled
                .terms
                .iter()
                .filter_map(|&t| {
                    found(t).map(|(scope, part)| (self.terms[t].source.clone(), scope, part))
                })
                .collect();
            let hit = match compiled.rule.match_mode {
                MatchMode::All => matched.len() == compiled.terms.len(),
                MatchMode::Any => !matched.is_empty(),
            };
            if hit {
                out.push(RuleHit {
                    rule: &compiled.rule,
                    matched,
                });
            }
        }
        out
    }

    fn scan(&self, automaton: &AhoCorasick, source: &Source<'_>, hits: &mut TermHits) {
        let text = normalize(source.text);
        let slot = source.scope.index();
        for m in automaton.find_overlapping_iter(&text) {
            for &term_id in &self.anchor_terms[m.pattern().as_usize()] {
                if hits[term_id][slot].is_some() {
                    continue;
                }
                let term = &self.terms[term_id];
                if matches_from(&term.after, text[m.end()..].chars())
                    && matches_from(&term.before, text[..m.start()].chars().rev())
                {
                    hits[term_id][slot] = Some(source.part.cloned());
                }
            }
        }
    }
}

/// Lower-cases and folds every whitespace run to one space, so terms match across line breaks.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            in_space = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Splits a term into its anchor (the longest literal run) and the tokens before (reversed) and after it.
fn split_term(term: &str) -> Option<(String, Vec<Token>, Vec<Token>)> {
    let normalized: Vec<Token> = {
        let mut out: Vec<Token> = Vec::new();
        for token in tokenize(term.trim()) {
            match token {
                Token::Literal(c) if c.is_whitespace() => {
                    if out.last() != Some(&Token::Literal(' ')) {
                        out.push(Token::Literal(' '));
                    }
                }
                other => out.push(other),
            }
        }
        out
    };
    let (mut best, mut best_len) = ((0, 0), 0);
    let mut start = 0;
    for (i, token) in normalized.iter().enumerate() {
        if !matches!(token, Token::Literal(_)) {
            start = i + 1;
            continue;
        }
        let len = i + 1 - start;
        if len > best_len {
            best = (start, i + 1);
            best_len = len;
        }
    }
    if best_len == 0 {
        return None;
    }
    let anchor: String = normalized[best.0..best.1]
        .iter()
        .map(|t| match t {
            Token::Literal(c) => *c,
            _ => unreachable!("anchor holds literals only"),
        })
        .collect();
    let before = normalized[..best.0].iter().rev().copied().collect();
    let after = normalized[best.1..].to_vec();
    Some((anchor, before, after))
}

/// Whether `tokens` match a prefix of `chars`. A small NFA simulation: `*` (Run) only spans non-blank
/// characters and at most [`MAX_RUN_CHARS`] of them, so the work per call is bounded.
fn matches_from(tokens: &[Token], chars: impl Iterator<Item = char>) -> bool {
    if tokens.is_empty() {
        return true;
    }
    let n = tokens.len();
    let mut active = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    active[0] = true;
    let close = |set: &mut Vec<bool>| {
        for i in 0..n {
            if set[i] && tokens[i] == Token::Run {
                set[i + 1] = true;
            }
        }
    };
    close(&mut active);
    let limit = MAX_RUN_CHARS + n;
    for c in chars.take(limit) {
        if active[n] {
            return true;
        }
        next.iter_mut().for_each(|s| *s = false);
        let mut any = false;
        for i in 0..n {
            if !active[i] {
                continue;
            }
            match tokens[i] {
                Token::Literal(l) if l == c => {
                    next[i + 1] = true;
                    any = true;
                }
                Token::One if c != ' ' => {
                    next[i + 1] = true;
                    any = true;
                }
                Token::Run if c != ' ' => {
                    next[i] = true;
                    any = true;
                }
                _ => {}
            }
        }
        if !any {
            return false;
        }
        close(&mut next);
        std::mem::swap(&mut active, &mut next);
    }
    active[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, mode: MatchMode, terms: &[&str], not_terms: &[&str]) -> ContentRule {
        ContentRule {
            name: name.to_owned(),
            match_mode: mode,
            terms: terms.iter().map(|s| s.to_string()).collect(),
            not_terms: not_terms.iter().map(|s| s.to_string()).collect(),
            scopes: default_scopes(),
            action: Action::Quarantine,
        }
    }

    fn hits(rules: &[ContentRule], body: &str) -> Vec<String> {
        let matcher = ContentMatcher::compile(rules).unwrap();
        let path = PartPath::message().child("body[1]");
        matcher
            .evaluate([Source {
                scope: Scope::Body,
                part: Some(&path),
                text: body,
            }])
            .into_iter()
            .map(|h| h.rule.name.clone())
            .collect()
    }

    #[test]
    fn any_rule_hits_on_one_term_and_all_rule_needs_every_term() {
        let rules = [
            rule("any", MatchMode::Any, &["lottery", "jackpot"], &[]),
            rule("all", MatchMode::All, &["lottery", "jackpot"], &[]),
        ];
        assert_eq!(hits(&rules, "You won the LOTTERY"), ["any"]);
        assert_eq!(hits(&rules, "lottery jackpot"), ["any", "all"]);
        assert!(hits(&rules, "nothing here").is_empty());
    }

    #[test]
    fn not_term_vetoes_the_rule() {
        let rules = [rule(
            "pharma",
            MatchMode::Any,
            &["viagra"],
            &["unsubscribe from medical news"],
        )];
        assert_eq!(hits(&rules, "cheap viagra"), ["pharma"]);
        assert!(hits(&rules, "viagra study.\nUnsubscribe   from medical\nnews").is_empty());
    }

    #[test]
    fn star_and_question_mark_match_within_a_word() {
        let rules = [rule("w", MatchMode::Any, &["v*gra", "c?alis"], &[])];
        assert_eq!(hits(&rules, "buy v1agra"), ["w"]);
        assert_eq!(hits(&rules, "buy vi@gra"), ["w"]);
        assert_eq!(hits(&rules, "buy cialis"), ["w"]);
        assert!(
            hits(&rules, "v is not gra").is_empty(),
            "* does not span blanks"
        );
        assert!(
            hits(&rules, "calis").is_empty(),
            "? needs exactly one character"
        );
    }

    #[test]
    fn escaped_wildcards_are_literal() {
        let rules = [rule("e", MatchMode::Any, &[r"100\% off\*", r"what\?"], &[])];
        assert_eq!(hits(&rules, "get 100% off* today"), ["e"]);
        assert!(hits(&rules, "get 100% offers").is_empty());
        assert_eq!(hits(&rules, "so, what?"), ["e"]);
        assert!(hits(&rules, "whats").is_empty());
    }

    #[test]
    fn term_spans_line_breaks_and_ignores_case() {
        let rules = [rule("phrase", MatchMode::Any, &["wire   the money"], &[])];
        assert_eq!(hits(&rules, "please Wire\r\nTHE\tmoney today"), ["phrase"]);
    }

    #[test]
    fn rule_looks_only_in_its_scopes() {
        let mut r = rule("subject-only", MatchMode::Any, &["invoice"], &[]);
        r.scopes = vec![Scope::Subject];
        let matcher = ContentMatcher::compile(&[r]).unwrap();
        let body = PartPath::message().child("body[1]");
        assert!(
            matcher
                .evaluate([Source {
                    scope: Scope::Body,
                    part: Some(&body),
                    text: "invoice"
                }])
                .is_empty()
        );
        assert_eq!(
            matcher
                .evaluate([Source {
                    scope: Scope::Subject,
                    part: None,
                    text: "Invoice 42"
                }])
                .len(),
            1
        );
    }

    #[test]
    fn compile_refuses_too_many_rules_terms_and_wildcard_only_terms() {
        let many: Vec<ContentRule> = (0..101)
            .map(|i| rule(&format!("r{i}"), MatchMode::Any, &["x"], &[]))
            .collect();
        assert!(matches!(
            ContentMatcher::compile(&many),
            Err(PolicyError::TooManyRules { .. })
        ));
        let terms: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
        assert!(matches!(
            ContentMatcher::compile(&[rule("big", MatchMode::Any, &refs, &[])]),
            Err(PolicyError::TooManyTerms { .. })
        ));
        assert!(matches!(
            ContentMatcher::compile(&[rule("stars", MatchMode::Any, &["*?*"], &[])]),
            Err(PolicyError::TermWithoutLiteral { .. })
        ));
    }

    #[test]
    fn hundred_rules_of_fifty_terms_scan_a_megabyte_quickly() {
        let rules: Vec<ContentRule> = (0..100)
            .map(|r| {
                let terms: Vec<String> = (0..50).map(|t| format!("w{r}x{t}*z")).collect();
                ContentRule {
                    terms,
                    ..rule(&format!("r{r}"), MatchMode::All, &["x"], &[])
                }
            })
            .collect();
        let matcher = ContentMatcher::compile(&rules).unwrap();
        let text = "w1x1aaaa lorem ipsum w2x2 dolor ".repeat(32 * 1024);
        let started = std::time::Instant::now();
        let out = matcher.evaluate([Source {
            scope: Scope::Body,
            part: None,
            text: &text,
        }]);
        assert!(out.is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
