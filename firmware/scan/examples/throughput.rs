//! Decomposition + content policy throughput over a directory of real messages (one message per file).
//!
//! `cargo run --release -p portcullis-scan --example throughput -- [--rounds N] DIR...`
//!
//! All messages are read into memory first, so only `decompose` and `CompiledPolicy::evaluate` are timed.
//! The last line is JSON for `tests/bench/decompose-throughput`, which runs a Python peer on the same corpus.

use std::path::PathBuf;
use std::time::Instant;

use portcullis_scan::{
    Action, CompiledPolicy, ContentRule, Limits, MatchMode, Policy, Scope, decompose,
};

/// The content rules of the benchmark; tests/bench/decompose_peer.py matches the same terms.
const RULES: &[(&str, &[&str])] = &[
    (
        "money",
        &[
            "wire transfer",
            "credit card",
            "mortgage",
            "acc?unt number",
            "$$$",
        ],
    ),
    ("pills", &["viagra", "pharmacy", "weight loss"]),
    (
        "marketing",
        &[
            "click here",
            "unsubscribe",
            "limited time",
            "act now",
            "free*offer",
        ],
    ),
];

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 3u32;
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--rounds N");
        args.drain(i..i + 2);
    }
    if args.is_empty() {
        eprintln!("usage: throughput [--rounds N] DIR...");
        std::process::exit(2);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in &args {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir}: {e}"));
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "txt")),
        );
    }
    files.sort();
    let messages: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read message"))
        .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();

    let policy = Policy {
        content_rules: RULES
            .iter()
            .map(|(name, terms)| ContentRule {
                name: (*name).into(),
                match_mode: MatchMode::Any,
                terms: terms.iter().map(|t| (*t).to_owned()).collect(),
                not_terms: Vec::new(),
                scopes: vec![Scope::Subject, Scope::Body, Scope::Attachments],
                action: Action::Tag {
                    header: Some(format!("X-Bench: {name}")),
                    subject_prefix: None,
                },
            })
            .collect(),
        ..Policy::default()
    };
    let policy = CompiledPolicy::compile(policy).expect("benchmark policy compiles");
    let limits = Limits::default();

    let (mut parts, mut hits) = (0usize, 0usize);
    let started = Instant::now();
    for _ in 0..rounds {
        parts = 0;
        hits = 0;
        for raw in &messages {
            let decomposition = decompose(raw, &limits);
            parts += decomposition.parts.len();
            hits += usize::from(!policy.evaluate(&decomposition).reasons.is_empty());
        }
    }
    let seconds = started.elapsed().as_secs_f64() / f64::from(rounds);
    let mb_per_s = bytes as f64 / 1e6 / seconds;
    let msgs_per_s = messages.len() as f64 / seconds;
    println!(
        "portcullis-scan: {} messages, {:.1} MB, {parts} parts, {hits} with a policy hit: {seconds:.3} s per round, \
         {mb_per_s:.1} MB/s, {msgs_per_s:.0} messages/s (mean of {rounds} rounds)",
        messages.len(),
        bytes as f64 / 1e6
    );
    println!(
        "{{\"messages\": {}, \"bytes\": {bytes}, \"parts\": {parts}, \"hits\": {hits}, \"seconds\": {seconds}, \
         \"mb_per_s\": {mb_per_s}, \"msgs_per_s\": {msgs_per_s}}}",
        messages.len()
    );
}
