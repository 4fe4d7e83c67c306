//! `portcullis-hil`: the hardware-in-the-loop harness for the Portcullis appliance.
//!
//! It drives a box (QEMU, or a real one described by a rig file) through three things it owns:
//! the [`power`] switch, the [`serial`] console line and the [`lan`] the box is cabled to, on
//! which the harness itself plays every other host (name server, internal mail server,
//! internet senders, definitions server). The scenario module builds the end-to-end
//! scenarios from those pieces; the `hil` binary only parses arguments and calls them.

#![warn(missing_docs)]

pub mod bench;
pub mod disk;
pub mod dns;
mod error;
pub mod http;
pub mod lan;
pub mod power;
pub mod qemu;
pub mod rig;
pub mod scenario;
pub mod selftest;
pub mod serial;
pub mod smtp;

pub use error::HilError;
