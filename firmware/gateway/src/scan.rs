//! The scanning stage: one verdict per message from the content policy and the antivirus engine.
//!
//! The inbound session calls [`ScanStage::inspect_within`] after the message is durable and
//! before it answers `250`, so a verdict of "reject" can still be said inside the SMTP session
//! instead of as a bounce. If scanning takes longer than `queue.scan_budget`, the session
//! answers `250` anyway and the scheduler scans the message before delivering it (entries are
//! marked `scanned` once a verdict has been applied; see `crate::disposition`).
//!
//! A message is read once, taken apart once ([`portcullis_scan::decompose`]), and every part is
//! handed to both the compiled policy and the antivirus engine. The CPU work runs on the
//! blocking pool so a large message never stalls the reactor, except for a small message with
//! nothing in it to decode into more parts ([`cheap_to_scan`]): its scan is bounded by its size
//! and takes less than the hand-off to the pool and back, so it runs in place.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_av::{DetectionMethod, Engine};
use portcullis_queue::{Queue, QueueEntry, QueueId};
use portcullis_scan::{
    Action, CompiledPolicy, Decomposition, Limits, UnscannableAction, Violation, ViolationReport,
};
use serde::{Deserialize, Serialize};

use crate::config::{AntivirusSection, Config, Unrepairable, VirusAction};
use crate::state::Snapshot;

/// One reason behind a verdict, as plain data: a line an admin understands and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictReason {
    /// Which rule or signature hit, on which part, e.g.
    /// `virus Eicar-Test-Signature found in message/attachment[1] "eicar.com"`.
    pub text: String,
    /// What this reason asks for.
    pub action: Action,
    /// The top-level MIME part that carries what was found (what stripping removes), as a
    /// part path (`message/attachment[2] "invoice.zip"`).
    #[serde(default)]
    pub carrier: Option<String>,
    /// The signature name, when the antivirus engine found something.
    #[serde(default)]
    pub virus: Option<String>,
    /// What kind of violation this is and where, as notifications report it. Absent in records
    /// written before notifications existed; [`VerdictReason::violation_report`] then guesses.
    #[serde(default)]
    pub violation: Option<ViolationReport>,
}

impl VerdictReason {
    /// The violation this reason reports, for notifications: the one recorded at scan time, or
    /// (for older records) a virus when a signature is named and a content violation otherwise.
    pub fn violation_report(&self) -> ViolationReport {
        match (&self.violation, &self.virus) {
            (Some(report), _) => report.clone(),
            (None, Some(name)) => ViolationReport::virus(name, self.carrier.as_deref()),
            (None, None) => ViolationReport {
                violation: Violation::Content,
                detail: self.text.clone(),
                part: self.carrier.clone(),
            },
        }
    }
}

/// The scanning stage's decision about one message: the decisive action and every reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageVerdict {
    /// The most severe action any reason asks for (`deliver` when there is none).
    pub action: Action,
    /// Every policy rule and antivirus detection that hit, in evaluation order.
    pub reasons: Vec<VerdictReason>,
}

impl MessageVerdict {
    /// A verdict with nothing to object to.
    pub fn clean() -> MessageVerdict {
        MessageVerdict {
            action: Action::Deliver,
            reasons: Vec::new(),
        }
    }

    /// Builds a verdict from reasons; the decisive action is the most severe one asked for.
    pub fn from_reasons(reasons: Vec<VerdictReason>) -> MessageVerdict {
        let action = reasons
            .iter()
            .map(|r| &r.action)
            .max_by_key(|a| a.severity())
            .cloned()
            .unwrap_or(Action::Deliver);
        MessageVerdict { action, reasons }
    }

    /// One line per reason, ending with the action it asks for.
    pub fn explain(&self) -> Vec<String> {
        self.reasons
            .iter()
            .map(|r| format!("{} -> {}", r.text, r.action))
            .collect()
    }

    /// The decisive action followed by the reasons, on one line (tracking record, logs).
    pub fn summary(&self) -> String {
        let mut s = self.action.to_string();
        for line in self.explain() {
            s.push_str("; ");
            s.push_str(&line);
        }
        s
    }

    /// The names of the viruses found, without repeats.
    pub fn viruses(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for v in self.reasons.iter().filter_map(|r| r.virus.as_deref()) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// The short label used for the `scan_verdicts` metric and the tracking record.
    pub fn label(&self) -> &'static str {
        action_label(&self.action)
    }
}

