//! clamscan-compatible scanning of files and directories, for `portcullis scan`.
//!
//! Output lines and exit codes follow clamscan so that scripts written for it keep working:
//! `PATH: NAME FOUND`, `PATH: OK`, `PATH: REASON ERROR`; exit 0 clean, 1 found, 2 error.
//! This module writes to any `Write` and knows nothing of argument parsing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Detection, Engine};

/// Default largest file read by [`scan_paths`] (clamscan's `--max-filesize` default is 100 MB too).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// Options of a path scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Descend into subdirectories (`-r`). Without it, a directory's own files are scanned.
    pub recursive: bool,
    /// Files larger than this are reported as `ERROR` rather than silently passed.
    pub max_file_size: u64,
    /// Also run the file-name heuristics (off by default: clamscan has no such check, and on a
    /// file system, names are not the attack they are in mail).
    pub name_heuristics: bool,
    /// Report a file whose unpacking stopped at a limit (depth, files, size, ratio, time) as
    /// `Heuristics.Limits.Exceeded.<limit> FOUND`, like clamscan's `--alert-exceeds-max`.
    /// Off by default, as in clamscan: such a file is `OK` as far as it could be scanned.
    pub alert_exceeds_max: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            recursive: false,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            name_heuristics: false,
            alert_exceeds_max: false,
        }
    }
}

/// A part extracted from a file by a [`Decomposer`] (an archive member, an attachment…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPart {
    /// Where the part came from, e.g. `invoice.zip/invoice.exe`.
    pub label: String,
    /// The part's decoded bytes.
    pub data: Vec<u8>,
}

/// The hook through which archive and MIME decomposition plugs into path scanning. The engine
/// itself never unpacks anything; another crate does, and hands back the parts.
pub trait Decomposer {
    /// The parts inside `data` (recursively, if the implementation wants), not including `data`
    /// itself, which is always scanned.
    fn decompose(&self, label: &str, data: &[u8]) -> Vec<ScanPart>;

    /// [`Decomposer::decompose`], plus the limits at which unpacking stopped, as short names in
    /// clamscan's style (`MaxRecursion`, `MaxFiles`, `MaxScanSize`, …). The default finds none.
    fn decompose_with_limits(&self, label: &str, data: &[u8]) -> (Vec<ScanPart>, Vec<String>) {
        (self.decompose(label, data), Vec::new())
    }
}

/// A [`Decomposer`] that finds no parts: only whole files are scanned.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDecomposition;

impl Decomposer for NoDecomposition {
    fn decompose(&self, _label: &str, _data: &[u8]) -> Vec<ScanPart> {
        Vec::new()
    }
}

/// A detection in one part of a scanned file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartDetection {
    /// The part's label (the file's own label for the whole file).
    pub label: String,
    /// What was found.
    pub detection: Detection,
}

/// Scans a labelled buffer and every part the decomposer finds in it.
pub fn scan_parts(
    engine: &Engine,
    label: &str,
    data: &[u8],
    decomposer: &dyn Decomposer,
    name_heuristics: bool,
) -> Vec<PartDetection> {
    scan_parts_with_limits(engine, label, data, decomposer, name_heuristics, false)
}

/// [`scan_parts`]; with `alert_exceeds_max`, unpacking that stopped at a limit is a detection
/// named `Heuristics.Limits.Exceeded.<limit>`.
pub fn scan_parts_with_limits(
    engine: &Engine,
    label: &str,
    data: &[u8],
    decomposer: &dyn Decomposer,
    name_heuristics: bool,
    alert_exceeds_max: bool,
) -> Vec<PartDetection> {
    let mut found = Vec::new();
    let mut scan_one = |label: &str, data: &[u8]| {
        let detections = if name_heuristics {
            engine.scan_named(label, data)
        } else {
            engine.scan(data)
        };
        found.extend(detections.into_iter().map(|detection| PartDetection {
            label: label.to_string(),
            detection,
        }));
    };
    scan_one(label, data);
    let (parts, limits) = decomposer.decompose_with_limits(label, data);
    for part in parts {
        scan_one(&part.label, &part.data);
    }
    if alert_exceeds_max {
        for limit in limits {
            let name = format!("Heuristics.Limits.Exceeded.{limit}");
            if !found.iter().any(|f| f.detection.name == name) {
                found.push(PartDetection {
                    label: label.to_string(),
                    detection: Detection {
                        name,
                        method: crate::DetectionMethod::LimitExceeded,
                    },
                });
            }
        }
    }
    found
}

