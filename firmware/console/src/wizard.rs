//! The first-boot setup: every question first, a summary, one confirmation, then everything
//! written at once and applied.
//!
//! Until the admin answers `y` to `Apply these settings? [y/N]: ` nothing touches the disk, so
//! Ctrl-C or the end of input anywhere before that leaves the box exactly as it was.

use std::net::IpAddr;

use ipnet::IpNet;
use portcullis_delivery::HostPort;

use crate::Console;
use crate::password::PasswordHashString;
use crate::settings::{Network, Setup, StaticNetwork};
use crate::system::SystemAction;
use crate::terminal::{InputError, Terminal};
use crate::validate::{self, NetworkMode};

/// The host name offered on a new box.
pub const DEFAULT_HOSTNAME: &str = "portcullis";
/// The time zone offered on a new box.
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// Width of the labels in summaries.
pub(crate) const LABEL_WIDTH: usize = 18;

/// How the first-boot setup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOutcome {
    /// Everything was written; `setup-complete` exists.
    Applied,
    /// Ctrl-C or end of input before the confirmation: nothing was written.
    Cancelled,
}

/// Answers given so far, offered as defaults when the admin says no at the confirmation.
#[derive(Debug, Default, Clone)]
struct Draft {
    hostname: Option<String>,
    network: Option<Network>,
    mail_server: Option<HostPort>,
    local_domains: Option<Vec<String>>,
    relay_networks: Option<Vec<IpNet>>,
    timezone: Option<String>,
    ntp_servers: Option<Vec<String>>,
}

/// Joins values for a default or a summary line.
fn joined<T: ToString>(values: &[T], separator: &str) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// `label:` padded, then the value; a long value continues under itself on the next lines.
/// An empty label continues the value column of the line above.
pub(crate) fn summary_line(label: &str, value: &str) -> String {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label}:")
    };
    let line = format!("  {label:<LABEL_WIDTH$}{value}");
    crate::terminal::wrap(&line, crate::terminal::WIDTH, &" ".repeat(LABEL_WIDTH + 2)).join("\n")
}

/// Asks for the network settings, offering `current` as the defaults.
pub(crate) fn ask_network(
    terminal: &mut Terminal,
    current: Option<&Network>,
) -> Result<Network, InputError> {
    let current_static = match current {
        Some(Network::Static(s)) => Some(s),
        _ => None,
    };
    let mode_default = if current_static.is_some() {
        "static"
    } else {
        "dhcp"
    };
    let mode = terminal.ask(
        "Network: dhcp or static",
        Some(mode_default),
        validate::network_mode,
    )?;
    if mode == NetworkMode::Dhcp {
        return Ok(Network::Dhcp);
    }
    let address_default = current_static.map(|s| s.address.to_string());
    let address_label = if address_default.is_some() {
        "IP address/prefix"
    } else {
        "IP address/prefix, e.g. 192.0.2.10/24"
    };
    let address = terminal.ask(
        address_label,
        address_default.as_deref(),
        validate::interface_address,
    )?;
    let gateway_default = current_static
        .map(|s| s.gateway)
        .filter(|g| address.contains(g))
        .map(|g| g.to_string());
    let gateway = terminal.ask("Default gateway", gateway_default.as_deref(), |a| {
        validate::gateway(a, &address)
    })?;
    let dns_default = current_static
        .map(|s| joined(&s.dns, " "))
        .unwrap_or_else(|| gateway.to_string());
    let dns = terminal.ask("DNS servers", Some(&dns_default), validate::dns_servers)?;
    Ok(Network::Static(StaticNetwork {
        address,
        gateway,
        dns,
    }))
}

/// One line per network setting, for summaries.
pub(crate) fn describe_network(network: &Network) -> Vec<String> {
    match network {
        Network::Dhcp => vec![summary_line("Network", "DHCP")],
        Network::Static(s) => vec![
            summary_line("Network", &format!("static {}", s.address)),
            summary_line("Default route", &s.gateway.to_string()),
            summary_line("DNS servers", &joined(&s.dns, ", ")),
        ],
    }
}

