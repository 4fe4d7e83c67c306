//! Running the `portcullis` command line: finding the binary, `queue …` and `ctl …`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::process::{Finished, run_bounded};

/// Longest any single CLI command may take; the control socket answers in milliseconds.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The `portcullis` binary under test.
///
/// `$PORTCULLIS_BIN` if set (what `tests/run` and the benchmark use). Otherwise the debug binary of
/// this workspace, built once per test process with `cargo build -p portcullis` so that
/// `cargo test -p portcullis-e2e` never runs against a stale binary.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("PORTCULLIS_BIN") {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "PORTCULLIS_BIN={} is not a file",
                    path.display()
                );
                return path;
            }
            let root = crate::workspace_root();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let build = run_bounded(
                Command::new(cargo).current_dir(&root).args([
                    "build",
                    "--quiet",
                    "-p",
                    "portcullis",
                    "--bin",
                    "portcullis",
                ]),
                Duration::from_secs(1200),
            );
            assert_eq!(
                build.status,
                Some(0),
                "cargo build -p portcullis failed:\n{}",
                crate::process::tail(&build.stderr, 60)
            );
            let path = target.join("debug").join("portcullis");
            assert!(
                path.is_file(),
                "{} missing after cargo build",
                path.display()
            );
            path
        })
        .clone()
}

/// What a CLI invocation printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The arguments, for failure messages.
    pub args: Vec<String>,
    /// Exit code (`None`: killed by a signal or by our time limit).
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Panics with the whole output unless the command exited 0; returns self for chaining.
    #[track_caller]
    pub fn success(&self) -> &CliOutput {
        assert_eq!(
            self.status,
            Some(0),
            "`portcullis {}` failed:\n{self}",
            self.args.join(" ")
        );
        self
    }

    /// Standard output parsed as JSON (panics with the output if it is not JSON).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "`portcullis {}` did not print JSON ({error}):\n{self}",
                self.args.join(" ")
            )
        })
    }

    /// Standard output and standard error together, for "the message names X" checks.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `portcullis ARGS…` to completion (bounded) and captures its output.
pub fn portcullis(args: &[&str]) -> CliOutput {
    let Finished {
        status,
        stdout,
        stderr,
        timed_out,
    } = run_bounded(
        Command::new(binary()).args(args).env("NO_COLOR", "1"),
        CLI_TIMEOUT,
    );
    assert!(
        !timed_out,
        "`portcullis {}` hung for {CLI_TIMEOUT:?}",
        args.join(" ")
    );
    CliOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        stdout,
        stderr,
    }
}

/// One element of `portcullis queue list --json` (kept as JSON; the accessors name the fields the spec promises).
#[derive(Debug, Clone)]
pub struct QueueEntry(pub Value);

impl QueueEntry {
    /// The queue id.
    pub fn id(&self) -> String {
        self.0["id"].as_str().unwrap_or_default().to_string()
    }
    /// "incoming", "deferred" or "hold".
    pub fn queue(&self) -> String {
        self.0["queue"].as_str().unwrap_or_default().to_string()
    }
    /// The envelope sender ("" for the null sender).
    pub fn sender(&self) -> String {
        self.0["sender"].as_str().unwrap_or_default().to_string()
    }
    /// The recipient addresses.
    pub fn recipients(&self) -> Vec<String> {
        self.0["recipients"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|r| {
                        r["address"]
                            .as_str()
                            .or(r.as_str())
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// The last delivery error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.0["last_error"].as_str().map(str::to_string)
    }
    /// The number of delivery attempts made.
    pub fn attempts(&self) -> u64 {
        self.0["attempts"].as_u64().unwrap_or(0)
    }
    /// The Subject header, if parsed.
    pub fn subject(&self) -> Option<String> {
        self.0["subject"].as_str().map(str::to_string)
    }
}

/// Parses the output of `queue list --json` into entries (panics, showing the output, if it is not a JSON array).
#[track_caller]
pub fn queue_entries(output: &CliOutput) -> Vec<QueueEntry> {
    match output.success().json() {
        Value::Array(items) => items.into_iter().map(QueueEntry).collect(),
        other => panic!("`queue list --json` printed {other} instead of an array"),
    }
}