/// Counts of a path scan, and its clamscan exit code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Files read and scanned.
    pub scanned_files: u64,
    /// Files with at least one detection.
    pub infected_files: u64,
    /// Paths that could not be scanned (missing, unreadable, too large, output failed).
    pub errors: u64,
}

impl ScanSummary {
    /// The clamscan exit code: 1 if anything was found, else 2 if any error occurred, else 0.
    /// A detection wins over an error because it is the fact a script must not miss.
    pub fn exit_code(&self) -> i32 {
        if self.infected_files > 0 {
            1
        } else if self.errors > 0 {
            2
        } else {
            0
        }
    }
}

/// Scans files and directories, printing one clamscan-style line per file to `out`.
pub fn scan_paths(
    engine: &Engine,
    paths: &[PathBuf],
    options: &ScanOptions,
    out: &mut dyn Write,
) -> ScanSummary {
    scan_paths_with(engine, paths, options, &NoDecomposition, out)
}

/// [`scan_paths`] with a decomposer that extracts parts (archives, mail) from each file.
pub fn scan_paths_with(
    engine: &Engine,
    paths: &[PathBuf],
    options: &ScanOptions,
    decomposer: &dyn Decomposer,
    out: &mut dyn Write,
) -> ScanSummary {
    let mut walk = PathWalk {
        engine,
        options,
        decomposer,
        out,
        summary: ScanSummary::default(),
    };
    for path in paths {
        walk.path(path, true);
    }
    walk.summary
}

/// The state of one `scan_paths` run.
struct PathWalk<'a> {
    engine: &'a Engine,
    options: &'a ScanOptions,
    decomposer: &'a dyn Decomposer,
    out: &'a mut dyn Write,
    summary: ScanSummary,
}

