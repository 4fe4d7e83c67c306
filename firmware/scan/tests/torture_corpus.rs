//! MIME torture corpus: real-world odd and malformed messages run through `decompose` and a policy.
//!
//! The corpus is the test messages of two unrelated MIME parsers, found at run time:
//! - mail-parser 0.11's own `resources/eml/` (shipped in the crate source under `$CARGO_HOME/registry/src`);
//! - CPython's `test/test_email/data/msg_*.txt` (Debian package `libpython3.11-testsuite`, or the
//!   `PORTCULLIS_PY_EMAIL_DATA` directory, or the running python3's own test package).
//!
//! Each message is checked with LF and with CRLF line ends: no panic, a bounded time, every MIME leaf part
//! present (the count is compared with Python's email package via `tests/mime_leaves.py`, an independent
//! parser), the decoded bytes accounted for, and a verdict that still delivers the message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portcullis_scan::{
    Action, CompiledPolicy, ContentRule, Decomposition, Limits, MatchMode, PartRole, Policy,
    RuleRef, Scope, Verdict, decompose,
};

/// A message this small must never take long, even in a debug build on a busy two-core CI machine; the
/// watchdog only exists so that a hang fails the test instead of the whole CI run.
const PER_MESSAGE_BOUND: Duration = Duration::from_secs(5);
const WATCHDOG: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum LineEnds {
    Lf,
    Crlf,
}

/// What Python's email package found in one message.
#[derive(Debug, Clone)]
struct PythonView {
    leaves: usize,
    /// Each leaf part's decoded content and its body as it stands in the message (still encoded).
    payloads: Vec<(Vec<u8>, Vec<u8>)>,
}

fn mail_parser_corpus() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mail-parser-0.11.")
        })
        .map(|e| e.path().join("resources/eml"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "mail-parser 0.11 test messages not found under {}/registry/src/*/mail-parser-0.11.*/resources/eml; \
             run `cargo fetch` so the crate source is unpacked",
            cargo_home.display()
        )
    })
}

fn python_email_corpus() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("PORTCULLIS_PY_EMAIL_DATA") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from("/usr/lib/python3.11/test/test_email/data"));
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import os, test.test_email as t; print(os.path.dirname(t.__file__))",
        ])
        .output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("data"));
    }
    candidates
        .into_iter()
        .find(|d| d.join("msg_01.txt").is_file())
        .unwrap_or_else(|| {
            panic!(
                "CPython's email test messages (test/test_email/data/msg_*.txt) not found: \
             install them with `apt-get install libpython3.11-testsuite` \
             (or point PORTCULLIS_PY_EMAIL_DATA at such a directory)"
            )
        })
}

fn corpus() -> Vec<PathBuf> {
    let mail_parser = mail_parser_corpus();
    let python = python_email_corpus();
    let mut files = Vec::new();
    for group in std::fs::read_dir(&mail_parser)
        .expect("read mail-parser corpus")
        .flatten()
    {
        for entry in std::fs::read_dir(group.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "eml") {
                files.push(entry.path());
            }
        }
    }
    let from_mail_parser = files.len();
    for entry in std::fs::read_dir(&python)
        .expect("read python corpus")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("msg_") && name.ends_with(".txt") {
            files.push(entry.path());
        }
    }
    files.sort();
    // Both sets are far larger than this; fewer means a directory layout changed and the test lost its teeth.
    assert!(
        from_mail_parser >= 80,
        "only {from_mail_parser} messages in {}",
        mail_parser.display()
    );
    assert!(
        files.len() - from_mail_parser >= 40,
        "only {} messages in {}",
        files.len() - from_mail_parser,
        python.display()
    );
    files
}

