//! The engine: loading ClamAV text signature files and scanning buffers.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::AvError;
use crate::hashes::{HashKind, HashSet3, ParsedDigest};
use crate::heuristics;
use crate::names::{NameId, NameTable};
use crate::pattern::{Budget, Offset, PatternSet, PatternSetBuilder, Refusal, Target};

/// The EICAR anti-virus test string, split so that this source file is not itself detected by
/// scanners on developers' machines.
pub const EICAR: &[u8] = concat!(
    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
    "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
)
.as_bytes();

/// The name reported for EICAR (the name ClamAV has used for its built-in EICAR detection).
pub const EICAR_NAME: &str = "Eicar-Test-Signature";

/// Reported when pattern verification ran out of budget: the scan is incomplete, so the
/// result is treated as a detection (fail closed) and the policy decides.
pub const LIMIT_EXCEEDED_NAME: &str = "Heuristics.Limits.Exceeded.PatternVerification";

/// Default verification budget per scanned buffer, in candidate positions tried. Honest files
/// use a tiny fraction; a file crafted to trigger millions of partial matches stops here.
pub const DEFAULT_VERIFICATION_BUDGET: u64 = 50_000_000;

/// Lines longer than this are skipped: no real signature is this long, and reading an endless
/// line must not exhaust memory.
const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// How many skipped lines are kept as examples per file (all are counted).
const MAX_SKIPPED_EXAMPLES: usize = 20;

/// The ClamAV text formats we read, chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureFormat {
    /// `.hdb`/`.hdu`: `HASH:SIZE:NAME` whole-file hashes (MD5; SHA-1/SHA-256 also accepted).
    Hdb,
    /// `.hsb`/`.hsu`: `HASH:SIZE:NAME` whole-file SHA-1/SHA-256 hashes (MD5 also accepted).
    Hsb,
    /// `.mdb`/`.mdu`/`.msb`/`.msu`: `SIZE:HASH:NAME` PE section hashes.
    Mdb,
    /// `.ndb`/`.ndu`: `NAME:TARGET:OFFSET:HEXSIG` byte patterns (documented subset).
    Ndb,
}

impl SignatureFormat {
    /// The format of a file, from its extension; `None` for anything we do not read.
    pub fn from_path(path: &Path) -> Option<SignatureFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "hdb" | "hdu" => Some(SignatureFormat::Hdb),
            "hsb" | "hsu" => Some(SignatureFormat::Hsb),
            "mdb" | "mdu" | "msb" | "msu" => Some(SignatureFormat::Mdb),
            "ndb" | "ndu" => Some(SignatureFormat::Ndb),
            _ => None,
        }
    }
}

/// How a detection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectionMethod {
    /// The hash of the whole buffer matched (.hdb/.hsb).
    FileHash(HashKind),
    /// The hash of a PE section matched (.mdb/.msb).
    SectionHash(HashKind),
    /// A byte pattern matched (.ndb or the built-in EICAR).
    Pattern,
    /// A heuristic without signature (e.g. an executable disguised by its name).
    Heuristic,
    /// The scan hit a safety limit and is incomplete.
    LimitExceeded,
}

/// One thing found in a scanned buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// The signature or heuristic name, e.g. `Win.Trojan.Agent-123` or `Eicar-Test-Signature`.
    pub name: String,
    /// How it was found.
    pub method: DetectionMethod,
}

/// Why one signature line was not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The line does not follow the format.
    Malformed(String),
    /// The line is valid ClamAV but uses a feature we do not implement (see the README).
    Unsupported(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Malformed(reason) => write!(f, "malformed: {reason}"),
            SkipReason::Unsupported(reason) => write!(f, "unsupported: {reason}"),
        }
    }
}

impl From<Refusal> for SkipReason {
    fn from(refusal: Refusal) -> SkipReason {
        match refusal {
            Refusal::Malformed(reason) => SkipReason::Malformed(reason),
            Refusal::Unsupported(reason) => SkipReason::Unsupported(reason),
        }
    }
}