/// The metric label of an action.
pub fn action_label(action: &Action) -> &'static str {
    match action {
        Action::Deliver => "deliver",
        Action::Log => "log",
        Action::Tag { .. } => "tag",
        Action::Forward { .. } => "forward",
        Action::StripPart => "strip",
        Action::Hold => "hold",
        Action::Quarantine => "quarantine",
        Action::Drop => "drop",
        Action::Reject => "reject",
    }
}

/// What the scanners need besides the message: built once per configuration snapshot.
#[derive(Clone, Copy)]
pub struct Scanners<'a> {
    /// Decomposition limits.
    pub limits: &'a Limits,
    /// The compiled content policy.
    pub policy: &'a CompiledPolicy,
    /// The antivirus engine, or `None` when antivirus is switched off.
    pub engine: Option<&'a Engine>,
    /// What infected messages get (action, unrepairable, mass mailers).
    pub antivirus: &'a AntivirusSection,
}

impl<'a> Scanners<'a> {
    /// The scanners of a configuration snapshot.
    pub fn of(snap: &'a Snapshot) -> Scanners<'a> {
        Scanners {
            limits: &snap.config.scan.limits,
            policy: &snap.policy,
            engine: snap.config.antivirus.enabled.then_some(&*snap.engine),
            antivirus: &snap.config.antivirus,
        }
    }

    /// Decomposes `raw` once, evaluates the policy and scans the raw message and every part
    /// with the antivirus engine. Pure CPU work: call it on the blocking pool.
    pub fn evaluate(&self, raw: &[u8]) -> MessageVerdict {
        let parts = portcullis_scan::decompose(raw, self.limits);
        self.evaluate_decomposed(raw, &parts)
    }

    /// [`Scanners::evaluate`] on an already decomposed message.
    pub fn evaluate_decomposed(&self, raw: &[u8], message: &Decomposition) -> MessageVerdict {
        let policy_verdict = self.policy.evaluate(message);
        let mut reasons: Vec<VerdictReason> = policy_verdict
            .reasons
            .iter()
            .map(|r| {
                let line = r.to_string();
                let suffix = format!(" -> {}", r.action);
                VerdictReason {
                    text: line.strip_suffix(&suffix).unwrap_or(&line).to_string(),
                    action: r.action.clone(),
                    carrier: r.carrier.as_ref().map(|c| c.to_string()),
                    virus: None,
                    violation: Some(ViolationReport::from_reason(r)),
                }
            })
            .collect();
        if let Some(engine) = self.engine {
            reasons.extend(self.antivirus(engine, raw, message));
        }
        MessageVerdict::from_reasons(reasons)
    }

    fn antivirus(
        &self,
        engine: &Engine,
        raw: &[u8],
        message: &Decomposition,
    ) -> Vec<VerdictReason> {
        let scope = &self.policy.policy().scan;
        let mut reasons = Vec::new();
        let mut found: Vec<String> = Vec::new();
        for part in &message.parts {
            if !scope.includes(part) {
                continue;
            }
            let detections = match &part.file_name {
                Some(name) => engine.scan_named(name, &part.bytes),
                None => engine.scan(&part.bytes),
            };
            for d in detections {
                reasons.push(self.detection_reason(
                    &d.name,
                    d.method,
                    part.path.as_str(),
                    Some(part.carrier.to_string()),
                ));
                found.push(d.name);
            }
        }
        // The raw message catches what decoding hides from no one but a parser that disagrees
        // with ours; a name already found in a part is not reported twice.
        for d in engine.scan(raw) {
            if !found.contains(&d.name) {
                reasons.push(self.detection_reason(&d.name, d.method, "the raw message", None));
            }
        }
        reasons
    }

    fn detection_reason(
        &self,
        name: &str,
        method: DetectionMethod,
        place: &str,
        carrier: Option<String>,
    ) -> VerdictReason {
        if method == DetectionMethod::LimitExceeded {
            // An incomplete antivirus scan is an unscannable message, decided by that policy.
            let action = match self.policy.policy().unscannable.action {
                UnscannableAction::Deliver => Action::Log,
                UnscannableAction::Drop => Action::Drop,
                UnscannableAction::Hold => Action::Hold,
            };
            let violation = ViolationReport {
                violation: Violation::Unscannable,
                detail: format!("antivirus scan incomplete ({name})"),
                part: Some(place.to_string()),
            };
            return VerdictReason {
                text: format!("unscannable: antivirus scan incomplete ({name}) in {place}"),
                action,
                carrier,
                virus: None,
                violation: Some(violation),
            };
        }
        let av = self.antivirus;
        let mass_mailer = av
            .mass_mailers
            .iter()
            .any(|pattern| portcullis_scan::Wildcard::new(pattern).matches(name));
        let action = match av.action {
            // A mass mailer's message is the worm's own product: nothing in it is worth keeping.
            VirusAction::Strip | VirusAction::Log if mass_mailer => Action::Drop,
            VirusAction::Reject => Action::Reject,
            VirusAction::Strip if carrier.is_some() => Action::StripPart,
            // Nothing removable carries it: the infection cannot be taken out.
            VirusAction::Strip => match av.unrepairable {
                Unrepairable::Drop => Action::Drop,
                Unrepairable::Log => Action::Log,
            },
            VirusAction::Quarantine => Action::Quarantine,
            VirusAction::Drop => Action::Drop,
            VirusAction::Log => Action::Log,
        };
        let what = if mass_mailer {
            "mass-mailer worm"
        } else {
            "virus"
        };
        VerdictReason {
            text: format!("{what} {name} found in {place}"),
            action,
            carrier,
            virus: Some(name.to_string()),
            violation: Some(ViolationReport::virus(name, Some(place))),
        }
    }
}

/// What the stage found within its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A verdict, to be applied before the `250`.
    Verdict(MessageVerdict),
    /// The budget ran out; the message is scanned after queueing.
    Deferred,
    /// The message could not be read or the scan failed; it is scanned after queueing.
    Failed(String),
}

