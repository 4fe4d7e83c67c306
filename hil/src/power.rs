//! The box's power: on, cut (no warning, like pulling the plug), and the power button (a clean
//! shutdown). QEMU: start the process, SIGKILL it, ACPI `system_powerdown` over QMP. A real
//! box: shell commands from the rig file drive a switched PDU or a relay board.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HilError;
use crate::qemu::QemuMachine;

/// A power switch for the box.
pub trait Power: Send {
    /// Turns the box on (a no-op if it is on).
    fn on(&mut self) -> Result<(), HilError>;
    /// Cuts the power at once: no shutdown, whatever the box had not flushed is lost.
    fn cut(&mut self) -> Result<(), HilError>;
    /// Presses the power button: the box shuts down cleanly and turns itself off.
    fn press_button(&mut self) -> Result<(), HilError>;
    /// Whether the box has power.
    fn is_on(&mut self) -> bool;
    /// Waits up to `timeout` for the box to turn itself off; whether it did.
    fn wait_off(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_on() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        !self.is_on()
    }
}

/// QEMU as the power switch: the process is the box.
pub struct QemuPower {
    machine: QemuMachine,
    qmp: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl QemuPower {
    /// A switch for `machine`; QEMU's own messages go to `log` (appended), its QMP socket is
    /// `qmp`.
    pub fn new(machine: QemuMachine, qmp: PathBuf, log: PathBuf) -> QemuPower {
        QemuPower {
            machine,
            qmp,
            log,
            child: None,
        }
    }

    /// The machine this switch powers.
    pub fn machine(&self) -> &QemuMachine {
        &self.machine
    }

    fn reap(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            tracing::info!(%status, "QEMU exited");
            self.child = None;
        }
    }

    fn qmp(&self, command: &str) -> Result<(), HilError> {
        let what = || {
            format!(
                "sending {command} to QEMU's QMP socket {}",
                self.qmp.display()
            )
        };
        let stream = UnixStream::connect(&self.qmp).map_err(|e| HilError::io(what(), e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| HilError::io(what(), e))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| HilError::io(what(), e))?);
        let mut writer = stream;
        let mut line = String::new();
        // Greeting, then capabilities negotiation, then the command; each answer is a line.
        for request in [
            "",
            "{\"execute\":\"qmp_capabilities\"}",
            &format!("{{\"execute\":\"{command}\"}}"),
        ] {
            if !request.is_empty() {
                writer
                    .write_all(format!("{request}\r\n").as_bytes())
                    .map_err(|e| HilError::io(what(), e))?;
            }
            loop {
                line.clear();
                reader
                    .read_line(&mut line)
                    .map_err(|e| HilError::io(what(), e))?;
                if line.is_empty() {
                    return Err(HilError::Tool {
                        tool: "QEMU QMP".into(),
                        detail: format!("connection closed during {command}"),
                    });
                }
                // Asynchronous events may come in between; wait for the answer itself.
                if !line.contains("\"event\"") {
                    break;
                }
            }
            if line.contains("\"error\"") {
                return Err(HilError::Tool {
                    tool: "QEMU QMP".into(),
                    detail: line.trim().to_string(),
                });
            }
        }
        Ok(())
    }
}

