//! The Portcullis serial console: the first-boot setup wizard, then a numbered admin menu.
//!
//! `portcullis console` runs on the appliance's serial line (systemd attaches it to the TTY in
//! place of a login prompt). While `system/setup-complete` is missing from the data root it
//! runs the [first-boot setup](Console::first_boot_setup); afterwards the [menu](Console::menu).
//! It is made for a dumb 80x24 terminal: plain text, no escape sequences, lines of at most 80
//! columns, and it works whether the terminal echoes or not (or is a pipe, for tests).
//!
//! The parts: [`validate`] checks answers, [`settings`] turns them into files, [`store`] writes
//! files crash-safely into the [`DataRoot`], [`system`] is the one door to the operating system
//! (real, dry-run or recording), [`terminal`] asks and prints, [`smtp_probe`] and [`status`]
//! serve the menu. The serial line strings the test harness waits for are a contract (see
//! `docs/console.md`); change them only together with it.

#![warn(missing_docs)]

pub mod menu;
pub mod password;
pub mod settings;
pub mod smtp_probe;
pub mod status;
pub mod store;
pub mod system;
pub mod terminal;
pub mod validate;
pub mod wizard;

use std::io;
use std::path::PathBuf;

pub use store::{DEFAULT_ROOT, DataRoot};
pub use system::{DryRun, HostSystem, RecordingSystem, SystemAction, SystemActions};
pub use terminal::{StdinInput, Terminal, install_interrupt_handler};
pub use wizard::SetupOutcome;

/// Where time zones are looked up on the appliance.
pub const DEFAULT_ZONEINFO: &str = "/usr/share/zoneinfo";

/// Why the console had to stop: only the terminal itself failing ends it; every other problem
/// is shown to the admin as a `! ` line and the console carries on.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Reading or writing the terminal failed.
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
}

impl From<ConsoleError> for terminal::InputError {
    fn from(e: ConsoleError) -> Self {
        match e {
            ConsoleError::Terminal(e) => terminal::InputError::Io(e),
        }
    }
}

/// How a console session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Standard input ended (Ctrl-D at the menu, or the pipe closed).
    InputClosed,
    /// The first-boot setup was cancelled; nothing was written.
    SetupCancelled,
}

/// Where the console keeps and looks things up.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The appliance data root (config/, system/, data/).
    pub root: PathBuf,
    /// The time zone database the answers are checked against.
    pub zoneinfo: PathBuf,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            root: PathBuf::from(DEFAULT_ROOT),
            zoneinfo: PathBuf::from(DEFAULT_ZONEINFO),
        }
    }
}

/// One console session on one terminal.
pub struct Console {
    root: DataRoot,
    zoneinfo: PathBuf,
    terminal: Terminal,
    system: Box<dyn SystemActions>,
}

impl Console {
    /// A console over `terminal` that changes the system through `system`.
    pub fn new(
        options: ConsoleOptions,
        terminal: Terminal,
        system: Box<dyn SystemActions>,
    ) -> Console {
        // The gateway config records the data directory; it must not depend on the cwd.
        let root = std::path::absolute(&options.root).unwrap_or(options.root);
        Console {
            root: DataRoot::new(root),
            zoneinfo: options.zoneinfo,
            terminal,
            system,
        }
    }

    /// Runs the wizard while setup is incomplete and the menu afterwards, until the input ends
    /// or the setup is cancelled.
    pub fn run(&mut self) -> Result<SessionEnd, ConsoleError> {
        loop {
            if !self.root.is_setup_complete() {
                if self.first_boot_setup()? == SetupOutcome::Cancelled {
                    return Ok(SessionEnd::SetupCancelled);
                }
            } else if self.menu()? == menu::MenuEnd::InputClosed {
                return Ok(SessionEnd::InputClosed);
            }
        }
    }

    /// Carries out `actions` in order; a failure is shown (the files are written, so the
    /// image applies the setting at the next boot) and the rest still run.
    fn apply_actions(&mut self, actions: &[SystemAction]) -> Result<(), ConsoleError> {
        for action in actions {
            let command = action.command().join(" ");
            let why = match self.system.perform(action) {
                Ok(output) if output.success => continue,
                Ok(output) => output
                    .text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("no reason given")
                    .to_string(),
                Err(e) => e,
            };
            tracing::warn!(target: "console", command = %command, error = %why, "applying a setting failed");
            self.terminal.problem(&format!(
                "{command} failed: {why}; it takes effect at the next boot"
            ))?;
        }
        Ok(())
    }
}

/// Runs a console on this process's standard input and output: the real system, or with
/// `dry_run` one that only prints `would run: COMMAND`.
pub fn run_on_stdio(options: ConsoleOptions, dry_run: bool) -> Result<SessionEnd, ConsoleError> {
    install_interrupt_handler()?;
    let system: Box<dyn SystemActions> = if dry_run {
        Box::new(DryRun::new(io::stdout()))
    } else {
        Box::new(HostSystem)
    };
    let terminal = Terminal::new(Box::new(StdinInput::new()), Box::new(io::stdout()));
    Console::new(options, terminal, system).run()
}