/// The relay networks offered by default: the internal mail server's own address.
fn relay_default(server: &HostPort) -> Option<String> {
    server.ip().map(|ip: IpAddr| IpNet::from(ip).to_string())
}

impl Console {
    /// Runs the first-boot setup until it is applied or cancelled.
    pub fn first_boot_setup(&mut self) -> Result<SetupOutcome, crate::ConsoleError> {
        self.terminal.say(
            "\nPortcullis first-boot setup\n\
             ---------------------------\n\
             Answer each question and press Enter. A value in [brackets] is the default,\n\
             taken when you just press Enter. Nothing changes until you confirm at the\n\
             end; Ctrl-C stops the setup without changing anything.\n",
        )?;
        let mut draft = Draft::default();
        loop {
            let setup = match self.ask_setup(&mut draft) {
                Ok(setup) => setup,
                Err(InputError::Interrupted | InputError::Closed) => {
                    self.terminal
                        .say("\nSetup cancelled; nothing was changed.")?;
                    tracing::info!(target: "console", "first-boot setup cancelled");
                    return Ok(SetupOutcome::Cancelled);
                }
                Err(InputError::Io(e)) => return Err(e.into()),
            };
            if self.apply_setup(&setup)? {
                return Ok(SetupOutcome::Applied);
            }
            self.terminal
                .say("Starting over; your answers are the defaults now.\n")?;
        }
    }

