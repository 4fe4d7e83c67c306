//! Everything the console asks of the operating system, behind one trait.
//!
//! The console never runs a program directly: it names a [`SystemAction`], and a
//! [`SystemActions`] carries it out. [`HostSystem`] runs the real commands, [`DryRun`] only says
//! what it would run (for trying the console and for the end-to-end test), [`RecordingSystem`]
//! remembers the actions for unit tests.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The gateway's systemd unit.
pub const GATEWAY_UNIT: &str = "portcullis.service";
/// The image's unit that applies `system/` (host name, time zone, NTP, DNS, network) to the
/// running system; the root file system is read-only, so this is how settings take effect.
pub const SYSTEM_SETTINGS_UNIT: &str = "portcullis-system.service";
/// Echo requests sent by "ping a host".
const PING_COUNT: &str = "3";
/// Seconds ping waits for each answer.
const PING_WAIT_SECONDS: &str = "2";

/// One thing the console asks of the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemAction {
    /// Apply the OS settings in `system/` now (host name, time zone, NTP, DNS, network),
    /// waiting until they are applied.
    ApplySystemSettings,
    /// Restart the gateway (queued with systemd; the console does not wait for it).
    RestartGateway,
    /// Make the gateway re-read its configuration (restart if it cannot reload).
    ReloadGateway,
    /// Stop the gateway.
    StopGateway,
    /// Ask systemd whether the gateway runs.
    GatewayState,
    /// List the network interfaces and their addresses.
    ShowAddresses,
    /// Send three echo requests to a host.
    Ping(String),
    /// The newest lines of the gateway's log.
    GatewayLog(u32),
    /// Restart the machine.
    Reboot,
    /// Switch the machine off.
    PowerOff,
}

impl SystemAction {
    /// The command line that carries the action out.
    pub fn command(&self) -> Vec<String> {
        let words: Vec<&str> = match self {
            SystemAction::ApplySystemSettings => vec!["systemctl", "start", SYSTEM_SETTINGS_UNIT],
            SystemAction::RestartGateway => {
                vec!["systemctl", "--no-block", "restart", GATEWAY_UNIT]
            }
            SystemAction::ReloadGateway => {
                vec!["systemctl", "--no-block", "reload-or-restart", GATEWAY_UNIT]
            }
            SystemAction::StopGateway => vec!["systemctl", "stop", GATEWAY_UNIT],
            SystemAction::GatewayState => vec!["systemctl", "is-active", GATEWAY_UNIT],
            SystemAction::ShowAddresses => vec!["ip", "-brief", "address", "show"],
            SystemAction::Ping(host) => {
                vec!["ping", "-c", PING_COUNT, "-W", PING_WAIT_SECONDS, host]
            }
            SystemAction::GatewayLog(lines) => {
                return [
                    "journalctl",
                    "--no-pager",
                    "--output=short",
                    "-u",
                    GATEWAY_UNIT,
                    "-n",
                ]
                .iter()
                .map(|w| w.to_string())
                .chain([lines.to_string()])
                .collect();
            }
            SystemAction::Reboot => vec!["systemctl", "reboot"],
            SystemAction::PowerOff => vec!["systemctl", "poweroff"],
        };
        words.into_iter().map(str::to_string).collect()
    }
}

/// What a command printed and whether it succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionOutput {
    /// Exit status 0.
    pub success: bool,
    /// Standard output and standard error, in that order.
    pub text: String,
}

/// Carries out [`SystemAction`]s.
pub trait SystemActions {
    /// Carries out `action`; an `Err` says why the command could not even be started.
    fn perform(&self, action: &SystemAction) -> Result<ActionOutput, String>;
}

/// Runs the real commands on this machine.
#[derive(Debug, Default)]
pub struct HostSystem;

impl SystemActions for HostSystem {
    fn perform(&self, action: &SystemAction) -> Result<ActionOutput, String> {
        let command = action.command();
        tracing::info!(target: "console", command = %command.join(" "), "running a system command");
        // No stdin: a child must never eat the admin's next answer.
        let output = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", command[0]))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            tracing::warn!(target: "console", command = %command.join(" "), status = %output.status, "system command failed");
        }
        Ok(ActionOutput {
            success: output.status.success(),
            text,
        })
    }
}

