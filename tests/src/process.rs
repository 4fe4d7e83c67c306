//! Child processes that cannot outlive their test, and commands that cannot hang it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Makes the kernel kill `command`'s process when the spawning thread ends, so a test runner
/// that is itself killed (timeout, Ctrl-C) leaves no daemons or sinks behind on the machine.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to the process `pid`.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("waiting for child {}: {error}", child.id()),
        }
    }
}

/// The result of a command run to completion.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code; `None` if killed by a signal (including our own time-out kill).
    pub status: Option<i32>,
    /// Everything written to standard output.
    pub stdout: String,
    /// Everything written to standard error.
    pub stderr: String,
    /// True if the command overran its time limit and was killed.
    pub timed_out: bool,
}

/// Runs `command` to completion with no stdin, killing it after `timeout`.
///
/// Output goes to files rather than pipes so a chatty command can never block on a full pipe
/// while we wait for it.
pub fn run_bounded(command: &mut Command, timeout: Duration) -> Finished {
    let scratch = tempfile::tempdir().expect("tempdir for command output");
    let out_path = scratch.path().join("stdout");
    let err_path = scratch.path().join("stderr");
    let mut child = die_with_parent(command)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(status) => (status.code(), false),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (None, true)
        }
    };
    Finished {
        status,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
        timed_out,
    }
}

/// Runs `command` with stdout and stderr interleaved into one text (as a terminal would show it).
pub fn run_bounded_merged(command: &mut Command, timeout: Duration) -> Finished {
    let scratch = tempfile::tempdir().expect("tempdir for command output");
    let path = scratch.path().join("output");
    let file = File::create(&path).expect("output file");
    let mut child = die_with_parent(command)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup output file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let (status, timed_out) = match wait_timeout(&mut child, timeout) {
        Some(status) => (status.code(), false),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (None, true)
        }
    };
    Finished {
        status,
        stdout: read_lossy(&path),
        stderr: String::new(),
        timed_out,
    }
}

/// A file's contents as text, invalid UTF-8 replaced; empty if it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of `text`, for failure reports that stay readable.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads a child's stdout line by line on a helper thread, so the test can wait for a line with a deadline.
pub struct LineWatcher {
    lines: Receiver<String>,
}

impl LineWatcher {
    /// Starts reading `stdout` until it closes.
    pub fn new(stdout: ChildStdout) -> LineWatcher {
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        LineWatcher { lines }
    }

    /// The first line (from now on) that starts with `prefix`, or `None` after `timeout` / at end of output.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}