/// Runs `tests/mime_leaves.py` once over the whole corpus.
fn python_views(files: &[PathBuf], ends: LineEnds) -> HashMap<PathBuf, PythonView> {
    use base64::Engine as _;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mime_leaves.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    if ends == LineEnds::Crlf {
        cmd.arg("--crlf");
    }
    let out = cmd
        .args(files)
        .output()
        .expect("run python3 (needed for the independent part count)");
    assert!(
        out.status.success(),
        "mime_leaves.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            let payloads = v["payloads"]
                .as_array()
                .expect("payloads")
                .iter()
                .map(|pair| {
                    let field = |i: usize| {
                        base64::engine::general_purpose::STANDARD
                            .decode(pair[i].as_str().expect("base64"))
                            .expect("base64")
                    };
                    (field(0), field(1))
                })
                .collect();
            let view = PythonView {
                leaves: v["leaves"].as_u64().expect("leaves") as usize,
                payloads,
            };
            (PathBuf::from(v["file"].as_str().expect("file")), view)
        })
        .collect()
}

/// The default policy plus content rules in every scope, so the matcher runs over every part's text. Their
/// actions only tag: a hit must not make a legitimate message undeliverable.
fn policy() -> CompiledPolicy {
    let tag = Action::Tag {
        header: Some("X-Portcullis-Test: torture".into()),
        subject_prefix: None,
    };
    let rule = |name: &str, mode, terms: &[&str], scopes: Vec<Scope>| ContentRule {
        name: name.into(),
        match_mode: mode,
        terms: terms.iter().map(|t| (*t).to_owned()).collect(),
        not_terms: vec!["unsubscribe*now".into()],
        scopes,
        action: tag.clone(),
    };
    let policy = Policy {
        content_rules: vec![
            rule(
                "money",
                MatchMode::Any,
                &["lottery", "wire transfer", "bank acc?unt", "$*million"],
                vec![Scope::Subject, Scope::Body, Scope::Attachments],
            ),
            rule(
                "greeting",
                MatchMode::All,
                &["hello", "world"],
                vec![Scope::Body, Scope::Attachments],
            ),
            rule(
                "mailer",
                MatchMode::Any,
                &["x-mailer: *", "content-type"],
                vec![Scope::Headers],
            ),
        ],
        ..Policy::default()
    };
    CompiledPolicy::compile(policy).expect("test policy compiles")
}

/// Parts that come from MIME structure (not from inside archives), the ones Python also sees.
fn mime_leaves(d: &Decomposition) -> usize {
    d.parts
        .iter()
        .filter(|p| p.role != PartRole::Member)
        .count()
}

struct Outcome {
    decomposition: Decomposition,
    verdict: Verdict,
    explained: Vec<String>,
    elapsed: Duration,
}

/// Decomposes and evaluates on a worker thread so that a panic or a hang is reported per message.
fn run(policy: &'static CompiledPolicy, raw: Vec<u8>) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(8 * 1024 * 1024)
        .spawn(move || {
            let started = Instant::now();
            let result = std::panic::catch_unwind(|| {
                let decomposition = decompose(&raw, &Limits::default());
                let verdict = policy.evaluate(&decomposition);
                (decomposition, verdict)
            });
            let elapsed = started.elapsed();
            let _ = tx.send(result.map(|(decomposition, verdict)| {
                let explained = verdict.explain();
                Outcome {
                    decomposition,
                    verdict,
                    explained,
                    elapsed,
                }
            }));
        })
        .expect("spawn worker");
    match rx.recv_timeout(WATCHDOG) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
        Err(_) => Err(format!("still running after {WATCHDOG:?} (hang)")),
    }
}

fn with_line_ends(raw: Vec<u8>, ends: LineEnds) -> Vec<u8> {
    match ends {
        LineEnds::Lf => raw,
        LineEnds::Crlf => {
            let mut out = Vec::with_capacity(raw.len() + raw.len() / 20);
            for (i, &b) in raw.iter().enumerate() {
                if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                    out.push(b'\r');
                }
                out.push(b);
            }
            out
        }
    }
}

/// An attached message whose own parts `decompose` lists after it (message/partial and
/// message/external-body are kept as single parts).
fn is_walked_message(part: &portcullis_scan::Part) -> bool {
    part.declared_type
        .as_deref()
        .is_some_and(|t| t == "message/rfc822" || t == "message/global")
}

