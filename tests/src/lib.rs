//! End-to-end test support for Portcullis: the real `portcullis` binary between real SMTP peers.
//!
//! Every test here drives the binary as an administrator would (a TOML config, `portcullis run`,
//! `portcullis queue …`, `portcullis ctl …`) and proves the outcome at a real peer: swaks or a raw
//! TCP client on the inbound side, an aiosmtpd sink (`fixtures/sink.py`) as the next hop, dnsmasq
//! for MX lookups. All traffic stays on 127.0.0.1, every wait is bounded, and every process a test
//! starts is killed when its guard drops (and, through `PR_SET_PDEATHSIG`, if the test runner dies).

pub mod cli;
pub mod dns;
pub mod gateway;
pub mod ports;
pub mod process;
pub mod sink;
pub mod smtp;
pub mod swaks;
pub mod wait;

pub use cli::{CliOutput, QueueEntry};
pub use dns::Dns;
pub use gateway::{Daemon, GatewayConfig, Launch};
pub use ports::free_port;
pub use sink::{Sink, SinkMessage, SinkOptions};
pub use smtp::{Reply, SmtpClient};
pub use swaks::{Swaks, SwaksRun};
pub use wait::wait_for;

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the workspace root")
        .to_path_buf()
}

/// A file shipped in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The Python interpreter that runs the fixtures (`$PYTHON`, else `python3` from `PATH`).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}