/// The scanning stage, shared by the inbound sessions and the scheduler.
///
/// It remembers which messages an SMTP session is scanning right now, so the scheduler does not
/// scan and deliver the same message behind the session's back.
#[derive(Debug, Default)]
pub struct ScanStage {
    claimed: Mutex<HashSet<QueueId>>,
}

impl ScanStage {
    /// Marks a message as being scanned inside its SMTP session (call before the commit).
    pub fn claim(&self, id: &QueueId) {
        self.claimed.lock().expect("scan claims").insert(id.clone());
    }

    /// The session is done with the message: the scheduler may take it.
    pub fn unclaim(&self, id: &QueueId) {
        self.claimed.lock().expect("scan claims").remove(id);
    }

    /// Whether an SMTP session is scanning the message right now.
    pub fn is_claimed(&self, id: &QueueId) -> bool {
        self.claimed.lock().expect("scan claims").contains(id)
    }

    /// Scans a committed message, giving up after `budget`. A scan cut short keeps running on
    /// the blocking pool until `scan.limits.max_time` stops it; its result is discarded.
    pub async fn inspect_within(
        &self,
        snap: Arc<Snapshot>,
        queue: &Queue,
        budget: Duration,
        entry: &QueueEntry,
    ) -> Inspection {
        match tokio::time::timeout(budget, inspect(snap, queue, &entry.id)).await {
            Ok(Ok(verdict)) => Inspection::Verdict(verdict),
            Ok(Err(e)) => Inspection::Failed(e),
            Err(_) => Inspection::Deferred,
        }
    }
}

/// Reads a queued message and scans it on the blocking pool.
pub async fn inspect(
    snap: Arc<Snapshot>,
    queue: &Queue,
    id: &QueueId,
) -> Result<MessageVerdict, String> {
    let raw = queue.message_bytes(id).await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let verdict = if cheap_to_scan(&raw) {
        Scanners::of(&snap).evaluate(&raw)
    } else {
        tokio::task::spawn_blocking(move || Scanners::of(&snap).evaluate(&raw))
            .await
            .map_err(|e| format!("the scan failed: {e}"))?
    };
    tracing::info!(
        queue_id = %id,
        verdict = verdict.label(),
        reasons = verdict.reasons.len(),
        viruses = %verdict.viruses().join(","),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "message scanned"
    );
    Ok(verdict)
}

/// Messages up to this size may be scanned in place (see [`cheap_to_scan`]).
const INLINE_SCAN_MAX: usize = 64 * 1024;