/// A skipped line, kept as an example in the load report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: u64,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// What happened to one signature source (file or in-memory text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceReport {
    /// The file path or label.
    pub source: String,
    /// The format it was read as; `None` if it was ignored.
    pub format: Option<SignatureFormat>,
    /// Signatures loaded.
    pub loaded: u64,
    /// Lines skipped (malformed or unsupported); never fatal.
    pub skipped: u64,
    /// The first few skipped lines, with reasons.
    pub skipped_examples: Vec<SkippedLine>,
    /// Set when the whole file was ignored (e.g. an unknown extension in a directory).
    pub ignored: Option<String>,
}

/// What a load did, file by file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// One entry per source, in load order.
    pub sources: Vec<SourceReport>,
}

impl LoadReport {
    /// Signatures loaded from all sources (the built-in EICAR not counted).
    pub fn loaded(&self) -> u64 {
        self.sources.iter().map(|s| s.loaded).sum()
    }

    /// Lines skipped in all sources.
    pub fn skipped(&self) -> u64 {
        self.sources.iter().map(|s| s.skipped).sum()
    }
}

/// How many signatures of each kind an engine holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureCounts {
    /// Whole-file hash signatures (after removing duplicates).
    pub file_hashes: usize,
    /// PE section hash signatures (after removing duplicates).
    pub section_hashes: usize,
    /// Byte patterns, including the built-in EICAR.
    pub patterns: usize,
}

impl SignatureCounts {
    /// All signatures together.
    pub fn total(&self) -> usize {
        self.file_hashes + self.section_hashes + self.patterns
    }
}

/// Collects signatures, then builds an immutable [`Engine`].
#[derive(Debug)]
pub struct EngineBuilder {
    names: NameTable,
    file_hashes: HashSet3,
    section_hashes: HashSet3,
    patterns: PatternSetBuilder,
    report: LoadReport,
    verification_budget: u64,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// A builder holding only the built-in EICAR signature.
    pub fn new() -> EngineBuilder {
        let mut builder = EngineBuilder {
            names: NameTable::default(),
            file_hashes: HashSet3::default(),
            section_hashes: HashSet3::default(),
            patterns: PatternSetBuilder::default(),
            report: LoadReport::default(),
            verification_budget: DEFAULT_VERIFICATION_BUDGET,
        };
        if let Some(name) = builder.names.push(EICAR_NAME) {
            // EICAR is a fixed 68-byte literal, so adding it cannot be refused.
            let _ = builder.patterns.add_literal(name, EICAR);
        }
        builder
    }

    /// Sets the per-buffer pattern verification budget (see [`DEFAULT_VERIFICATION_BUDGET`]).
    pub fn verification_budget(&mut self, steps: u64) -> &mut Self {
        self.verification_budget = steps;
        self
    }

