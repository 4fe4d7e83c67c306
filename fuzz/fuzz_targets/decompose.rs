//! Any byte string is a possible message: decomposition and policy evaluation must neither panic nor hang.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis_scan::{CompiledPolicy, ContentRule, Limits, MatchMode, Policy, Scope, decompose};

/// Small limits so that the fuzzer reaches every limit quickly instead of spending its time inflating.
fn limits() -> Limits {
    Limits {
        max_depth: 4,
        max_files: 200,
        max_total_bytes: 4 * 1024 * 1024,
        max_time: Duration::from_secs(5),
        max_text_bytes: 64 * 1024,
        ..Limits::default()
    }
}

/// The default policy plus content rules with wildcards in every scope, compiled once.
fn policy() -> &'static CompiledPolicy {
    static POLICY: OnceLock<CompiledPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let rule = |name: &str, terms: &[&str], scopes: Vec<Scope>| ContentRule {
            name: name.into(),
            match_mode: MatchMode::Any,
            terms: terms.iter().map(|t| (*t).to_owned()).collect(),
            not_terms: vec!["newsletter".into()],
            scopes,
            action: portcullis_scan::Action::Quarantine,
        };
        let policy = Policy {
            content_rules: vec![
                rule("words", &["lottery", "wire*transfer", "acc?unt"], vec![Scope::Subject, Scope::Body, Scope::Attachments]),
                rule("headers", &["x-mailer: *"], vec![Scope::Headers]),
            ],
            ..Policy::default()
        };
        CompiledPolicy::compile(policy).expect("fuzz policy compiles")
    })
}

fuzz_target!(|raw: &[u8]| {
    // libfuzzer-sys installs a panic hook that aborts on every panic, even one the decomposer
    // catches on purpose (it contains mail-parser panics with catch_unwind). Restore the default
    // hook once: a panic that escapes `decompose` still reaches libfuzzer-sys's own catch_unwind
    // and is reported as a crash.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let decomposition = decompose(raw, &limits());
    let verdict = policy().evaluate(&decomposition);
    let _ = verdict.explain();
});