impl Power for QemuPower {
    fn on(&mut self) -> Result<(), HilError> {
        self.reap();
        if self.child.is_some() {
            return Ok(());
        }
        let (program, mut args) = self.machine.command_line();
        let _ = std::fs::remove_file(&self.qmp);
        // QEMU binds its end of a datagram link itself; a previous run's socket file blocks that.
        if let crate::qemu::NetAttach::Dgram { local, .. } = &self.machine.net {
            let _ = std::fs::remove_file(local);
        }
        args.extend([
            "-qmp".to_string(),
            format!("unix:{},server=on,wait=off", self.qmp.display()),
        ]);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| HilError::io(format!("opening {}", self.log.display()), e))?;
        let mut header = log.try_clone().map_err(|e| HilError::io("QEMU log", e))?;
        let _ = writeln!(header, "\n== {program} {}", args.join(" "));
        let mut command = Command::new(&program);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| HilError::io("QEMU log", e))?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; QEMU must not outlive the harness.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                HilError::Missing {
                    what: program.clone(),
                    hint: "apt-get install qemu-system-x86 (x86_64) or qemu-system-arm (aarch64)"
                        .into(),
                }
            } else {
                HilError::io(format!("starting {program}"), e)
            }
        })?;
        tracing::info!(pid = child.id(), program = %program, "power on: QEMU started");
        self.child = Some(child);
        // QEMU fails fast on a bad command line; say so with its own words.
        std::thread::sleep(Duration::from_millis(300));
        self.reap();
        if self.child.is_none() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            return Err(HilError::Tool {
                tool: program,
                detail: format!(
                    "exited at once: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<(), HilError> {
        if let Some(mut c) = self.child.take() {
            tracing::info!(pid = c.id(), "power cut: SIGKILL to QEMU");
            let _ = c.kill();
            c.wait()
                .map_err(|e| HilError::io("waiting for QEMU to die", e))?;
        }
        Ok(())
    }

    fn press_button(&mut self) -> Result<(), HilError> {
        self.qmp("system_powerdown")
    }

    fn is_on(&mut self) -> bool {
        self.reap();
        self.child.is_some()
    }
}

impl Drop for QemuPower {
    fn drop(&mut self) {
        let _ = self.cut();
        let _ = std::fs::remove_file(&self.qmp);
    }
}

/// A real box's power through commands from the rig file (run with `sh -c`): e.g. a PDU's
/// CLI or `curl` to a relay board. See docs/hil.md for the contract of each hook.
#[derive(Debug, Clone)]
pub struct HookPower {
    /// Turns the outlet on.
    pub on: String,
    /// Turns the outlet off (the power cut).
    pub off: String,
    /// Presses the box's power button (e.g. a relay across the button header); `None`: the
    /// harness cannot ask for a clean shutdown.
    pub button: Option<String>,
    /// Exits 0 while the box has power; `None`: the last command given is believed.
    pub status: Option<String>,
    believed_on: bool,
}

impl HookPower {
    /// Power through these hook commands.
    pub fn new(
        on: String,
        off: String,
        button: Option<String>,
        status: Option<String>,
    ) -> HookPower {
        HookPower {
            on,
            off,
            button,
            status,
            believed_on: false,
        }
    }

    fn run(what: &str, command: &str) -> Result<(), HilError> {
        tracing::info!(hook = what, command, "power hook");
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HilError::io(format!("running the {what} power hook"), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HilError::Tool {
                tool: format!("power hook {what} ({command})"),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }
}

impl Power for HookPower {
    fn on(&mut self) -> Result<(), HilError> {
        HookPower::run("on", &self.on)?;
        self.believed_on = true;
        Ok(())
    }

    fn cut(&mut self) -> Result<(), HilError> {
        HookPower::run("off", &self.off)?;
        self.believed_on = false;
        Ok(())
    }

    fn press_button(&mut self) -> Result<(), HilError> {
        match &self.button {
            Some(b) => HookPower::run("button", b),
            None => Err(HilError::Tool {
                tool: "power hook button".into(),
                detail: "the rig file has no power.button command".into(),
            }),
        }
    }

    fn is_on(&mut self) -> bool {
        match &self.status {
            Some(s) => Command::new("sh")
                .arg("-c")
                .arg(s)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success()),
            None => self.believed_on,
        }
    }
}

/// Copies `template` to `to` (a machine's own UEFI variable store) unless it exists.
pub fn ensure_vars_copy(template: &Path, to: &Path) -> Result<(), HilError> {
    if !to.exists() {
        std::fs::copy(template, to).map_err(|e| {
            HilError::io(
                format!("copying {} to {}", template.display(), to.display()),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_run_their_commands_and_track_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("outlet");
        let s = state.display();
        let mut p = HookPower::new(
            format!("echo on > {s}"),
            format!("echo off > {s}"),
            None,
            Some(format!("grep -q on {s}")),
        );
        assert!(!p.is_on());
        p.on().unwrap();
        assert!(p.is_on());
        p.cut().unwrap();
        assert!(!p.is_on());
        assert!(p.wait_off(Duration::from_millis(10)));
        let e = p.press_button().unwrap_err().to_string();
        assert!(e.contains("no power.button"), "{e}");
    }

    #[test]
    fn a_failing_hook_is_an_error_with_its_output() {
        let mut p = HookPower::new(
            "echo relay jammed >&2; exit 3".into(),
            "true".into(),
            None,
            None,
        );
        let e = p.on().unwrap_err().to_string();
        assert!(e.contains("relay jammed"), "{e}");
        assert!(!p.is_on());
    }
}