    /// Loads a signature file, or every signature file directly inside a directory (sorted by
    /// name; files with other extensions are recorded as ignored, subdirectories are not entered).
    pub fn load_path(&mut self, path: &Path) -> Result<&mut Self, AvError> {
        let io = |action, error| AvError::Io {
            action,
            path: path.to_path_buf(),
            error,
        };
        let metadata = std::fs::metadata(path).map_err(|e| io("read signatures from", e))?;
        if !metadata.is_dir() {
            return self.load_file(path);
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io("list signature directory", e))? {
            let entry = entry.map_err(|e| io("list signature directory", e))?;
            entries.push(entry.path());
        }
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                continue;
            }
            if SignatureFormat::from_path(&entry).is_some() {
                self.load_file(&entry)?;
            } else {
                self.report.sources.push(SourceReport {
                    source: entry.display().to_string(),
                    format: None,
                    loaded: 0,
                    skipped: 0,
                    skipped_examples: Vec::new(),
                    ignored: Some("not a supported signature file extension".into()),
                });
            }
        }
        Ok(self)
    }

    /// Loads one signature file; its format comes from its extension.
    pub fn load_file(&mut self, path: &Path) -> Result<&mut Self, AvError> {
        let format = SignatureFormat::from_path(path).ok_or_else(|| AvError::UnsupportedFile {
            path: path.to_path_buf(),
        })?;
        let file = File::open(path).map_err(|error| AvError::Io {
            action: "open signature file",
            path: path.to_path_buf(),
            error,
        })?;
        self.add_signatures(format, &path.display().to_string(), BufReader::new(file))
            .map_err(|error| AvError::Io {
                action: "read signature file",
                path: path.to_path_buf(),
                error,
            })?;
        Ok(self)
    }

    /// Adds signatures from in-memory text (tests, built-in sets).
    pub fn add_text(&mut self, format: SignatureFormat, source: &str, text: &str) -> &mut Self {
        // Reading from a byte slice cannot fail.
        let _ = self.add_signatures(format, source, text.as_bytes());
        self
    }

    /// Adds signatures from a reader, line by line. Bad lines are skipped and counted; only an
    /// I/O error of the reader fails.
    pub fn add_signatures(
        &mut self,
        format: SignatureFormat,
        source: &str,
        mut reader: impl BufRead,
    ) -> std::io::Result<&mut Self> {
        let mut report = SourceReport {
            source: source.to_string(),
            format: Some(format),
            loaded: 0,
            skipped: 0,
            skipped_examples: Vec::new(),
            ignored: None,
        };
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            number += 1;
            let outcome = if line.len() as u64 > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
                skip_rest_of_line(&mut reader)?;
                Err(SkipReason::Unsupported(format!(
                    "line longer than {MAX_LINE_BYTES} bytes"
                )))
            } else {
                self.add_line(format, &line)
            };
            match outcome {
                Ok(true) => report.loaded += 1,
                Ok(false) => {}
                Err(reason) => {
                    report.skipped += 1;
                    if report.skipped_examples.len() < MAX_SKIPPED_EXAMPLES {
                        report.skipped_examples.push(SkippedLine {
                            line: number,
                            reason,
                        });
                    }
                }
            }
        }
        if report.skipped > 0 {
            let first = report
                .skipped_examples
                .first()
                .map(|s| format!("line {}: {}", s.line, s.reason));
            tracing::warn!(
                source,
                loaded = report.loaded,
                skipped = report.skipped,
                first_skipped = first.as_deref().unwrap_or(""),
                "signature lines skipped"
            );
        }
        tracing::info!(source, format = ?format, loaded = report.loaded, "signature file loaded");
        self.report.sources.push(report);
        Ok(self)
    }

    /// Parses one line; `Ok(false)` for blank lines and `#` comments.
    fn add_line(&mut self, format: SignatureFormat, raw: &[u8]) -> Result<bool, SkipReason> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| SkipReason::Malformed("line is not UTF-8 text".into()))?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() || text.starts_with('#') {
            return Ok(false);
        }
        let fields: Vec<&str> = text.split(':').collect();
        match format {
            SignatureFormat::Hdb | SignatureFormat::Hsb => {
                check_field_count(&fields, 3, 5, "HASH:SIZE:NAME")?;
                let digest = ParsedDigest::from_hex(fields[0]).map_err(SkipReason::Malformed)?;
                let size = parse_size(fields[1])?;
                let name = self.name(fields[2])?;
                self.file_hashes.insert(size, digest, name);
            }
            SignatureFormat::Mdb => {
                check_field_count(&fields, 3, 5, "SIZE:HASH:NAME")?;
                let size = parse_size(fields[0])?;
                let digest = ParsedDigest::from_hex(fields[1]).map_err(SkipReason::Malformed)?;
                let name = self.name(fields[2])?;
                self.section_hashes.insert(size, digest, name);
            }
            SignatureFormat::Ndb => {
                check_field_count(&fields, 4, 6, "NAME:TARGET:OFFSET:HEXSIG")?;
                let target = Target::parse(fields[1])?;
                let offset = Offset::parse(fields[2])?;
                if fields[3].is_empty() {
                    return Err(SkipReason::Malformed("empty hex signature".into()));
                }
                let name = self.name(fields[0])?;
                self.patterns.add(name, target, offset, fields[3])?;
            }
        }
        Ok(true)
    }

    fn name(&mut self, name: &str) -> Result<NameId, SkipReason> {
        if name.trim().is_empty() {
            return Err(SkipReason::Malformed("empty signature name".into()));
        }
        self.names
            .push(name)
            .ok_or_else(|| SkipReason::Unsupported("signature names exceed 4 GiB".into()))
    }

    /// Sorts the hash tables and builds the pattern automaton.
    pub fn build(self) -> Result<(Engine, LoadReport), AvError> {
        let EngineBuilder {
            mut names,
            mut file_hashes,
            mut section_hashes,
            patterns,
            report,
            verification_budget,
        } = self;
        file_hashes.finish();
        section_hashes.finish();
        names.shrink();
        let patterns = patterns.build()?;
        let engine = Engine {
            names,
            file_hashes,
            section_hashes,
            patterns,
            verification_budget,
        };
        let counts = engine.signature_counts();
        tracing::info!(
            file_hashes = counts.file_hashes,
            section_hashes = counts.section_hashes,
            patterns = counts.patterns,
            skipped = report.skipped(),
            memory_bytes = engine.memory_bytes(),
            "antivirus engine built"
        );
        Ok((engine, report))
    }
}

