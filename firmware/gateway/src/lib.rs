//! The Portcullis gateway: configuration, relay policy, the inbound handler that spools mail,
//! the delivery scheduler with retries and bounces, and the admin control API.
//!
//! The `portcullis` binary only parses its command line and calls [`app::run`] or
//! [`control::request`]; everything the appliance does is reachable from here.

pub mod alerts;
pub mod app;
pub mod config;
pub mod control;
pub mod definitions;
pub mod disclaimer;
pub mod disposition;
pub mod dsn;
pub mod fault;
pub mod housekeeping;
pub mod inbound;
pub mod metrics;
pub mod notifications;
pub mod outbreak;
pub mod quarantine;
pub mod relay;
pub mod rewrite;
pub mod scan;
pub mod scheduler;
pub mod state;
pub mod supervise;
pub mod tls;

pub use config::{Config, ConfigError, ConfigSource, Overrides};