/// Whether a message is small and holds nothing that decodes into more parts: no base64,
/// uuencode, yEnc, BinHex or RTF object data anywhere, and every `Content-Type` text or
/// multipart. Then its parts are its own text and the scan's work is bounded by its size (no
/// archive, document or bomb to open). Anything else, or anything unsure, goes to the
/// blocking pool.
pub(crate) fn cheap_to_scan(raw: &[u8]) -> bool {
    // The markers in lower case, searched in a lower-cased copy of the message taken a chunk at
    // a time: a case-sensitive search uses the SIMD prefilter and runs about six times faster
    // than a case-insensitive automaton (which costs 1.4 ns a byte, as much as the scan of a
    // small plain message itself).
    const MARKERS: [&str; 6] = [
        "content-type:",
        "base64",
        "\nbegin ",
        "=ybegin",
        "binhex",
        "objdata",
    ];
    static FINDER: std::sync::LazyLock<aho_corasick::AhoCorasick> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::new(MARKERS).expect("fixed patterns")
        });
    // Consecutive chunks overlap by one byte less than the longest marker, so every marker lies
    // whole in some chunk (one in the overlap is found twice, which changes nothing).
    const OVERLAP: usize = {
        let (mut longest, mut i) = (0, 0);
        while i < MARKERS.len() {
            if MARKERS[i].len() > longest {
                longest = MARKERS[i].len();
            }
            i += 1;
        }
        longest - 1
    };
    const CHUNK: usize = 4096;
    if raw.len() > INLINE_SCAN_MAX {
        return false;
    }
    let mut lower = [0u8; CHUNK];
    let mut from = 0;
    loop {
        let end = (from + CHUNK).min(raw.len());
        let chunk = &mut lower[..end - from];
        for (l, b) in chunk.iter_mut().zip(&raw[from..end]) {
            *l = b.to_ascii_lowercase();
        }
        for found in FINDER.find_iter(&*chunk) {
            if found.pattern().as_usize() != 0 {
                return false;
            }
            let value = raw[from + found.end()..].trim_ascii_start();
            let kind = |prefix: &[u8]| {
                value
                    .get(..prefix.len())
                    .is_some_and(|v| v.eq_ignore_ascii_case(prefix))
            };
            if !(kind(b"text/") || kind(b"multipart/")) {
                return false;
            }
        }
        if end == raw.len() {
            return true;
        }
        from = end - OVERLAP;
    }
}

/// Loads the antivirus engine at start-up from the definitions store, falling back to the
/// built-in EICAR-only engine (with a warning) when nothing is installed or loading fails, so
/// mail keeps flowing. Blocking (a large set takes about a second): call it on the blocking pool.
pub fn load_engine(config: &Config) -> Engine {
    let dir = config.definitions_dir();
    if !config.antivirus.enabled {
        tracing::info!(target: "av", "antivirus is switched off (antivirus.enabled = false)");
        return Engine::builtin();
    }
    let loaded =
        portcullis_defs::DefinitionsStore::open(&dir).and_then(|store| store.load_current());
    match loaded {
        Ok(Some((engine, report))) => {
            let counts = engine.signature_counts();
            tracing::info!(
                target: "av",
                dir = %dir.display(),
                signatures = counts.total(),
                skipped = report.skipped(),
                memory_bytes = engine.memory_bytes(),
                "antivirus definitions loaded"
            );
            engine
        }
        Ok(None) => {
            tracing::warn!(target: "av", dir = %dir.display(), "no antivirus definitions installed: only the built-in EICAR test signature is active");
            Engine::builtin()
        }
        Err(e) => {
            tracing::error!(target: "av", dir = %dir.display(), error = %e, "cannot load the antivirus definitions: only the built-in EICAR test signature is active");
            Engine::builtin()
        }
    }
}

/// Loads an engine for the command line: `--defs DIR|FILE` if given (added to the built-in
/// EICAR signature), else the current set of the definitions store in `data_dir`, else the
/// built-in engine.
pub fn engine_for_cli(defs: Option<&Path>, data_dir: &Path) -> Result<Engine, String> {
    if let Some(path) = defs {
        return Engine::load(path)
            .map(|(engine, _)| engine)
            .map_err(|e| e.to_string());
    }
    let store_dir = data_dir.join("definitions");
    if store_dir.join("current").exists() {
        let store =
            portcullis_defs::DefinitionsStore::open(&store_dir).map_err(|e| e.to_string())?;
        if let Some((engine, _)) = store.load_current().map_err(|e| e.to_string())? {
            return Ok(engine);
        }
    }
    Ok(Engine::builtin())
}