fn check_field_count(
    fields: &[&str],
    min: usize,
    max: usize,
    layout: &str,
) -> Result<(), SkipReason> {
    if fields.len() < min || fields.len() > max {
        return Err(SkipReason::Malformed(format!(
            "{} fields separated by ':'; expected {layout} (optionally followed by :MINFL[:MAXFL])",
            fields.len()
        )));
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<Option<u32>, SkipReason> {
    if text == "*" {
        return Ok(None);
    }
    let size: u64 = text
        .parse()
        .map_err(|_| SkipReason::Malformed(format!("size {text:?} is neither a number nor '*'")))?;
    u32::try_from(size)
        .map(Some)
        .map_err(|_| SkipReason::Unsupported(format!("size {size} is over 4 GiB")))
}

/// Discards the rest of an overlong line.
fn skip_rest_of_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            reader.consume(end + 1);
            return Ok(());
        }
        let len = buffer.len();
        reader.consume(len);
    }
}

/// An immutable, loaded signature set. Scanning takes `&self`, so one `Arc<Engine>` serves
/// every concurrent scan, and swapping in a new engine never mixes old and new signatures.
#[derive(Debug)]
pub struct Engine {
    names: NameTable,
    file_hashes: HashSet3,
    section_hashes: HashSet3,
    patterns: PatternSet,
    verification_budget: u64,
}

impl Engine {
    /// An engine with only the built-in EICAR signature.
    pub fn builtin() -> Engine {
        match EngineBuilder::new().build() {
            Ok((engine, _)) => engine,
            // One literal always fits in an automaton; an empty engine is the safe fallback.
            Err(_) => Engine {
                names: NameTable::default(),
                file_hashes: HashSet3::default(),
                section_hashes: HashSet3::default(),
                patterns: PatternSet::default(),
                verification_budget: DEFAULT_VERIFICATION_BUDGET,
            },
        }
    }

    /// A builder, starting with the built-in EICAR signature.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// Loads a signature file or a directory of them (see [`EngineBuilder::load_path`]).
    pub fn load(path: &Path) -> Result<(Engine, LoadReport), AvError> {
        let mut builder = EngineBuilder::new();
        builder.load_path(path)?;
        builder.build()
    }

    /// How many signatures of each kind are loaded.
    pub fn signature_counts(&self) -> SignatureCounts {
        SignatureCounts {
            file_hashes: self.file_hashes.len(),
            section_hashes: self.section_hashes.len(),
            patterns: self.patterns.len(),
        }
    }

    /// Approximate heap memory held by the signatures, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.names.heap_bytes()
            + self.file_hashes.heap_bytes()
            + self.section_hashes.heap_bytes()
            + self.patterns.heap_bytes()
    }

    /// Scans one buffer (a whole file, a decomposed part, or a raw message) with every
    /// signature. Each name is reported once; an empty result means clean.
    pub fn scan(&self, data: &[u8]) -> Vec<Detection> {
        let mut detections = Vec::new();
        let mut hashes = Vec::new();
        self.file_hashes.matches(data, &mut hashes);
        for (kind, name) in hashes.drain(..) {
            self.report(&mut detections, name, DetectionMethod::FileHash(kind));
        }
        if self.section_hashes.len() > 0 {
            for section in crate::pe::pe_sections(data) {
                self.section_hashes.matches(section, &mut hashes);
            }
            for (kind, name) in hashes.drain(..) {
                self.report(&mut detections, name, DetectionMethod::SectionHash(kind));
            }
        }
        let mut budget = Budget::new(self.verification_budget);
        let mut names = Vec::new();
        self.patterns.matches(data, &mut budget, &mut names);
        for name in names {
            self.report(&mut detections, name, DetectionMethod::Pattern);
        }
        if budget.exhausted() {
            tracing::warn!(
                size = data.len(),
                budget = self.verification_budget,
                "pattern verification budget exhausted"
            );
            push_unique(
                &mut detections,
                LIMIT_EXCEEDED_NAME,
                DetectionMethod::LimitExceeded,
            );
        }
        detections
    }

    /// Scans a section of a PE file that the caller extracted itself against the section hashes.
    pub fn scan_section(&self, section: &[u8]) -> Vec<Detection> {
        let mut hashes = Vec::new();
        self.section_hashes.matches(section, &mut hashes);
        let mut detections = Vec::new();
        for (kind, name) in hashes {
            self.report(&mut detections, name, DetectionMethod::SectionHash(kind));
        }
        detections
    }

    /// Like [`scan`](Self::scan), plus the name heuristics for an attachment called `file_name`.
    pub fn scan_named(&self, file_name: &str, data: &[u8]) -> Vec<Detection> {
        let mut detections = self.scan(data);
        for name in heuristics::disguised_executable(file_name, data) {
            push_unique(&mut detections, name, DetectionMethod::Heuristic);
        }
        detections
    }

    fn report(&self, detections: &mut Vec<Detection>, name: NameId, method: DetectionMethod) {
        push_unique(detections, &self.names.get(name), method);
    }
}

