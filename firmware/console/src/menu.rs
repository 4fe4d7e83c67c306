//! The numbered admin menu shown once the appliance is set up (OPNsense/TrueNAS style).
//!
//! Each item asks its questions first; Ctrl-C during them goes back to the menu without a
//! change. Changes are written like the setup's: staged, validated, renamed into place.

use portcullis_gateway::config::{ConfigSource, Overrides};

use crate::password::PasswordHashString;
use crate::settings::{GatewayConfig, Network};
use crate::smtp_probe::{PROBE_TIMEOUT, ProbeLine, probe};
use crate::status::{STATUS_TIMEOUT, describe, gateway_status};
use crate::store::Changes;
use crate::system::{ActionOutput, GATEWAY_UNIT, SystemAction};
use crate::terminal::{InputError, forget_interrupt, plain, wrap};
use crate::wizard::{LABEL_WIDTH, ask_network, describe_network, summary_line};
use crate::{Console, ConsoleError, validate};

/// How many log lines item 9 shows.
pub const LOG_LINES: u32 = 20;

/// How the menu was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuEnd {
    /// Standard input ended.
    InputClosed,
    /// Factory defaults were restored: setup is needed again.
    FactoryReset,
}

/// The menu items, in their numbered order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuItem {
    /// 1: host name, addresses, service state, queues, definitions.
    ShowStatus,
    /// 2: DHCP or static address, gateway, DNS.
    ChangeNetwork,
    /// 3: `ping -c 3 -W 2 HOST`.
    Ping,
    /// 4: banner, EHLO, QUIT against the internal mail server.
    TestSmtp,
    /// 5: a new web console admin password.
    ResetPassword,
    /// 6: erase everything and reboot into the first-boot setup.
    FactoryDefaults,
    /// 7: restart the machine.
    Reboot,
    /// 8: switch the machine off.
    PowerOff,
    /// 9: the newest lines of the gateway's log.
    ShowLog,
}

impl MenuItem {
    /// Every item, numbered from 1.
    pub const ALL: [MenuItem; 9] = [
        MenuItem::ShowStatus,
        MenuItem::ChangeNetwork,
        MenuItem::Ping,
        MenuItem::TestSmtp,
        MenuItem::ResetPassword,
        MenuItem::FactoryDefaults,
        MenuItem::Reboot,
        MenuItem::PowerOff,
        MenuItem::ShowLog,
    ];

    /// The line shown in the menu.
    pub fn title(self) -> &'static str {
        match self {
            MenuItem::ShowStatus => "Show status",
            MenuItem::ChangeNetwork => "Change network settings",
            MenuItem::Ping => "Ping a host",
            MenuItem::TestSmtp => "Test SMTP to the internal mail server",
            MenuItem::ResetPassword => "Reset the web console admin password",
            MenuItem::FactoryDefaults => "Restore factory defaults",
            MenuItem::Reboot => "Reboot",
            MenuItem::PowerOff => "Power off",
            MenuItem::ShowLog => "Show the last 20 log lines",
        }
    }

    /// The item numbered `answer` (1-9).
    pub fn from_choice(answer: &str) -> Result<MenuItem, validate::Invalid> {
        answer
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| MenuItem::ALL.get(i).copied())
            .ok_or_else(|| validate::Invalid("choose a number from 1 to 9".into()))
    }
}

impl Console {
    /// Shows the menu and runs the chosen items until the input ends or the box was reset.
    pub fn menu(&mut self) -> Result<MenuEnd, ConsoleError> {
        loop {
            forget_interrupt();
            self.show_menu()?;
            let item = match self
                .terminal
                .ask("Choose", Some("1-9"), MenuItem::from_choice)
            {
                Ok(item) => item,
                Err(InputError::Interrupted) => continue,
                Err(InputError::Closed) => return Ok(MenuEnd::InputClosed),
                Err(InputError::Io(e)) => return Err(e.into()),
            };
            self.terminal.say("")?;
            match self.run_item(item) {
                Ok(Some(end)) => return Ok(end),
                Ok(None) => {}
                Err(InputError::Interrupted) => {
                    self.terminal.say("\nCancelled; nothing was changed.")?
                }
                Err(InputError::Closed) => return Ok(MenuEnd::InputClosed),
                Err(InputError::Io(e)) => return Err(e.into()),
            }
        }
    }

