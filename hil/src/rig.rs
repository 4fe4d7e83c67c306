//! The rig file: what the box is (QEMU, or a real one with its serial device, NIC and power
//! hooks), how long to wait for things, what the harness answers in the wizard and which
//! gateway settings it changes for testing. Every key has a default, so no rig file at all
//! means "QEMU with the contract's settings". The format is documented in docs/hil.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::HilError;

/// A whole rig file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rig {
    /// QEMU settings (used unless `[box]` is present).
    pub qemu: QemuRig,
    /// A real box; when present, QEMU is not used.
    #[serde(rename = "box")]
    pub real_box: Option<BoxRig>,
    /// Serial console settings.
    pub serial: SerialRig,
    /// How long to wait for each thing.
    pub timeouts: Timeouts,
    /// The wizard's answers.
    pub wizard: WizardRig,
    /// Gateway settings merged into the box's config after the wizard (QEMU only: the
    /// harness edits the data partition while the box is off).
    pub box_config: toml::Table,
    /// Size of the power-cut load.
    pub power_cut: PowerCutRig,
    /// Diagnostics.
    pub debug: DebugRig,
}

/// `[debug]`: diagnostics that change what the box prints, never what it does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugRig {
    /// Extra kernel command-line options added to the boot entries of the working copy (QEMU
    /// rigs). The default forwards the box's journal to the serial console, so every
    /// transcript shows why a service failed (the journal itself is in RAM and lost with the
    /// power); `""` leaves the boot entries alone.
    pub kernel_options: String,
}

impl Default for DebugRig {
    fn default() -> Self {
        DebugRig {
            kernel_options: "systemd.journald.forward_to_console=1".into(),
        }
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig {
            qemu: QemuRig::default(),
            real_box: None,
            serial: SerialRig::default(),
            timeouts: Timeouts::default(),
            wizard: WizardRig::default(),
            box_config: default_box_config(),
            power_cut: PowerCutRig::default(),
            debug: DebugRig::default(),
        }
    }
}

/// The watchdog settings that make the hardware watchdog, not systemd's, end a hang, quickly
/// and for sure: the box's unit has `WatchdogSec=60s` and the gateway's default hardware
/// timeout is also 60 s, so by default the two race (and systemd restarting the service
/// reopens the device before the board resets). With these the last pet comes at most 20 s
/// after a hang and the board resets 15 s later on real hardware — about 30 s later on QEMU,
/// whose i6300esb model counts both of its stages (measured: 42–54 s after the hang) — while
/// systemd would act only 60 s after the last pet.
fn default_box_config() -> toml::Table {
    toml::from_str(
        r#"
        [watchdog]
        timeout = "15s"
        pet_interval = "5s"
        stuck_after = "20s"
        "#,
    )
    .expect("the default box config is valid TOML")
}

/// `[qemu]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuRig {
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs (TCG runs one host thread per CPU).
    pub cpus: u32,
    /// `stream` (default) or `dgram`: how the LAN is attached.
    pub net: String,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
}

impl Default for QemuRig {
    fn default() -> Self {
        QemuRig {
            memory_mib: 1024,
            cpus: 2,
            net: "stream".into(),
            extra_args: Vec::new(),
        }
    }
}

/// `[box]`: a real box.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxRig {
    /// The serial device cabled to the box's console port, e.g. `/dev/ttyUSB0`.
    pub serial: PathBuf,
    /// Its speed (the appliance uses 115200).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// The host NIC cabled to the box's first Ethernet port (nothing else on that cable).
    pub interface: String,
    /// The power hooks.
    pub power: PowerHooks,
}

fn default_baud() -> u32 {
    115_200
}

/// `[box.power]`: shell commands that switch the box's power.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerHooks {
    /// Turns the outlet on.
    pub on: String,
    /// Turns the outlet off (the power cut).
    pub off: String,
    /// Presses the power button (optional).
    pub button: Option<String>,
    /// Exits 0 while the box has power (optional).
    pub status: Option<String>,
}

/// `[serial]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialRig {
    /// What Enter sends: `"\r"` like a terminal (default).
    pub line_ending: String,
}

impl Default for SerialRig {
    fn default() -> Self {
        SerialRig {
            line_ending: "\r".into(),
        }
    }
}

/// `[timeouts]`: every wait has a deadline, and each is here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Power on until the first-boot wizard or an SMTP banner (a TCG boot takes about a
    /// minute; the slack is for a loaded CI machine).
    #[serde(with = "humantime_serde")]
    pub boot: Duration,
    /// One wizard prompt, and applying the settings.
    #[serde(with = "humantime_serde")]
    pub prompt: Duration,
    /// Power button until the box is off.
    #[serde(with = "humantime_serde")]
    pub shutdown: Duration,
    /// An accepted message until it reaches the internal mail server.
    #[serde(with = "humantime_serde")]
    pub delivery: Duration,
    /// One SMTP session of a sender.
    #[serde(with = "humantime_serde")]
    pub session: Duration,
    /// A hang until the watchdog has rebooted the box (serial shows a new boot).
    #[serde(with = "humantime_serde")]
    pub watchdog: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            boot: Duration::from_secs(300),
            prompt: Duration::from_secs(120),
            shutdown: Duration::from_secs(180),
            delivery: Duration::from_secs(300),
            session: Duration::from_secs(300),
            watchdog: Duration::from_secs(300),
        }
    }
}

/// `[wizard]`: the answers typed into the first-boot wizard (the contract's values).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WizardRig {
    /// The admin password (typed twice).
    pub admin_password: String,
    /// Answers by prompt: a regex matched at the start of the prompt label → the answer.
    /// Merged over the defaults (same regex replaces).
    pub answers: BTreeMap<String, String>,
}