fn push_unique(detections: &mut Vec<Detection>, name: &str, method: DetectionMethod) {
    if !detections.iter().any(|d| d.name == name) {
        detections.push(Detection {
            name: name.to_string(),
            method,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pe::tests::tiny_pe;

    fn md5_hex(data: &[u8]) -> String {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(data))
    }

    fn engine(format: SignatureFormat, text: &str) -> (Engine, LoadReport) {
        let mut builder = EngineBuilder::new();
        builder.add_text(format, "test", text);
        builder.build().unwrap()
    }

    fn names(detections: &[Detection]) -> Vec<&str> {
        detections.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn eicar_is_detected_without_any_signature_file() {
        let engine = Engine::builtin();
        let found = engine.scan(EICAR);
        assert_eq!(names(&found), vec![EICAR_NAME]);
        let mut padded = b"Subject: test\r\n\r\n".to_vec();
        padded.extend_from_slice(EICAR);
        padded.extend_from_slice(b"\r\n");
        assert_eq!(names(&engine.scan(&padded)), vec![EICAR_NAME]);
        assert!(engine.scan(b"hello world").is_empty());
    }

    #[test]
    fn hdb_line_detects_the_file_with_that_md5_and_size() {
        let sample = b"malicious sample body";
        let text = format!("{}:{}:Test.Sample\n", md5_hex(sample), sample.len());
        let (engine, report) = engine(SignatureFormat::Hdb, &text);
        assert_eq!(report.loaded(), 1);
        let found = engine.scan(sample);
        assert_eq!(
            found,
            vec![Detection {
                name: "Test.Sample".into(),
                method: DetectionMethod::FileHash(HashKind::Md5)
            }]
        );
        assert!(engine.scan(b"malicious sample bodY").is_empty());
    }

    #[test]
    fn hsb_lines_with_sha1_sha256_and_star_size_are_loaded() {
        use sha1::Sha1;
        use sha2::{Digest, Sha256};
        let a = b"first sample";
        let b = b"second sample";
        let text = format!(
            "{}:{}:Test.Sha1\n{}:*:Test.Sha256:73\n",
            hex::encode(Sha1::digest(a)),
            a.len(),
            hex::encode(Sha256::digest(b))
        );
        let (engine, report) = engine(SignatureFormat::Hsb, &text);
        assert_eq!(report.loaded(), 2);
        assert_eq!(names(&engine.scan(a)), vec!["Test.Sha1"]);
        assert_eq!(names(&engine.scan(b)), vec!["Test.Sha256"]);
    }

    #[test]
    fn mdb_line_detects_a_pe_section_with_that_hash() {
        let section = b"evil code section";
        let pe = tiny_pe(&[b"harmless", section]);
        let text = format!("{}:{}:Test.Section\n", section.len(), md5_hex(section));
        let (engine, _) = engine(SignatureFormat::Mdb, &text);
        assert_eq!(
            engine.scan(&pe),
            vec![Detection {
                name: "Test.Section".into(),
                method: DetectionMethod::SectionHash(HashKind::Md5)
            }]
        );
        assert_eq!(names(&engine.scan_section(section)), vec!["Test.Section"]);
        assert!(
            engine.scan(section).is_empty(),
            "a bare buffer is not a PE file"
        );
    }

    #[test]
    fn ndb_line_detects_its_pattern() {
        let (engine, report) = engine(
            SignatureFormat::Ndb,
            "Test.Pattern:0:*:6576696c{2-3}636f6465\n",
        );
        assert_eq!(report.loaded(), 1);
        assert_eq!(
            names(&engine.scan(b"some evil..code here")),
            vec!["Test.Pattern"]
        );
        assert!(engine.scan(b"some evil.code here").is_empty());
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted_without_failing_the_file() {
        let good = b"good";
        let text = format!(
            "# comment\n\n{}:{}:Good.Sig\nnot a signature\nzz:4:Bad.Hex\n{}:big:Bad.Size\n{}:4:\n{}:99999999999:Too.Big\r\n",
            md5_hex(good),
            good.len(),
            md5_hex(good),
            md5_hex(good),
            md5_hex(good)
        );
        let (engine, report) = engine(SignatureFormat::Hdb, &text);
        let source = &report.sources[0];
        assert_eq!(source.loaded, 1);
        assert_eq!(source.skipped, 5);
        assert_eq!(source.skipped_examples[0].line, 4);
        assert!(matches!(
            source.skipped_examples[4].reason,
            SkipReason::Unsupported(_)
        ));
        assert_eq!(names(&engine.scan(good)), vec!["Good.Sig"]);
    }

    #[test]
    fn unsupported_ndb_features_are_skipped_with_a_reason() {
        let text =
            "A:0:EP+0:41424344\nB:3:*:41424344\nC:0:*:4142(B)4344\nD:0:*:4142434445\nE:0:*:zz\n";
        let (engine, report) = engine(SignatureFormat::Ndb, text);
        let source = &report.sources[0];
        assert_eq!((source.loaded, source.skipped), (1, 4));
        let unsupported = source
            .skipped_examples
            .iter()
            .filter(|s| matches!(s.reason, SkipReason::Unsupported(_)))
            .count();
        assert_eq!(unsupported, 3);
        assert_eq!(names(&engine.scan(b"xxABCDExx")), vec!["D"]);
    }

    #[test]
    fn non_utf8_and_overlong_lines_are_skipped() {
        let mut text = b"\xff\xfe:1:Bad\n".to_vec();
        text.extend(std::iter::repeat_n(b'a', (MAX_LINE_BYTES + 10) as usize));
        text.extend_from_slice(b"\nName:0:*:41424344\n");
        let mut builder = EngineBuilder::new();
        builder
            .add_signatures(SignatureFormat::Ndb, "bytes", &text[..])
            .unwrap();
        let (engine, report) = builder.build().unwrap();
        assert_eq!((report.loaded(), report.skipped()), (1, 2));
        assert_eq!(names(&engine.scan(b"ABCD")), vec!["Name"]);
    }

    #[test]
    fn scan_named_adds_the_disguise_heuristics() {
        let engine = Engine::builtin();
        let pe = tiny_pe(&[b"code"]);
        let found = engine.scan_named("report.pdf", &pe);
        assert_eq!(found[0].method, DetectionMethod::Heuristic);
        assert!(engine.scan_named("report.pdf", b"%PDF-1.7").is_empty());
    }

    #[test]
    fn exhausted_budget_is_reported_as_an_incomplete_scan() {
        let mut builder = EngineBuilder::new();
        builder.verification_budget(1000);
        builder.add_text(SignatureFormat::Ndb, "t", "Slow:0:*:6161*6262*6363\n");
        let (engine, _) = builder.build().unwrap();
        let found = engine.scan(&vec![b'a'; 10_000]);
        assert_eq!(found[0].method, DetectionMethod::LimitExceeded);
    }

    #[test]
    fn directory_load_reads_signature_files_and_ignores_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.ndb"), "Dir.Sig:0:*:41424344\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let (engine, report) = Engine::load(dir.path()).unwrap();
        assert_eq!(report.loaded(), 1);
        assert!(report.sources.iter().any(|s| s.ignored.is_some()));
        assert_eq!(names(&engine.scan(b"ABCD")), vec!["Dir.Sig"]);
        let err = Engine::load(&dir.path().join("notes.txt")).unwrap_err();
        assert!(matches!(err, AvError::UnsupportedFile { .. }));
    }
}
