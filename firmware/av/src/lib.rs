//! The Portcullis antivirus engine.
//!
//! Loads ClamAV text signature files (`.hdb`, `.hsb`, `.mdb`/`.msb`, a documented subset of
//! `.ndb`), has the EICAR test signature built in, and scans byte buffers: whole files,
//! decomposed message parts, or raw messages. Hash signatures live in sorted arrays (a million
//! MD5s in about 24 MB); byte patterns are found in one pass by an Aho-Corasick automaton and
//! then verified. See the README for what is and is not supported.
//!
//! ```
//! use portcullis_av::{Engine, EICAR};
//! let engine = Engine::builtin();
//! assert_eq!(engine.scan(EICAR)[0].name, "Eicar-Test-Signature");
//! assert!(engine.scan(b"hello").is_empty());
//! ```

mod engine;
mod error;
mod hashes;
pub mod heuristics;
mod names;
mod paths;
mod pattern;
mod pe;

pub use engine::{
    DEFAULT_VERIFICATION_BUDGET, Detection, DetectionMethod, EICAR, EICAR_NAME, Engine,
    EngineBuilder, LIMIT_EXCEEDED_NAME, LoadReport, SignatureCounts, SignatureFormat, SkipReason,
    SkippedLine, SourceReport,
};
pub use error::AvError;
pub use hashes::HashKind;
pub use paths::{
    DEFAULT_MAX_FILE_SIZE, Decomposer, NoDecomposition, PartDetection, ScanOptions, ScanPart,
    ScanSummary, scan_parts, scan_parts_with_limits, scan_paths, scan_paths_with,
};