/// Lets `portcullis scan` descend into archives and mail through the same decomposition the
/// gateway uses (the antivirus crate itself unpacks nothing).
pub struct MailDecomposer {
    /// Limits for each file.
    pub limits: Limits,
}

impl portcullis_av::Decomposer for MailDecomposer {
    fn decompose(&self, label: &str, data: &[u8]) -> Vec<portcullis_av::ScanPart> {
        self.decompose_with_limits(label, data).0
    }

    fn decompose_with_limits(
        &self,
        label: &str,
        data: &[u8],
    ) -> (Vec<portcullis_av::ScanPart>, Vec<String>) {
        // A mailbox holds many messages; the MIME parser would read only the first.
        if let Some(messages) = portcullis_scan::split_mbox(data) {
            let (mut parts, mut limits) = (Vec::new(), Vec::new());
            for (n, message) in messages.into_iter().enumerate() {
                let label = format!("{label}/mbox-message-{}", n + 1);
                parts.push(portcullis_av::ScanPart {
                    label: label.clone(),
                    data: message.to_vec(),
                });
                let (inner, hit) = self.decompose_with_limits(&label, message);
                parts.extend(inner);
                limits.extend(
                    hit.into_iter()
                        .filter(|h| !limits.contains(h))
                        .collect::<Vec<_>>(),
                );
            }
            return (parts, limits);
        }
        // An archive given as a file is not mail: an empty header section makes it the body of
        // a headerless message, which decomposition opens like any attached container.
        let wrapped;
        let input = if portcullis_scan::FileType::detect(data).is_opened_container() {
            wrapped = [b"\r\n".as_slice(), data].concat();
            &wrapped[..]
        } else {
            data
        };
        let decomposed = portcullis_scan::decompose(input, &self.limits);
        let mut limits: Vec<String> = Vec::new();
        for finding in &decomposed.findings {
            if let portcullis_scan::Finding::LimitExceeded { limit, .. } = finding {
                let name = clamscan_limit_name(limit).to_string();
                if !limits.contains(&name) {
                    limits.push(name);
                }
            }
        }
        let parts = decomposed
            .parts
            .into_iter()
            // A file that is not mail becomes one body part: its own bytes, already scanned
            // (or nothing, when the parser took the text for a header).
            .filter(|p| !p.bytes.is_empty() && p.bytes.as_ref() != data)
            .map(|p| {
                let inner = p
                    .path
                    .as_str()
                    .strip_prefix("message/")
                    .unwrap_or(p.path.as_str())
                    .to_string();
                portcullis_av::ScanPart {
                    label: format!("{label}/{inner}"),
                    data: p.bytes.to_vec(),
                }
            })
            .collect();
        (parts, limits)
    }
}

/// The name clamscan gives a limit in its `Heuristics.Limits.Exceeded.*` detections.
fn clamscan_limit_name(limit: &portcullis_scan::LimitHit) -> &'static str {
    use portcullis_scan::LimitHit;
    match limit {
        LimitHit::Depth { .. } => "MaxRecursion",
        LimitHit::Files { .. } => "MaxFiles",
        LimitHit::TotalBytes { .. } => "MaxScanSize",
        LimitHit::CompressionRatio { .. } => "MaxRatio",
        LimitHit::Time { .. } => "MaxScanTime",
        LimitHit::DecoderMemory { .. } => "MaxDecoderMemory",
    }
}

/// The verdict on one saved message, for `portcullis check`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileVerdict {
    /// The file.
    pub file: PathBuf,
    /// The verdict, or why the file could not be checked.
    #[serde(flatten)]
    pub result: FileResult,
}

/// A checked file's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileResult {
    /// The verdict.
    Verdict(MessageVerdict),
    /// The file could not be read.
    Error(String),
}