/// Bytes without ASCII whitespace: parsers disagree on which line break ends a part and on CRLF versus LF
/// inside decoded text, and that is not content.
fn squeezed(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Checks one message; returns the problems found (empty when all is well).
fn check(
    file: &Path,
    ends: LineEnds,
    raw: Vec<u8>,
    python: &PythonView,
    policy: &'static CompiledPolicy,
    stats: &mut Stats,
) -> Vec<String> {
    let size = raw.len();
    let outcome = match run(policy, raw) {
        Ok(outcome) => outcome,
        Err(e) => return vec![e],
    };
    let d = &outcome.decomposition;
    let mut problems = Vec::new();
    if outcome.elapsed > PER_MESSAGE_BOUND {
        problems.push(format!(
            "took {:?} for {size} bytes (bound {PER_MESSAGE_BOUND:?})",
            outcome.elapsed
        ));
    }
    let ours = mime_leaves(d);
    if ours == python.leaves {
        stats.same_count += 1;
    } else {
        stats.other_count.push(format!(
            "{} ({ends:?}): {ours} parts, Python {}",
            file.display(),
            python.leaves
        ));
    }
    // No lost part: the decoded content of every leaf Python finds must be in one of our MIME parts (not
    // counting the attached messages decompose walks, whose bytes would contain everything trivially). The part counts
    // may differ: on broken structure the two parsers cut differently (a part without a blank line after
    // its headers, message/delivery-status read as header blocks), but the content must be the same.
    // Top-level header text counts: a body without the blank line before it is read as header fields
    // there, which content rules on headers still see.
    let haystack: Vec<u8> = d
        .parts
        .iter()
        .filter(|p| p.role != PartRole::Member && !is_walked_message(p))
        .flat_map(|p| squeezed(&p.bytes).into_iter().chain([0u8, 0xff, 0]))
        .chain(squeezed(d.header_text.as_bytes()))
        .collect();
    let mut content = 0;
    for (i, (decoded, encoded)) in python.payloads.iter().enumerate() {
        let needle = squeezed(decoded);
        if needle.is_empty() {
            continue;
        }
        content += 1;
        stats.leaves_checked += 1;
        stats.bytes_checked += decoded.len();
        if contains(&haystack, &needle) {
            continue;
        }
        // Invalid base64 or quoted-printable, uuencode: decoders legitimately disagree, and ours keeps the body
        // as it stands, so the scanners still see every byte of it.
        if contains(&haystack, &squeezed(encoded)) {
            stats
                .kept_encoded
                .push(format!("{} ({ends:?}) leaf {}", file.display(), i + 1));
            continue;
        }
        let shown = String::from_utf8_lossy(&decoded[..decoded.len().min(80)]).into_owned();
        let problem = format!(
            "Python's leaf {} ({} bytes, {shown:?}...) is in no part",
            i + 1,
            decoded.len()
        );
        match known_divergence(file) {
            Some(why) => stats.known.push(format!(
                "{} ({ends:?}) leaf {}: {why}",
                file.display(),
                i + 1
            )),
            None => problems.push(problem),
        }
    }
    if ours == 0 && content > 0 {
        problems.push("no parts at all".into());
    }
    if d.is_unscannable() {
        problems.push(format!(
            "unscannable: {:?}",
            d.findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ));
    }
    let deliverable = outcome.verdict.action.severity() <= Action::StripPart.severity();
    let unscannable = outcome
        .verdict
        .reasons
        .iter()
        .any(|r| matches!(r.rule, RuleRef::Unscannable { .. }));
    if !deliverable || unscannable {
        problems.push(format!("not deliverable: {}", outcome.explained.join("; ")));
    }
    if outcome.explained.len() != outcome.verdict.reasons.len() {
        problems.push("verdict explanation lost reasons".into());
    }
    if std::env::var("TORTURE_DUMP").is_ok_and(|f| file.to_string_lossy().contains(&f))
        && ends == LineEnds::Lf
    {
        for p in &d.parts {
            let head = String::from_utf8_lossy(&p.bytes[..p.bytes.len().min(100)]).into_owned();
            eprintln!(
                "DUMP {} {:?} {:?} {} B {head:?}",
                p.path,
                p.role,
                p.declared_type,
                p.bytes.len()
            );
        }
        eprintln!("DUMP header_text {:?}", d.header_text);
    }
    if std::env::var_os("TORTURE_VERBOSE").is_some() {
        eprintln!(
            "{} {ends:?}: {size} B, {ours} parts (Python {}), {:?}, {}",
            file.display(),
            python.leaves,
            outcome.elapsed,
            outcome.verdict
        );
    }
    problems
}

/// What the run covered, printed at the end so a shrinking corpus is noticed.
#[derive(Default)]
struct Stats {
    same_count: usize,
    other_count: Vec<String>,
    leaves_checked: usize,
    bytes_checked: usize,
    kept_encoded: Vec<String>,
    known: Vec<String>,
}

/// Messages where Python's email package reads content that `decompose` does not hand out as a part, each with
/// the reason. A new entry needs a reason a mail admin would accept; a message leaving this list is progress.
fn known_divergence(file: &Path) -> Option<&'static str> {
    let name = file.to_string_lossy();
    const BOUNDARY: &str = "broken boundaries: Python keeps boundary lines or the preamble as part text, \
                            mail-parser reads them as structure";
    const QP: &str =
        "invalid quoted-printable: the decoders differ in a few bytes, the body is there";
    const OURS_DECODED: &str = "decompose decodes (base64 attached message, quoted-printable) where Python keeps the \
                                encoded text";
    const SHARED_BOUNDARY: &str =
        "nested multipart reusing its parent's boundary: the parsers cut it differently";
    const KNOWN: &[(&str, &str)] = &[
        ("eml/malformed/001.eml", BOUNDARY),
        ("eml/malformed/004.eml", BOUNDARY),
        ("eml/malformed/016.eml", BOUNDARY),
        ("eml/malformed/017.eml", BOUNDARY),
        ("eml/thirdparty/005.eml", BOUNDARY),
        ("eml/thirdparty/012.eml", BOUNDARY),
        ("eml/malformed/018.eml", QP),
        ("eml/thirdparty/019.eml", QP),
        ("eml/rfc/008.eml", OURS_DECODED),
        ("eml/thirdparty/003.eml", OURS_DECODED),
        (
            "eml/malformed/019.eml",
            "garbled first header line: Python reads the whole message as body, mail-parser as \
                                   header fields",
        ),
        (
            "eml/malformed/022.eml",
            "message/rfc822 part that is no message: its text is read as header fields",
        ),
        (
            "eml/thirdparty/015.eml",
            "not analysed yet: a Received continuation inside an attached message",
        ),
        ("msg_38.txt", SHARED_BOUNDARY),
        ("msg_39.txt", SHARED_BOUNDARY),
    ];
    KNOWN
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, why)| *why)
}