/// Runs nothing: writes `would run: COMMAND` for each action and reports success.
pub struct DryRun<W: Write> {
    out: Mutex<W>,
}

impl<W: Write> DryRun<W> {
    /// Reports to `out` (the console's own output, so the lines appear in order).
    pub fn new(out: W) -> DryRun<W> {
        DryRun {
            out: Mutex::new(out),
        }
    }
}

impl<W: Write> SystemActions for DryRun<W> {
    fn perform(&self, action: &SystemAction) -> Result<ActionOutput, String> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(out, "would run: {}", action.command().join(" "))
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        Ok(ActionOutput {
            success: true,
            text: String::new(),
        })
    }
}

/// Remembers every action and answers each with a canned output (for tests).
#[derive(Debug, Default)]
pub struct RecordingSystem {
    performed: Mutex<Vec<SystemAction>>,
    answers: Mutex<Vec<(SystemAction, ActionOutput)>>,
}

impl RecordingSystem {
    /// A recorder whose actions all succeed silently.
    pub fn new() -> RecordingSystem {
        RecordingSystem::default()
    }

    /// Answers `action` with `output` from now on.
    pub fn answer(&self, action: SystemAction, output: ActionOutput) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((action, output));
    }

    /// The actions performed so far, in order.
    pub fn performed(&self) -> Vec<SystemAction> {
        self.performed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl SystemActions for RecordingSystem {
    fn perform(&self, action: &SystemAction) -> Result<ActionOutput, String> {
        self.performed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(action.clone());
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(answers
            .iter()
            .rev()
            .find(|(a, _)| a == action)
            .map(|(_, output)| output.clone())
            .unwrap_or(ActionOutput {
                success: true,
                text: String::new(),
            }))
    }
}

impl<T: SystemActions + ?Sized> SystemActions for std::sync::Arc<T> {
    fn perform(&self, action: &SystemAction) -> Result<ActionOutput, String> {
        (**self).perform(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_documented_ones() {
        let cases = [
            (
                SystemAction::ApplySystemSettings,
                "systemctl start portcullis-system.service",
            ),
            (
                SystemAction::ReloadGateway,
                "systemctl --no-block reload-or-restart portcullis.service",
            ),
            (
                SystemAction::RestartGateway,
                "systemctl --no-block restart portcullis.service",
            ),
            (
                SystemAction::GatewayState,
                "systemctl is-active portcullis.service",
            ),
            (
                SystemAction::Ping("192.0.2.1".into()),
                "ping -c 3 -W 2 192.0.2.1",
            ),
            (
                SystemAction::GatewayLog(20),
                "journalctl --no-pager --output=short -u portcullis.service -n 20",
            ),
            (SystemAction::Reboot, "systemctl reboot"),
            (SystemAction::PowerOff, "systemctl poweroff"),
        ];
        for (action, line) in cases {
            assert_eq!(action.command().join(" "), line);
        }
    }

    #[test]
    fn dry_run_prints_what_it_would_run_and_runs_nothing() {
        let mut out = Vec::new();
        {
            let dry = DryRun::new(&mut out);
            let o = dry.perform(&SystemAction::Reboot).unwrap();
            assert!(o.success);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "would run: systemctl reboot\n"
        );
    }

    #[test]
    fn host_system_runs_a_command_and_reports_failure_and_missing_programs() {
        // `ip -brief address show` is harmless; if iproute2 is missing the error says so.
        match HostSystem.perform(&SystemAction::ShowAddresses) {
            Ok(o) => assert!(o.success && o.text.contains("lo"), "{o:?}"),
            Err(e) => assert!(e.contains("cannot run ip"), "{e}"),
        }
    }

    #[test]
    fn recording_system_keeps_order_and_canned_answers() {
        let r = RecordingSystem::new();
        r.answer(
            SystemAction::GatewayState,
            ActionOutput {
                success: false,
                text: "inactive\n".into(),
            },
        );
        assert_eq!(
            r.perform(&SystemAction::GatewayState).unwrap().text,
            "inactive\n"
        );
        assert!(r.perform(&SystemAction::Reboot).unwrap().success);
        assert_eq!(
            r.performed(),
            [SystemAction::GatewayState, SystemAction::Reboot]
        );
    }
}