impl Default for WizardRig {
    fn default() -> Self {
        WizardRig {
            admin_password: "hil correct horse battery staple".into(),
            answers: BTreeMap::new(),
        }
    }
}

impl WizardRig {
    /// The answer table: (label regex, answer), defaults first then the rig's; `{password}`
    /// in an answer is the admin password.
    pub fn table(&self) -> Vec<(String, String)> {
        let mut table: Vec<(String, String)> = [
            ("Hostname", "gw1"),
            ("Network: dhcp or static", "static"),
            ("IP address/prefix", "192.0.2.10/24"),
            ("Default gateway", "192.0.2.1"),
            ("DNS servers", "192.0.2.1"),
            ("Admin password again", "{password}"),
            ("Admin password", "{password}"),
            (r"Internal mail server", "192.0.2.25:25"),
            ("Local domains", "example.org"),
            ("Networks allowed to relay", "192.0.2.25/32"),
            ("Time zone", "UTC"),
            (r"NTP servers \(type none", "none"),
            ("NTP servers", ""),
            (r"Apply these settings\?", "y"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in &self.answers {
            match table.iter_mut().find(|(tk, _)| tk == k) {
                Some(entry) => entry.1 = v.clone(),
                None => table.insert(0, (k.clone(), v.clone())),
            }
        }
        for (_, v) in &mut table {
            *v = v.replace("{password}", &self.admin_password);
        }
        table
    }
}

/// `[power_cut]`: the load the power is cut in the middle of.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerCutRig {
    /// Messages in total.
    pub messages: usize,
    /// Senders sending at once (distinct addresses).
    pub senders: usize,
    /// Messages per SMTP session.
    pub per_session: usize,
    /// Cut once this many messages were acknowledged.
    pub cut_after: usize,
}

impl Default for PowerCutRig {
    fn default() -> Self {
        PowerCutRig {
            messages: 300,
            senders: 10,
            per_session: 5,
            cut_after: 100,
        }
    }
}

impl Rig {
    /// Reads a rig file.
    pub fn load(path: &Path) -> Result<Rig, HilError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| HilError::io(format!("reading rig file {}", path.display()), e))?;
        Rig::parse(&text).map_err(|reason| HilError::Rig {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses rig file text.
    pub fn parse(text: &str) -> Result<Rig, String> {
        let mut rig: Rig = toml::from_str(text).map_err(|e| e.to_string())?;
        let raw: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        if !raw.contains_key("box_config") {
            rig.box_config = default_box_config();
        }
        if !matches!(rig.qemu.net.as_str(), "stream" | "dgram") {
            return Err(format!(
                "qemu.net must be \"stream\" or \"dgram\", not {:?}",
                rig.qemu.net
            ));
        }
        let p = &rig.power_cut;
        if p.senders == 0 || p.senders > 20 || p.per_session == 0 || p.cut_after > p.messages {
            return Err(
                "power_cut: 1-20 senders, at least 1 message per session, cut_after <= messages"
                    .into(),
            );
        }
        for (re, _) in rig.wizard.table() {
            regex::Regex::new(&re).map_err(|e| format!("wizard.answers: bad regex {re:?}: {e}"))?;
        }
        Ok(rig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rig_file_means_qemu_with_the_contract_answers_and_fast_watchdog() {
        let rig = Rig::parse("").unwrap();
        assert!(rig.real_box.is_none());
        assert_eq!(rig.qemu.net, "stream");
        let table = rig.wizard.table();
        let answer = |label: &str| {
            table
                .iter()
                .find(|(k, _)| regex::Regex::new(&format!("^{k}")).unwrap().is_match(label))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(answer("Hostname"), Some("gw1"));
        assert_eq!(
            answer("Admin password again"),
            Some("hil correct horse battery staple")
        );
        assert_eq!(answer("NTP servers (empty for none)"), Some(""));
        assert_eq!(answer("Apply these settings?"), Some("y"));
        assert_eq!(rig.box_config["watchdog"]["timeout"].as_str(), Some("15s"));
    }

    #[test]
    fn a_real_box_rig_names_its_serial_nic_and_power_hooks() {
        let rig = Rig::parse(
            r#"
            [box]
            serial = "/dev/ttyUSB0"
            interface = "enp3s0"
            [box.power]
            on = "pdu on 3"
            off = "pdu off 3"
            [timeouts]
            boot = "3m"
            [wizard]
            admin_password = "s3cret enough for tests"
            answers = { "Hostname" = "gw9", "Proxy" = "none" }
            [box_config]
            "#,
        )
        .unwrap();
        let b = rig.real_box.unwrap();
        assert_eq!(b.baud, 115_200);
        assert_eq!(b.power.on, "pdu on 3");
        assert_eq!(rig.timeouts.boot, Duration::from_secs(180));
        let table = rig.wizard.table();
        assert_eq!(table[0], ("Proxy".to_string(), "none".to_string()));
        assert!(table.contains(&("Hostname".to_string(), "gw9".to_string())));
        assert!(
            rig.box_config.is_empty(),
            "an explicit empty [box_config] changes nothing"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(
            Rig::parse("[qemu]\nmemory = 5\n")
                .unwrap_err()
                .contains("memory")
        );
        assert!(
            Rig::parse("[qemu]\nnet = \"tap\"\n")
                .unwrap_err()
                .contains("qemu.net")
        );
        assert!(Rig::parse("[power_cut]\nsenders = 50\n").is_err());
        assert!(
            Rig::parse("[wizard]\nanswers = { \"(\" = \"x\" }\n")
                .unwrap_err()
                .contains("regex")
        );
    }
}