#[test]
fn every_torture_message_keeps_all_its_parts_and_stays_deliverable() {
    let files = corpus();
    let policy: &'static CompiledPolicy = Box::leak(Box::new(policy()));
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut stats = Stats::default();
    for ends in [LineEnds::Lf, LineEnds::Crlf] {
        let python = python_views(&files, ends);
        for file in &files {
            let raw =
                std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            let view = python
                .get(file)
                .unwrap_or_else(|| panic!("no Python count for {}", file.display()));
            for problem in check(
                file,
                ends,
                with_line_ends(raw, ends),
                view,
                policy,
                &mut stats,
            ) {
                failures.push(format!("{} ({ends:?}): {problem}", file.display()));
            }
            checked += 1;
        }
    }
    eprintln!(
        "{checked} message checks: part count equal to Python's in {}, different in {} (content checked instead); \
         {} non-empty Python leaves ({} bytes) checked, {} kept as they stand, {} known divergences",
        stats.same_count,
        stats.other_count.len(),
        stats.leaves_checked,
        stats.bytes_checked,
        stats.kept_encoded.len(),
        stats.known.len()
    );
    for line in &stats.other_count {
        eprintln!("  count differs: {line}");
    }
    for line in &stats.kept_encoded {
        eprintln!("  kept as it stands (Python decoded it): {line}");
    }
    for line in &stats.known {
        eprintln!("  known divergence: {line}");
    }
    assert!(
        failures.is_empty(),
        "{} problems in {checked} message checks:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