    fn show_menu(&mut self) -> Result<(), ConsoleError> {
        let name = self.configured_hostname();
        let network = self
            .current_network()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "not configured".into());
        let mut text = format!(
            "\nPortcullis console - {name} - version {}\nNetwork: {network}\n\n",
            env!("CARGO_PKG_VERSION")
        );
        for (i, item) in MenuItem::ALL.iter().enumerate() {
            text.push_str(&format!("  {}) {}\n", i + 1, item.title()));
        }
        Ok(self.terminal.say(&text)?)
    }

    fn run_item(&mut self, item: MenuItem) -> Result<Option<MenuEnd>, InputError> {
        tracing::info!(target: "console", item = item.title(), "menu item chosen");
        match item {
            MenuItem::ShowStatus => self.show_status()?,
            MenuItem::ChangeNetwork => self.change_network()?,
            MenuItem::Ping => self.ping()?,
            MenuItem::TestSmtp => self.test_smtp()?,
            MenuItem::ResetPassword => self.reset_password()?,
            MenuItem::FactoryDefaults => return self.factory_defaults(),
            MenuItem::Reboot => self.power(SystemAction::Reboot, "Reboot now?", "Rebooting.")?,
            MenuItem::PowerOff => {
                self.power(SystemAction::PowerOff, "Power off now?", "Powering off.")?
            }
            MenuItem::ShowLog => self.show_log()?,
        }
        Ok(None)
    }

    /// The host name the setup saved (what the box is called after boot), else the running one.
    fn configured_hostname(&self) -> String {
        self.root
            .read_setting(&self.root.hostname_file())
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }

    fn current_network(&self) -> Option<Network> {
        let text = std::fs::read_to_string(self.root.network_file()).ok()?;
        Network::from_networkd_file(&text)
    }

    /// Runs a query; `None` (with the reason shown) when the command could not run.
    fn query(&mut self, action: SystemAction) -> Result<Option<ActionOutput>, InputError> {
        match self.system.perform(&action) {
            Ok(output) => Ok(Some(output)),
            Err(e) => {
                self.terminal.problem(&e)?;
                Ok(None)
            }
        }
    }

    /// Prints command output indented, long lines wrapped.
    fn show_output(&mut self, text: &str) -> Result<(), InputError> {
        let mut shown = Vec::new();
        for line in plain(text).lines() {
            shown.extend(wrap(&format!("  {line}"), crate::terminal::WIDTH, "      "));
        }
        if !shown.is_empty() {
            self.terminal.say(&shown.join("\n"))?;
        }
        Ok(())
    }

    fn show_status(&mut self) -> Result<(), InputError> {
        let mut lines = vec!["Status".to_string()];
        let configured = self.configured_hostname();
        let running = gethostname::gethostname().to_string_lossy().into_owned();
        let name = if running == configured {
            configured
        } else {
            format!("{configured} (now {running}, until the next boot)")
        };
        lines.push(summary_line("Host name", &name));
        let setup = self
            .root
            .read_setting(&self.root.setup_complete_file())
            .map(|at| format!("complete since {at}"))
            .unwrap_or_else(|| "not complete".into());
        lines.push(summary_line("Setup", &setup));
        match self.current_network() {
            Some(network) => lines.extend(describe_network(&network)),
            None => lines.push(summary_line("Network", "not configured")),
        }
        self.terminal.say(&lines.join("\n"))?;
        if let Some(output) = self.query(SystemAction::ShowAddresses)? {
            let mut addresses: Vec<String> = plain(&output.text)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            if addresses.is_empty() {
                addresses.push("unknown".into());
            }
            let text: Vec<String> = addresses
                .iter()
                .enumerate()
                .map(|(i, a)| summary_line(if i == 0 { "Interfaces" } else { "" }, a))
                .collect();
            self.terminal.say(&text.join("\n"))?;
        }
        if let Some(output) = self.query(SystemAction::GatewayState)? {
            let state = output.text.trim();
            let state = if state.is_empty() { "unknown" } else { state };
            self.terminal
                .say(&summary_line("Service", &format!("{GATEWAY_UNIT} {state}")))?;
        }
        match gateway_status(&self.root.control_socket(), STATUS_TIMEOUT) {
            Ok(data) => {
                let lines: Vec<String> = describe(&data, LABEL_WIDTH)
                    .into_iter()
                    .map(|l| format!("  {l}"))
                    .collect();
                self.terminal.say(&lines.join("\n"))?;
            }
            Err(why) => self
                .terminal
                .say(&summary_line("Mail gateway", &format!("no answer: {why}")))?,
        }
        self.terminal.pause()
    }

    fn change_network(&mut self) -> Result<(), InputError> {
        let current = self.current_network();
        self.terminal.say("Change network settings")?;
        let network = ask_network(&mut self.terminal, current.as_ref())?;
        let mut summary = vec![String::new(), "New network settings".to_string()];
        summary.extend(describe_network(&network));
        self.terminal.say(&summary.join("\n"))?;
        if !self.terminal.confirm("Apply these settings?")? {
            self.terminal.say("Nothing was changed.")?;
            return Ok(());
        }
        let config_file = self.root.config_file();
        let staged = GatewayConfig::load(&config_file).and_then(|mut config| {
            config.set_dns_servers(network.dns_servers());
            let mut changes = Changes::new();
            network.stage(&self.root, &mut changes)?;
            config.stage(&config_file, &mut changes)?;
            Ok(changes)
        });
        let committed = staged.and_then(|changes| Ok(changes.commit()?));
        if let Err(e) = committed {
            self.terminal
                .problem(&format!("the network was not changed: {e}"))?;
            return Ok(());
        }
        tracing::info!(target: "console", network = %network, "network settings changed");
        self.apply_actions(&[
            SystemAction::ApplySystemSettings,
            SystemAction::ReloadGateway,
        ])?;
        self.terminal.say("Network settings applied.")?;
        Ok(())
    }

    fn ping(&mut self) -> Result<(), InputError> {
        let host = self.terminal.ask("Host to ping", None, validate::host)?;
        let output = self.query(SystemAction::Ping(host.clone()))?;
        // Ctrl-C stops ping itself; it must not also cancel the next question.
        forget_interrupt();
        if let Some(output) = output {
            self.show_output(&output.text)?;
            if !output.success {
                self.terminal
                    .problem(&format!("no answer from {host} (see above)"))?;
            }
        }
        self.terminal.pause()
    }

    /// The first host of the first route (the internal mail server the setup configured).
    fn internal_mail_server(&self) -> Option<String> {
        let config = ConfigSource::File(self.root.config_file())
            .load(&Overrides::default())
            .ok()?;
        config
            .delivery
            .routes
            .first()
            .and_then(|r| r.hosts.first())
            .or_else(|| config.delivery.default_route.first())
            .cloned()
    }

    fn test_smtp(&mut self) -> Result<(), InputError> {
        let default = self.internal_mail_server();
        let server = self.terminal.ask(
            "Mail server to test",
            default.as_deref(),
            validate::mail_server,
        )?;
        let helo = self.configured_hostname();
        let mut lines = Vec::new();
        let result = probe(&server, &helo, PROBE_TIMEOUT, &mut |line| {
            lines.push(match line {
                ProbeLine::Note(n) => format!("  {n}"),
                ProbeLine::Sent(s) => format!("  > {s}"),
                ProbeLine::Received(r) => format!("  < {r}"),
            })
        });
        forget_interrupt();
        self.terminal.say(&lines.join("\n"))?;
        match result {
            Ok(()) => self.terminal.say(&format!(
                "SMTP test passed: {server} answered the banner, EHLO and QUIT."
            ))?,
            Err(e) => {
                tracing::warn!(target: "console", server = %server, error = %e, "SMTP test failed");
                self.terminal.problem(&format!("SMTP test failed: {e}"))?
            }
        }
        self.terminal.pause()
    }

    fn reset_password(&mut self) -> Result<(), InputError> {
        self.terminal.say(&format!(
            "Reset the web console admin password (at least {} characters, not shown).",
            validate::MIN_PASSWORD_CHARS
        ))?;
        let password = self
            .terminal
            .ask_new_password("New admin password", validate::password)?;
        let config_file = self.root.config_file();
        let saved = PasswordHashString::new(&password)
            .map_err(|e| e.to_string())
            .and_then(|hash| {
                let mut config = GatewayConfig::load(&config_file).map_err(|e| e.to_string())?;
                config.set_admin_password_hash(&hash);
                let mut changes = Changes::new();
                config
                    .stage(&config_file, &mut changes)
                    .map_err(|e| e.to_string())?;
                changes.commit().map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            self.terminal
                .problem(&format!("the password was not changed: {e}"))?;
            return Ok(());
        }
        tracing::info!(target: "console", "web console admin password reset on the serial console");
        self.apply_actions(&[SystemAction::ReloadGateway])?;
        self.terminal.say("Admin password changed.")?;
        Ok(())
    }

    fn factory_defaults(&mut self) -> Result<Option<MenuEnd>, InputError> {
        let name = self.configured_hostname();
        self.terminal.say(
            "Restore factory defaults\n\
             This erases everything the appliance keeps: the gateway configuration, the\n\
             network and system settings and all mail data (queues, quarantine, logs).\n\
             Then it reboots into the first-boot setup.",
        )?;
        let answer = self.terminal.read_answer(
            &format!("Type the host name ({name}) or yes to erase everything"),
            None,
        )?;
        if answer != name && !answer.eq_ignore_ascii_case("yes") {
            self.terminal.say("Nothing was erased.")?;
            return Ok(None);
        }
        tracing::warn!(target: "console", "factory defaults restored on the serial console");
        // Stop the gateway first so it does not write into the data being erased.
        self.apply_actions(&[SystemAction::StopGateway])?;
        if let Err(e) = self.root.erase_everything() {
            self.terminal.problem(&format!("erasing stopped: {e}"))?;
            if self.root.is_setup_complete() {
                return Ok(None);
            }
        }
        self.terminal.say("Factory defaults restored. Rebooting.")?;
        self.apply_actions(&[SystemAction::Reboot])?;
        forget_interrupt();
        Ok(Some(MenuEnd::FactoryReset))
    }

    fn power(
        &mut self,
        action: SystemAction,
        question: &str,
        done: &str,
    ) -> Result<(), InputError> {
        if !self.terminal.confirm(question)? {
            self.terminal.say("Nothing was done.")?;
            return Ok(());
        }
        tracing::info!(target: "console", command = %action.command().join(" "), "power action on the serial console");
        self.terminal.say(done)?;
        self.apply_actions(&[action])?;
        Ok(())
    }

    fn show_log(&mut self) -> Result<(), InputError> {
        self.terminal
            .say(&format!("The last {LOG_LINES} lines of the gateway's log"))?;
        if let Some(output) = self.query(SystemAction::GatewayLog(LOG_LINES))? {
            if output.text.trim().is_empty() {
                self.terminal.say("  (no log lines)")?;
            } else {
                self.show_output(&output.text)?;
            }
        }
        self.terminal.pause()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::settings::tests::{setup, static_network};
    use crate::store::DataRoot;
    use crate::system::RecordingSystem;
    use crate::terminal::Terminal;
    use crate::terminal::scripted::{Screen, ScriptedInput, script};

    /// A console on a data root that went through setup (gw1, static, correct horse battery).
    fn console(lines: &[&str]) -> (tempfile::TempDir, Console, Screen, Arc<RecordingSystem>) {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        setup(static_network())
            .stage(&root, "2024-05-01T10:00:00Z")
            .unwrap()
            .commit()
            .unwrap();
        let screen = Screen::default();
        let system = Arc::new(RecordingSystem::new());
        let console = Console::new(
            crate::ConsoleOptions {
                root: dir.path().to_path_buf(),
                zoneinfo: dir.path().join("zoneinfo"),
            },
            Terminal::new(
                Box::new(ScriptedInput::new(script(lines))),
                Box::new(screen.clone()),
            ),
            Box::new(system.clone()),
        );
        (dir, console, screen, system)
    }

    #[test]
    fn the_menu_fits_24_rows_and_80_columns_and_ends_with_the_choose_prompt() {
        let (_dir, mut c, screen, _) = console(&[]);
        assert_eq!(c.menu().unwrap(), MenuEnd::InputClosed);
        let text = screen.text();
        assert!(
            text.contains("Portcullis console - gw1 - version"),
            "{text}"
        );
        assert!(
            text.contains("Network: static 192.0.2.10/24 via 192.0.2.1"),
            "{text}"
        );
        assert!(text.contains("  1) Show status\n"), "{text}");
        assert!(text.contains("  9) Show the last 20 log lines\n"), "{text}");
        assert!(
            text.trim_end_matches('\n').ends_with("Choose [1-9]: "),
            "{text:?}"
        );
        assert!(text.lines().count() < 24, "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn a_wrong_choice_is_explained_and_ctrl_c_redraws_the_menu() {
        let (_dir, mut c, screen, _) = console(&["0", "^C"]);
        assert_eq!(c.menu().unwrap(), MenuEnd::InputClosed);
        let text = screen.text();
        assert!(text.contains("! choose a number from 1 to 9"), "{text}");
        assert_eq!(text.matches("Portcullis console").count(), 2, "{text}");
    }

    #[test]
    fn status_shows_name_network_service_and_that_the_gateway_is_not_running() {
        let (_dir, mut c, screen, system) = console(&["1", ""]);
        system.answer(
            SystemAction::ShowAddresses,
            ActionOutput {
                success: true,
                text: "lo   UNKNOWN  127.0.0.1/8 ::1/128\neth0   UP   192.0.2.10/24\n".into(),
            },
        );
        system.answer(
            SystemAction::GatewayState,
            ActionOutput {
                success: false,
                text: "inactive\n".into(),
            },
        );
        c.menu().unwrap();
        let text = screen.text();
        assert!(text.contains("Host name:        gw1"), "{text}");
        assert!(
            text.contains("Setup:            complete since 2024-05-01T10:00:00Z"),
            "{text}"
        );
        assert!(
            text.contains("Interfaces:       lo UNKNOWN 127.0.0.1/8 ::1/128\n"),
            "{text}"
        );
        assert!(
            text.contains("\n                    eth0 UP 192.0.2.10/24\n"),
            "{text}"
        );
        assert!(
            text.contains("Service:          portcullis.service inactive"),
            "{text}"
        );
        assert!(
            text.contains("Mail gateway:     no answer: the gateway is not running"),
            "{text}"
        );
        assert!(
            text.contains("Press Enter to return to the menu: "),
            "{text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }

    #[test]
    fn change_network_to_dhcp_rewrites_network_resolv_conf_and_gateway_dns() {
        let (dir, mut c, screen, system) = console(&["2", "dhcp", "y"]);
        c.menu().unwrap();
        let root = DataRoot::new(dir.path());
        let text = screen.text();
        assert!(
            text.contains("Network: dhcp or static [static]: "),
            "{text}"
        );
        assert!(text.contains("Network settings applied."), "{text}");
        assert!(
            std::fs::read_to_string(root.network_file())
                .unwrap()
                .contains("DHCP=yes")
        );
        assert!(!root.resolv_conf().exists());
        let config = ConfigSource::File(root.config_file())
            .load(&Overrides::default())
            .unwrap();
        assert!(config.dns.servers.is_empty());
        assert!(
            config.console.admin_password_hash.is_some(),
            "the rest is kept"
        );
        assert_eq!(
            system.performed(),
            [
                SystemAction::ApplySystemSettings,
                SystemAction::ReloadGateway
            ]
        );
    }

    #[test]
    fn change_network_offers_the_current_values_and_ctrl_c_changes_nothing() {
        let (dir, mut c, screen, system) = console(&["2", "", "", "^C"]);
        let before = std::fs::read_to_string(DataRoot::new(dir.path()).network_file()).unwrap();
        c.menu().unwrap();
        let text = screen.text();
        assert!(
            text.contains("IP address/prefix [192.0.2.10/24]: "),
            "{text}"
        );
        assert!(text.contains("Default gateway [192.0.2.1]: "), "{text}");
        assert!(text.contains("Cancelled; nothing was changed."), "{text}");
        let after = std::fs::read_to_string(DataRoot::new(dir.path()).network_file()).unwrap();
        assert_eq!(before, after);
        assert!(system.performed().is_empty());
    }

    #[test]
    fn ping_runs_ping_and_says_when_there_is_no_answer() {
        let (_dir, mut c, screen, system) = console(&["3", "-f", "192.0.2.1", ""]);
        system.answer(
            SystemAction::Ping("192.0.2.1".into()),
            ActionOutput {
                success: false,
                text: "3 packets transmitted, 0 received, 100% packet loss\n".into(),
            },
        );
        c.menu().unwrap();
        let text = screen.text();
        assert!(text.contains("! \"-f\" is not a host name"), "{text}");
        assert!(
            text.contains("  3 packets transmitted, 0 received"),
            "{text}"
        );
        assert!(text.contains("! no answer from 192.0.2.1"), "{text}");
        assert_eq!(system.performed(), [SystemAction::Ping("192.0.2.1".into())]);
    }

    #[test]
    fn smtp_test_offers_the_internal_server_and_reports_a_closed_port() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = format!("127.0.0.1:{port}");
        let (_dir, mut c, screen, _) = console(&["4", &target, ""]);
        c.menu().unwrap();
        let text = screen.text();
        assert!(
            text.contains("Mail server to test [192.0.2.25:25]: "),
            "{text}"
        );
        assert!(
            text.contains(&format!("! SMTP test failed: cannot connect to {target}")),
            "{text}"
        );
    }

    #[test]
    fn reset_password_replaces_only_the_hash() {
        let (dir, mut c, screen, system) = console(&["5", "new password 1", "new password 1"]);
        let root = DataRoot::new(dir.path());
        let before = std::fs::read_to_string(root.config_file()).unwrap();
        c.menu().unwrap();
        assert!(
            screen.text().contains("Admin password changed."),
            "{}",
            screen.text()
        );
        let after = std::fs::read_to_string(root.config_file()).unwrap();
        let hash_line = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("admin_password_hash"))
                .unwrap()
                .to_string()
        };
        assert_ne!(hash_line(&before), hash_line(&after));
        assert_eq!(
            before.replace(&hash_line(&before), ""),
            after.replace(&hash_line(&after), "")
        );
        let config = ConfigSource::File(root.config_file())
            .load(&Overrides::default())
            .unwrap();
        let hash =
            PasswordHashString::from_stored(&config.console.admin_password_hash.unwrap()).unwrap();
        assert!(hash.verify("new password 1"));
        assert!(!screen.text().contains("new password 1"));
        assert_eq!(system.performed(), [SystemAction::ReloadGateway]);
    }

    #[test]
    fn factory_defaults_need_the_host_name_or_yes() {
        let (dir, mut c, screen, system) = console(&["6", "no", "6", "gw1"]);
        assert_eq!(c.menu().unwrap(), MenuEnd::FactoryReset);
        let text = screen.text();
        assert!(
            text.contains("Type the host name (gw1) or yes to erase everything: "),
            "{text}"
        );
        assert!(text.contains("Nothing was erased."), "{text}");
        assert!(
            text.contains("Factory defaults restored. Rebooting."),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(
            system.performed(),
            [SystemAction::StopGateway, SystemAction::Reboot]
        );
    }

    #[test]
    fn reboot_and_power_off_ask_first() {
        let (_dir, mut c, _, system) = console(&["7", "", "7", "y", "8", "n", "8", "yes"]);
        c.menu().unwrap();
        assert_eq!(
            system.performed(),
            [SystemAction::Reboot, SystemAction::PowerOff]
        );
    }

    #[test]
    fn log_lines_are_shown_plain_and_wrapped() {
        let (_dir, mut c, screen, system) = console(&["9", ""]);
        system.answer(
            SystemAction::GatewayLog(20),
            ActionOutput {
                success: true,
                text: format!(
                    "May 01 10:00:00 gw1 portcullis[1]: \x1b[1m{}\n",
                    "long ".repeat(30)
                ),
            },
        );
        c.menu().unwrap();
        let text = screen.text();
        assert!(
            text.contains("  May 01 10:00:00 gw1 portcullis[1]: ?[1mlong"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert_eq!(system.performed(), [SystemAction::GatewayLog(20)]);
    }
}