    /// Asks every question, then shows the summary and asks for the confirmation; returns the
    /// setup only when confirmed.
    fn ask_setup(&mut self, draft: &mut Draft) -> Result<Setup, InputError> {
        loop {
            let t = &mut self.terminal;
            let hostname = t.ask(
                "Hostname",
                Some(draft.hostname.as_deref().unwrap_or(DEFAULT_HOSTNAME)),
                validate::hostname,
            )?;
            draft.hostname = Some(hostname.clone());
            let network = ask_network(t, draft.network.as_ref())?;
            draft.network = Some(network.clone());
            t.say(&format!(
                "The web console admin password needs at least {} characters; it is not shown.",
                validate::MIN_PASSWORD_CHARS
            ))?;
            let password = t.ask_new_password("Admin password", validate::password)?;
            let mail_server_default = draft.mail_server.as_ref().map(ToString::to_string);
            let mail_server = t.ask(
                "Internal mail server (host or host:port)",
                mail_server_default.as_deref(),
                validate::mail_server,
            )?;
            draft.mail_server = Some(mail_server.clone());
            let domains_default = draft.local_domains.as_ref().map(|d| joined(d, ", "));
            let local_domains = t.ask(
                "Local domains to accept mail for",
                domains_default.as_deref(),
                validate::local_domains,
            )?;
            draft.local_domains = Some(local_domains.clone());
            let relay_default = draft
                .relay_networks
                .as_ref()
                .map(|n| joined(n, ", "))
                .or_else(|| relay_default(&mail_server));
            let relay_networks = t.ask(
                "Networks allowed to relay",
                relay_default.as_deref(),
                validate::relay_networks,
            )?;
            draft.relay_networks = Some(relay_networks.clone());
            let zoneinfo = self.zoneinfo.clone();
            let timezone = t.ask(
                "Time zone",
                Some(draft.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE)),
                |a| validate::timezone(a, &zoneinfo),
            )?;
            draft.timezone = Some(timezone.clone());
            let ntp_default = draft
                .ntp_servers
                .as_ref()
                .filter(|n| !n.is_empty())
                .map(|n| joined(n, " "));
            let ntp_label = if ntp_default.is_some() {
                "NTP servers (type none for none)"
            } else {
                "NTP servers (empty for none)"
            };
            let ntp_servers = t.ask(ntp_label, ntp_default.as_deref(), |a| {
                if a.eq_ignore_ascii_case("none") {
                    Ok(Vec::new())
                } else {
                    validate::ntp_servers(a)
                }
            })?;
            draft.ntp_servers = Some(ntp_servers.clone());

            let mut summary = vec![String::new(), "Summary".to_string()];
            summary.push(summary_line("Host name", &hostname));
            summary.extend(describe_network(&network));
            summary.push(summary_line("Password", "(set, not shown)"));
            summary.push(summary_line("Internal server", &mail_server.to_string()));
            summary.push(summary_line("Local domains", &joined(&local_domains, ", ")));
            summary.push(summary_line(
                "Relay networks",
                &joined(&relay_networks, ", "),
            ));
            summary.push(summary_line("Time zone", &timezone));
            let ntp_shown = if ntp_servers.is_empty() {
                "(none)".to_string()
            } else {
                joined(&ntp_servers, ", ")
            };
            summary.push(summary_line("NTP servers", &ntp_shown));
            t.say(&summary.join("\n"))?;
            if !t.confirm("Apply these settings?")? {
                t.say("Nothing was changed. Starting over; your answers are the defaults now.\n")?;
                continue;
            }
            let admin_password_hash = match PasswordHashString::new(&password) {
                Ok(hash) => hash,
                Err(e) => {
                    t.problem(&e.to_string())?;
                    continue;
                }
            };
            return Ok(Setup {
                hostname,
                network,
                admin_password_hash,
                mail_server,
                local_domains,
                relay_networks,
                timezone,
                ntp_servers,
            });
        }
    }

    /// Writes the setup (all files, `setup-complete` last) and applies it; `false` when saving
    /// failed and the admin has to go through the questions again.
    fn apply_setup(&mut self, setup: &Setup) -> Result<bool, crate::ConsoleError> {
        // From here on Ctrl-C must not leave half a setup: the writes and commands run to the end.
        let finished_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let changes = match setup.stage(&self.root, &finished_at) {
            Ok(changes) => changes,
            Err(e) => {
                self.terminal
                    .problem(&format!("cannot save the settings: {e}"))?;
                self.terminal.say("Nothing was changed.")?;
                return Ok(false);
            }
        };
        if let Err(e) = changes.commit() {
            self.terminal.problem(&format!(
                "saving stopped part-way: {e}; the setup is not complete"
            ))?;
            return Ok(false);
        }
        tracing::info!(
            target: "console",
            hostname = %setup.hostname,
            network = %setup.network,
            mail_server = %setup.mail_server,
            local_domains = %setup.local_domains.join(","),
            "first-boot setup saved"
        );
        self.terminal.say("Settings saved. Applying them now.")?;
        self.apply_actions(&[
            SystemAction::ApplySystemSettings,
            SystemAction::RestartGateway,
        ])?;
        crate::terminal::forget_interrupt();
        self.terminal.say("Setup complete.")?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::DataRoot;
    use crate::system::RecordingSystem;
    use crate::terminal::scripted::{Screen, ScriptedInput, script};

    pub(crate) const ANSWERS: &[&str] = &[
        "gw1",
        "static",
        "192.0.2.10/24",
        "192.0.2.1",
        "",
        "correct horse battery",
        "correct horse battery",
        "192.0.2.25",
        "example.org",
        "",
        "UTC",
        "",
    ];

    fn console(root: &std::path::Path, lines: &[&str]) -> (Console, Screen, Arc<RecordingSystem>) {
        let screen = Screen::default();
        let system = Arc::new(RecordingSystem::new());
        let zoneinfo = root.join("zoneinfo-for-tests");
        std::fs::create_dir_all(zoneinfo.join("Europe")).unwrap();
        std::fs::write(zoneinfo.join("Europe/Berlin"), b"TZif2").unwrap();
        let console = Console::new(
            crate::ConsoleOptions {
                root: root.join("root"),
                zoneinfo,
            },
            Terminal::new(
                Box::new(ScriptedInput::new(script(lines))),
                Box::new(screen.clone()),
            ),
            Box::new(system.clone()),
        );
        (console, screen, system)
    }

    fn nothing_written(dir: &std::path::Path) -> bool {
        !dir.join("root").exists()
    }

    #[test]
    fn the_harness_answers_produce_a_complete_setup_and_the_apply_actions() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = ANSWERS.to_vec();
        lines.push("y");
        let (mut c, screen, system) = console(dir.path(), &lines);
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Applied);
        let text = screen.text();
        assert!(text.contains("Portcullis first-boot setup"), "{text}");
        assert!(text.contains("Hostname [portcullis]: "), "{text}");
        assert!(text.contains("DNS servers [192.0.2.1]: "), "{text}");
        assert!(
            text.contains("Networks allowed to relay [192.0.2.25/32]: "),
            "{text}"
        );
        assert!(text.contains("Apply these settings? [y/N]: "), "{text}");
        assert!(text.trim_end().ends_with("Setup complete."), "{text}");
        assert!(!text.contains("correct horse"), "password shown: {text}");
        let root = DataRoot::new(dir.path().join("root"));
        assert!(root.is_setup_complete());
        assert_eq!(
            std::fs::read_to_string(root.hostname_file()).unwrap(),
            "gw1\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.timezone_file()).unwrap(),
            "UTC\n"
        );
        assert_eq!(std::fs::read_to_string(root.ntp_file()).unwrap(), "\n");
        let network = std::fs::read_to_string(root.network_file()).unwrap();
        assert!(network.contains("Address=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.1\n"));
        let resolv = std::fs::read_to_string(root.resolv_conf()).unwrap();
        assert!(resolv.ends_with("nameserver 192.0.2.1\n"));
        let config = portcullis_gateway::config::ConfigSource::File(root.config_file())
            .load(&Default::default())
            .unwrap();
        let stored = config.console.admin_password_hash.unwrap();
        let hash = PasswordHashString::from_stored(&stored).unwrap();
        assert!(hash.verify("correct horse battery"));
        assert_eq!(
            system.performed(),
            [
                SystemAction::ApplySystemSettings,
                SystemAction::RestartGateway,
            ]
        );
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
    }

    #[test]
    fn wrong_answers_are_explained_and_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            "gw_1",
            "gw1",
            "fixed",
            "static",
            "192.0.2.10",
            "192.0.2.10/24",
            "198.51.100.1",
            "192.0.2.1",
            "dns.example.org",
            "192.0.2.53",
            "short",
            "long enough pw",
            "long enough pw",
            "mail server",
            "mail.example.org:2525",
            "localhost",
            "example.org *.example.org",
            "0.0.0.0/0",
            "10.0.0.0/8",
            "Mars/Olympus",
            "Europe/Berlin",
            "ntp_1",
            "ntp.example.org",
            "y",
        ];
        let (mut c, screen, _) = console(dir.path(), &lines);
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Applied);
        let text = screen.text();
        let problems: Vec<&str> = text.lines().filter(|l| l.starts_with("! ")).collect();
        assert_eq!(problems.len(), 11, "{text}");
        assert!(
            text.contains("Networks allowed to relay: "),
            "no default for a name: {text}"
        );
        let root = DataRoot::new(dir.path().join("root"));
        assert_eq!(
            std::fs::read_to_string(root.timezone_file()).unwrap(),
            "Europe/Berlin\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.ntp_file()).unwrap(),
            "ntp.example.org\n"
        );
    }

    #[test]
    fn ctrl_c_at_any_question_writes_nothing() {
        for stop in 0..=ANSWERS.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut lines = ANSWERS[..stop].to_vec();
            lines.push("^C");
            let (mut c, screen, system) = console(dir.path(), &lines);
            assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Cancelled);
            assert!(nothing_written(dir.path()), "after {stop} answers");
            assert!(system.performed().is_empty());
            assert!(
                screen
                    .text()
                    .contains("Setup cancelled; nothing was changed.")
            );
        }
    }

    #[test]
    fn end_of_input_before_the_confirmation_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _, system) = console(dir.path(), ANSWERS);
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Cancelled);
        assert!(nothing_written(dir.path()));
        assert!(system.performed().is_empty());
    }

    #[test]
    fn saying_no_starts_over_with_the_answers_as_defaults_and_writes_nothing_yet() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = ANSWERS.to_vec();
        lines.push("n");
        // Second round: Enter everywhere except the passwords.
        lines.extend([
            "",
            "",
            "",
            "",
            "",
            "another password",
            "another password",
            "",
            "",
            "",
            "",
            "",
            "^C",
        ]);
        let (mut c, screen, _) = console(dir.path(), &lines);
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Cancelled);
        assert!(nothing_written(dir.path()));
        let text = screen.text();
        assert!(text.contains("Hostname [gw1]: "), "{text}");
        assert!(
            text.contains("Network: dhcp or static [static]: "),
            "{text}"
        );
        assert!(
            text.contains("IP address/prefix [192.0.2.10/24]: "),
            "{text}"
        );
        assert!(
            text.contains("Internal mail server (host or host:port) [192.0.2.25:25]: "),
            "{text}"
        );
        assert!(
            text.contains("Local domains to accept mail for [example.org]: "),
            "{text}"
        );
        assert_eq!(text.matches("Apply these settings? [y/N]: ").count(), 2);
    }

    #[test]
    fn dhcp_setup_writes_no_resolv_conf_and_no_dns_servers() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            "",
            "dhcp",
            "0123456789",
            "0123456789",
            "mail.example.org",
            "example.org",
            "192.0.2.0/24",
            "",
            "pool.ntp.org",
            "yes",
        ];
        let (mut c, _, system) = console(dir.path(), &lines);
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Applied);
        let root = DataRoot::new(dir.path().join("root"));
        assert!(!root.resolv_conf().exists());
        assert!(
            std::fs::read_to_string(root.network_file())
                .unwrap()
                .contains("DHCP=yes")
        );
        assert_eq!(
            std::fs::read_to_string(root.hostname_file()).unwrap(),
            "portcullis\n"
        );
        let config = portcullis_gateway::config::ConfigSource::File(root.config_file())
            .load(&Default::default())
            .unwrap();
        assert!(config.dns.servers.is_empty());
        assert_eq!(system.performed().len(), 2);
    }

    #[test]
    fn a_failing_apply_command_is_reported_but_the_setup_stands() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = ANSWERS.to_vec();
        lines.push("y");
        let (mut c, screen, system) = console(dir.path(), &lines);
        system.answer(
            SystemAction::ApplySystemSettings,
            crate::system::ActionOutput {
                success: false,
                text: "Job for portcullis-system.service failed.\n".into(),
            },
        );
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Applied);
        let text = screen.text();
        assert!(
            text.contains("! systemctl start portcullis-system.service failed: Job for\n")
                && text.contains("takes effect at the next boot"),
            "{text}"
        );
        assert!(text.contains("Setup complete."));
    }

    #[test]
    fn an_unwritable_root_saves_nothing_and_asks_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root"), "a file, not a directory").unwrap();
        let mut lines = ANSWERS.to_vec();
        lines.push("y");
        let (mut c, screen, system) = console(dir.path(), &lines);
        assert_eq!(c.first_boot_setup().unwrap(), SetupOutcome::Cancelled);
        let text = screen.text();
        assert!(text.contains("! cannot save the settings:"), "{text}");
        assert!(text.contains("Hostname [gw1]: "), "asked again: {text}");
        assert!(system.performed().is_empty());
    }
}
