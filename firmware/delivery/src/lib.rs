//! Outbound SMTP for Portcullis: where a message for a domain goes ([`Router`]) and how it gets there
//! ([`deliver`]).
//!
//! The crate answers two questions for the gateway's scheduler and nothing more:
//!
//! * **Where?** [`Router::next_hop`] turns a recipient domain into a [`NextHop`]: the routing list
//!   (exact domain beats wildcard, the longest wildcard wins), else the default route (a smart host),
//!   else the domain's MX records (RFC 5321 §5.1, null MX per RFC 7505).
//! * **How?** [`deliver`] runs one SMTP transaction over one connection to the first candidate that
//!   accepts a session and reports a [`RcptResult`] per recipient.
//!
//! Concurrency limits, retries and bounces belong to the gateway's scheduler; this crate never
//! retries on its own except for the candidate fallback and the TLS fallback the spec describes.

#![warn(missing_docs)]

mod client;
mod data;
mod error;
mod reply;
mod route;
mod tls;

pub use client::{
    ClientConfig, DeliveryReport, MessageSource, RcptResult, SessionCache, SessionCacheLimits,
    TlsMode, Transaction, deliver, deliver_reusing,
};
pub use error::DeliveryError;
pub use route::{
    Candidate, DnsConfig, DomainPattern, HostPort, NextHop, Route, RouteError, Router,
    RoutingConfig,
};
