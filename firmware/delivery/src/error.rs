//! The crate's error type for set-up problems (routing and DNS configuration).

/// Why the delivery side could not be set up.
///
/// Failures of a single delivery are not errors of this kind: [`crate::deliver`] reports them per
/// recipient and [`crate::Router::next_hop`] returns a [`crate::RouteError`].
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The system resolver configuration (`/etc/resolv.conf`) could not be read or used.
    #[error(
        "cannot use the system DNS configuration (/etc/resolv.conf): {0}; set [dns] servers explicitly"
    )]
    SystemDns(String),
    /// A DNS setting is unusable (for example zero attempts or a zero timeout).
    #[error("invalid DNS setting: {0}")]
    InvalidDns(String),
    /// A routing setting is unusable (for example SMTP port 0).
    #[error("invalid routing setting: {0}")]
    InvalidRouting(String),
}