/// Runs the whole pipeline (decomposition, policy, antivirus) offline on saved messages, with
/// the scanners of `config` and `engine`, as `portcullis check` does.
pub fn check_files(
    config: &Config,
    engine: &Engine,
    files: &[PathBuf],
) -> Result<Vec<FileVerdict>, crate::ConfigError> {
    let policy = config.compile_policy("configuration")?;
    let scanners = Scanners {
        limits: &config.scan.limits,
        policy: &policy,
        engine: config.antivirus.enabled.then_some(engine),
        antivirus: &config.antivirus,
    };
    Ok(files
        .iter()
        .map(|file| FileVerdict {
            file: file.clone(),
            result: match std::fs::read(file) {
                Ok(raw) => FileResult::Verdict(scanners.evaluate(&raw)),
                Err(e) => FileResult::Error(format!("cannot read: {e}")),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanners_with<'a>(
        policy: &'a CompiledPolicy,
        engine: &'a Engine,
        limits: &'a Limits,
        action: VirusAction,
    ) -> Scanners<'a> {
        with_antivirus(
            policy,
            engine,
            limits,
            AntivirusSection {
                action,
                ..AntivirusSection::default()
            },
        )
    }

    fn with_antivirus<'a>(
        policy: &'a CompiledPolicy,
        engine: &'a Engine,
        limits: &'a Limits,
        antivirus: AntivirusSection,
    ) -> Scanners<'a> {
        Scanners {
            limits,
            policy,
            engine: Some(engine),
            antivirus: Box::leak(Box::new(antivirus)),
        }
    }

    fn eicar_mail() -> Vec<u8> {
        let eicar = std::str::from_utf8(portcullis_av::EICAR).unwrap();
        format!(
            "From: a@example.com\r\nTo: b@example.com\r\nSubject: test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"eicar.txt\"\r\n\r\n{eicar}\r\n--b1--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn eicar_attachment_is_a_virus_reason_naming_signature_and_part() {
        let policy = CompiledPolicy::compile(Default::default()).unwrap();
        let engine = Engine::builtin();
        let limits = Limits::default();
        let v =
            scanners_with(&policy, &engine, &limits, VirusAction::Reject).evaluate(&eicar_mail());
        assert_eq!(v.action, Action::Reject);
        assert_eq!(v.viruses(), vec![portcullis_av::EICAR_NAME]);
        let line = &v.explain()[0];
        assert!(
            line.contains("Eicar-Test-Signature") && line.contains("eicar.txt"),
            "{line}"
        );
        assert_eq!(
            v.reasons[0].carrier.as_deref(),
            Some("message/attachment[1] \"eicar.txt\"")
        );
    }

    #[test]
    fn virus_action_strip_strips_the_carrier_and_log_only_logs() {
        let policy = CompiledPolicy::compile(Default::default()).unwrap();
        let engine = Engine::builtin();
        let limits = Limits::default();
        let v =
            scanners_with(&policy, &engine, &limits, VirusAction::Strip).evaluate(&eicar_mail());
        assert_eq!(v.action, Action::StripPart);
        let v = scanners_with(&policy, &engine, &limits, VirusAction::Log).evaluate(&eicar_mail());
        assert_eq!(v.action, Action::Log);
    }

    #[test]
    fn an_infection_that_cannot_be_stripped_follows_the_unrepairable_setting() {
        let policy = CompiledPolicy::compile(Default::default()).unwrap();
        let engine = Engine::builtin();
        let limits = Limits::default();
        let eicar = std::str::from_utf8(portcullis_av::EICAR).unwrap();
        // In a header field: found in the raw message only, in no part that could be removed.
        let in_the_text = format!("From: a@example.com\r\nX-Payload: {eicar}\r\n\r\nhello\r\n");
        for (unrepairable, expected) in [
            (Unrepairable::Drop, Action::Drop),
            (Unrepairable::Log, Action::Log),
        ] {
            let antivirus = AntivirusSection {
                action: VirusAction::Strip,
                unrepairable,
                ..AntivirusSection::default()
            };
            let v = with_antivirus(&policy, &engine, &limits, antivirus)
                .evaluate(in_the_text.as_bytes());
            assert_eq!(v.action, expected, "{:?}", v.explain());
        }
    }

    #[test]
    fn a_mass_mailer_is_deleted_whole_instead_of_repaired_or_logged() {
        let policy = CompiledPolicy::compile(Default::default()).unwrap();
        let engine = Engine::builtin();
        let limits = Limits::default();
        for action in [VirusAction::Strip, VirusAction::Log] {
            let antivirus = AntivirusSection {
                action,
                // EICAR stands in for a worm's signature here.
                mass_mailers: vec!["eicar-test-*".into()],
                ..AntivirusSection::default()
            };
            let v = with_antivirus(&policy, &engine, &limits, antivirus).evaluate(&eicar_mail());
            assert_eq!(v.action, Action::Drop, "{action:?}: {:?}", v.explain());
            assert!(v.explain()[0].starts_with("mass-mailer worm Eicar-Test-Signature found"));
        }
        // The default list knows the classic families and the @mm suffix, not EICAR.
        let defaults = crate::config::default_mass_mailers();
        let is_mass_mailer = |name: &str| {
            defaults
                .iter()
                .any(|p| portcullis_scan::Wildcard::new(p).matches(name))
        };
        assert!(is_mass_mailer("W32.Netsky.P@mm"));
        assert!(is_mass_mailer("Win.Worm.Mydoom-1"));
        assert!(is_mass_mailer("Email-Worm.Win32.Bagle.a"));
        assert!(!is_mass_mailer("Eicar-Test-Signature"));
        assert!(!is_mass_mailer("Win.Trojan.Agent-123"));
    }

    #[test]
    fn clean_message_is_delivered_without_reasons() {
        let policy = CompiledPolicy::compile(Default::default()).unwrap();
        let engine = Engine::builtin();
        let limits = Limits::default();
        let v = scanners_with(&policy, &engine, &limits, VirusAction::Reject)
            .evaluate(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n");
        assert_eq!(v, MessageVerdict::clean());
    }

    #[test]
    fn antivirus_switched_off_ignores_eicar() {
        let policy = CompiledPolicy::compile(Default::default()).unwrap();
        let limits = Limits::default();
        let s = Scanners {
            limits: &limits,
            policy: &policy,
            engine: None,
            antivirus: &AntivirusSection::default(),
        };
        assert_eq!(s.evaluate(&eicar_mail()).action, Action::Deliver);
    }

    #[test]
    fn decomposer_labels_parts_under_the_file_and_skips_the_file_itself() {
        use portcullis_av::Decomposer;
        let d = MailDecomposer {
            limits: Limits::default(),
        };
        let parts = d.decompose("mail.eml", &eicar_mail());
        assert!(
            parts
                .iter()
                .any(|p| p.label == "mail.eml/attachment[1] \"eicar.txt\""),
            "{parts:?}"
        );
        assert!(d.decompose("plain.bin", b"just bytes").is_empty());
    }

    #[test]
    fn decomposer_scans_every_message_of_an_mbox_file() {
        use portcullis_av::Decomposer;
        let d = MailDecomposer {
            limits: Limits::default(),
        };
        let clean = b"From: a@example.org\r\nSubject: clean\r\n\r\nnothing here\r\n\r\n";
        let mut mbox = b"From a@example.org Mon Jan  1 00:00:00 2024\r\n".to_vec();
        mbox.extend_from_slice(clean);
        mbox.extend_from_slice(b"From b@example.org Mon Jan  1 00:00:01 2024\r\n");
        mbox.extend_from_slice(&eicar_mail());
        let parts = d.decompose("box.mbox", &mbox);
        assert!(
            parts
                .iter()
                .any(|p| p.label == "box.mbox/mbox-message-2/attachment[1] \"eicar.txt\""),
            "{parts:?}"
        );
        assert!(parts.iter().any(|p| p.label == "box.mbox/mbox-message-1"));
    }

    #[test]
    fn decomposer_names_the_limit_a_nested_archive_hit_like_clamscan() {
        use portcullis_av::Decomposer;
        use std::io::Write;
        let mut inner = Vec::new();
        {
            let mut gz = flate2_free_gzip(&mut inner);
            gz.write_all(b"innermost").unwrap();
        }
        let mut outer = Vec::new();
        {
            let mut gz = flate2_free_gzip(&mut outer);
            gz.write_all(&inner).unwrap();
        }
        let shallow = MailDecomposer {
            limits: Limits {
                max_depth: 1,
                ..Limits::default()
            },
        };
        let (_, limits) = shallow.decompose_with_limits("nested.gz", &outer);
        assert_eq!(limits, vec!["MaxRecursion".to_string()]);
        let deep = MailDecomposer {
            limits: Limits::default(),
        };
        assert!(deep.decompose_with_limits("nested.gz", &outer).1.is_empty());
    }

    #[test]
    fn decomposer_opens_an_archive_given_as_a_file() {
        use portcullis_av::Decomposer;
        use std::io::Write;
        let mut zip = Vec::new();
        {
            let mut gz = flate2_free_gzip(&mut zip);
            gz.write_all(portcullis_av::EICAR).unwrap();
        }
        let d = MailDecomposer {
            limits: Limits::default(),
        };
        let parts = d.decompose("e.gz", &zip);
        assert!(
            parts.iter().any(|p| p.data == portcullis_av::EICAR),
            "{:?}",
            parts.iter().map(|p| &p.label).collect::<Vec<_>>()
        );
    }

    /// A stored (uncompressed) gzip member writer, so the test needs no compression crate.
    fn flate2_free_gzip(out: &mut Vec<u8>) -> GzipStored<'_> {
        GzipStored {
            out,
            data: Vec::new(),
        }
    }

    struct GzipStored<'a> {
        out: &'a mut Vec<u8>,
        data: Vec<u8>,
    }

    impl std::io::Write for GzipStored<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Drop for GzipStored<'_> {
        fn drop(&mut self) {
            // gzip header, then one stored deflate block, then CRC-32 and size.
            self.out
                .extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
            let n = self.data.len() as u16;
            self.out.push(1);
            self.out.extend_from_slice(&n.to_le_bytes());
            self.out.extend_from_slice(&(!n).to_le_bytes());
            self.out.extend_from_slice(&self.data);
            self.out.extend_from_slice(&crc32(&self.data).to_le_bytes());
            self.out
                .extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn only_small_text_messages_with_nothing_to_decode_are_scanned_in_place() {
        let plain = b"From: a@example.org\r\nSubject: hi\r\n\r\nHello there.\r\n";
        assert!(cheap_to_scan(plain));
        let alternative = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
            Content-Type: text/plain\r\n\r\nhi\r\n--b\r\ncontent-type:  TEXT/html\r\n\r\n\
            <p>hi</p>\r\n--b--\r\n";
        assert!(cheap_to_scan(alternative));
        // Too big, whatever it holds.
        let mut big = plain.to_vec();
        big.resize(INLINE_SCAN_MAX + 1, b'x');
        assert!(!cheap_to_scan(&big));
        // Anything that decodes into more parts, in any case, anywhere.
        for not_cheap in [
            &b"Content-Type: application/zip\r\n\r\nPK"[..],
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--\r\n",
            b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n",
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: BASE64\r\n\r\naGk=\r\n",
            b"Subject: x\r\n\r\nsee below\r\nbegin 644 a.exe\r\n`\r\nend\r\n",
            b"Subject: x\r\n\r\n=ybegin line=128 size=3 name=a.bin\r\nabc\r\n=yend\r\n",
            b"Subject: x\r\n\r\n(This file must be converted with BinHex 4.0)\r\n",
            b"Content-Type: text/rtf\r\n\r\n{\\rtf1{\\object{\\*\\objdata 0105}}}\r\n",
            b"Content-Type: text/html\r\n\r\n<img src=\"data:image/png;base64,iVBOR\">\r\n",
            b"Content-Type:\r\n\r\nno type at all\r\n",
        ] {
            assert!(
                !cheap_to_scan(not_cheap),
                "{}",
                String::from_utf8_lossy(not_cheap)
            );
        }
    }

    #[test]
    fn a_marker_across_a_chunk_boundary_is_found() {
        // The search lower-cases the message 4 KiB at a time; put each marker at every offset
        // around the first boundaries, in mixed case.
        for marker in [
            &b"BASE64"[..],
            b"\nBegin ",
            b"=yBegin",
            b"BinHex",
            b"ObjData",
            b"Content-Type: image/png",
        ] {
            for at in (4096 - 30..4096 + 5).chain(8192 - 30..8192 + 5) {
                let mut message = b"Subject: x\r\n\r\n".to_vec();
                message.resize(at, b'x');
                message.extend_from_slice(marker);
                message.extend_from_slice(b"\r\nmore text\r\n");
                assert!(
                    !cheap_to_scan(&message),
                    "{} at {at}",
                    String::from_utf8_lossy(marker)
                );
            }
        }
        // And a harmless Content-Type there still leaves the message cheap.
        for at in 4096 - 30..4096 + 5 {
            let mut message = b"Subject: x\r\n\r\n".to_vec();
            message.resize(at, b'x');
            message.extend_from_slice(b"\r\nCONTENT-TYPE: Text/plain\r\n\r\nhi\r\n");
            assert!(cheap_to_scan(&message), "at {at}");
        }
    }
}
