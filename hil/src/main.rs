//! `hil`: runs the hardware-in-the-loop scenarios (or the harness' self-test) and prints one
//! PASS/FAIL line per scenario. All logic is in the `portcullis_hil` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis_hil::bench::Bench;
use portcullis_hil::qemu::Arch;
use portcullis_hil::rig::Rig;
use portcullis_hil::scenario::{self, Scenario};

#[derive(Parser)]
#[command(
    name = "hil",
    about = "Hardware-in-the-loop tests of the Portcullis appliance (QEMU or a real box)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios against the appliance: wizard, boot, delivery, relay, power-cut, watchdog.
    Run {
        /// x86_64 or aarch64.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// The appliance disk image (QEMU rigs; never modified: a working copy is made).
        #[arg(long, required_unless_present = "rig")]
        image: Option<PathBuf>,
        /// Rig file (docs/hil.md); a `[box]` section means a real box.
        #[arg(long)]
        rig: Option<PathBuf>,
        /// Scenarios to run (repeatable); default all. The wizard always runs first unless
        /// --configured.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<Scenario>,
        /// Output directory for transcripts and results.
        #[arg(long, default_value = "hil-out")]
        out: PathBuf,
        /// The box is already set up (real box, or re-run): do not run the wizard unless asked.
        #[arg(long)]
        configured: bool,
    },
    /// Self-test of the harness against the small VM built by hil/devvm/build.
    Selftest {
        /// Kernel image (OUT_DIR/vmlinuz of hil/devvm/build).
        #[arg(long)]
        kernel: PathBuf,
        /// Initramfs (OUT_DIR/initrd.img of hil/devvm/build).
        #[arg(long)]
        initrd: PathBuf,
        /// Output directory for transcripts.
        #[arg(long, default_value = "hil-selftest-out")]
        out: PathBuf,
        /// How the LAN is attached: stream or dgram.
        #[arg(long, default_value = "stream")]
        net: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hil: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            arch,
            image,
            rig,
            scenarios,
            out,
            configured,
        } => {
            let rig_settings = match &rig {
                Some(path) => Rig::load(path)?,
                None => Rig::default(),
            };
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut bench = if rig_settings.real_box.is_some() {
                Bench::real_box(arch, rig_settings, &out)?
            } else {
                let image = image.context("--image is needed for a QEMU rig")?;
                Bench::qemu(arch, &image, rig_settings, &out)?
            };
            let selected = if scenarios.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                scenarios
            };
            let outcomes = scenario::run(&mut bench, &selected, configured);
            let _ = bench.power.cut();
            let summary: String = outcomes.iter().map(|o| o.line() + "\n").collect();
            std::fs::write(out.join("summary.txt"), &summary).context("writing summary.txt")?;
            let failed = outcomes.iter().filter(|o| !o.passed).count();
            println!("{} passed, {} failed", outcomes.len() - failed, failed);
            println!("transcripts: {}", out.display());
            Ok(failed == 0)
        }
        Command::Selftest {
            kernel,
            initrd,
            out,
            net,
        } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let defs = out.join("definitions");
            std::fs::create_dir_all(&defs)?;
            std::fs::write(
                defs.join("hello.txt"),
                "hello from the definitions server\n",
            )?;
            let mut bench = Bench::devvm(&kernel, &initrd, &defs, &net, &out)?;
            let checks = portcullis_hil::selftest::run(&mut bench);
            let _ = bench.power.cut();
            let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
            println!("{} passed, {} failed", checks.len() - failed, failed);
            Ok(failed == 0 && checks.len() == 8)
        }
    }
}