impl PathWalk<'_> {
    /// `top` is true for paths named by the user: those may be symlinks and directories are
    /// always entered; below them, symlinks are skipped so that link loops cannot trap us.
    fn path(&mut self, path: &Path, top: bool) {
        let metadata = if top {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let metadata = match metadata {
            Ok(metadata) => metadata,
            Err(error) => return self.error(path, &error.to_string()),
        };
        if metadata.is_dir() {
            if top || self.options.recursive {
                self.directory(path);
            }
        } else if metadata.is_file() {
            self.file(path, metadata.len());
        } else if top {
            self.error(path, "not a regular file");
        }
    }

    fn directory(&mut self, path: &Path) {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(error) => return self.error(path, &error.to_string()),
        };
        let mut children: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => children.push(entry.path()),
                Err(error) => self.error(path, &error.to_string()),
            }
        }
        children.sort();
        for child in children {
            self.path(&child, false);
        }
    }

    fn file(&mut self, path: &Path, size: u64) {
        if size > self.options.max_file_size {
            return self.error(
                path,
                &format!(
                    "file larger than {} bytes not scanned",
                    self.options.max_file_size
                ),
            );
        }
        let mut data = Vec::new();
        let read = std::fs::File::open(path).and_then(|file| {
            file.take(self.options.max_file_size.saturating_add(1))
                .read_to_end(&mut data)
        });
        if let Err(error) = read {
            return self.error(path, &error.to_string());
        }
        if data.len() as u64 > self.options.max_file_size {
            return self.error(
                path,
                &format!(
                    "file larger than {} bytes not scanned",
                    self.options.max_file_size
                ),
            );
        }
        self.summary.scanned_files += 1;
        let label = path.display().to_string();
        let found = scan_parts_with_limits(
            self.engine,
            &label,
            &data,
            self.decomposer,
            self.options.name_heuristics,
            self.options.alert_exceeds_max,
        );
        let line = match found.first() {
            Some(first) => {
                self.summary.infected_files += 1;
                tracing::info!(path = %label, part = %first.label, signature = %first.detection.name, "infected file");
                format!("{label}: {} FOUND", first.detection.name)
            }
            None => format!("{label}: OK"),
        };
        self.print(&line);
    }

    fn error(&mut self, path: &Path, reason: &str) {
        self.summary.errors += 1;
        tracing::warn!(path = %path.display(), reason, "cannot scan path");
        let line = format!("{}: {reason} ERROR", path.display());
        self.print(&line);
    }

    fn print(&mut self, line: &str) {
        if writeln!(self.out, "{line}").is_err() {
            self.summary.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EICAR;

    fn run(paths: &[PathBuf], options: &ScanOptions) -> (String, ScanSummary) {
        let mut out = Vec::new();
        let summary = scan_paths(&Engine::builtin(), paths, options, &mut out);
        (String::from_utf8(out).unwrap(), summary)
    }

    #[test]
    fn clean_and_infected_files_print_ok_and_found_with_clamscan_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let clean = dir.path().join("clean.txt");
        let infected = dir.path().join("eicar.com");
        std::fs::write(&clean, "hello").unwrap();
        std::fs::write(&infected, EICAR).unwrap();

        let (text, summary) = run(std::slice::from_ref(&clean), &ScanOptions::default());
        assert_eq!(text, format!("{}: OK\n", clean.display()));
        assert_eq!(summary.exit_code(), 0);

        let (text, summary) = run(&[clean.clone(), infected.clone()], &ScanOptions::default());
        assert!(text.contains(&format!(
            "{}: Eicar-Test-Signature FOUND\n",
            infected.display()
        )));
        assert_eq!(summary.exit_code(), 1);
    }

    #[test]
    fn missing_path_prints_error_and_exits_2() {
        let (text, summary) = run(
            &[PathBuf::from("/nonexistent/portcullis-test")],
            &ScanOptions::default(),
        );
        assert!(text.ends_with(" ERROR\n"), "{text}");
        assert_eq!(summary.exit_code(), 2);
    }

    #[test]
    fn a_file_unpacked_only_up_to_a_limit_is_ok_unless_alert_exceeds_max_is_set() {
        struct StopsAtALimit;
        impl Decomposer for StopsAtALimit {
            fn decompose(&self, _label: &str, _data: &[u8]) -> Vec<ScanPart> {
                Vec::new()
            }
            fn decompose_with_limits(&self, _: &str, _: &[u8]) -> (Vec<ScanPart>, Vec<String>) {
                (Vec::new(), vec!["MaxRecursion".into()])
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.zip");
        std::fs::write(&bomb, b"nested").unwrap();
        for (alert, expected, code) in [
            (false, "bomb.zip: OK\n", 0),
            (
                true,
                "bomb.zip: Heuristics.Limits.Exceeded.MaxRecursion FOUND\n",
                1,
            ),
        ] {
            let options = ScanOptions {
                alert_exceeds_max: alert,
                ..ScanOptions::default()
            };
            let mut out = Vec::new();
            let summary = scan_paths_with(
                &Engine::builtin(),
                std::slice::from_ref(&bomb),
                &options,
                &StopsAtALimit,
                &mut out,
            );
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with(expected), "{text}");
            assert_eq!(summary.exit_code(), code);
        }
    }

    #[test]
    fn subdirectories_are_scanned_only_with_recursive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/eicar.txt"), EICAR).unwrap();
        std::fs::write(dir.path().join("top.txt"), "fine").unwrap();
        let paths = [dir.path().to_path_buf()];

        let (text, summary) = run(&paths, &ScanOptions::default());
        assert_eq!(
            (summary.scanned_files, summary.exit_code()),
            (1, 0),
            "{text}"
        );
        let (_, summary) = run(
            &paths,
            &ScanOptions {
                recursive: true,
                ..ScanOptions::default()
            },
        );
        assert_eq!((summary.scanned_files, summary.exit_code()), (2, 1));
    }

    #[test]
    fn oversized_file_is_an_error_not_a_silent_pass() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bin");
        std::fs::write(&big, vec![0u8; 100]).unwrap();
        let (text, summary) = run(
            &[big],
            &ScanOptions {
                max_file_size: 10,
                ..ScanOptions::default()
            },
        );
        assert!(text.contains("ERROR"));
        assert_eq!(summary.exit_code(), 2);
    }

    #[test]
    fn parts_from_the_decomposer_are_scanned_and_reported_under_the_file() {
        struct OnePart;
        impl Decomposer for OnePart {
            fn decompose(&self, label: &str, _data: &[u8]) -> Vec<ScanPart> {
                vec![ScanPart {
                    label: format!("{label}/inner.com"),
                    data: EICAR.to_vec(),
                }]
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive.bin");
        std::fs::write(&archive, "opaque container").unwrap();
        let mut out = Vec::new();
        let summary = scan_paths_with(
            &Engine::builtin(),
            std::slice::from_ref(&archive),
            &ScanOptions::default(),
            &OnePart,
            &mut out,
        );
        assert_eq!(summary.exit_code(), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}: Eicar-Test-Signature FOUND\n", archive.display())
        );
        let parts = scan_parts(&Engine::builtin(), "x", b"clean", &OnePart, false);
        assert_eq!(parts[0].label, "x/inner.com");
    }
}
