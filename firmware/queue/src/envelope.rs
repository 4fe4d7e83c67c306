//! The SMTP envelope of a message, as written in the first line of its spool file.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who handed us the message: enough to write a Received trail and the tracking log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The peer address of the SMTP client.
    pub ip: IpAddr,
    /// The name the client gave in HELO/EHLO.
    pub helo: Option<String>,
    /// Protocol and cipher if the session used TLS, e.g. "TLSv1.3 TLS13_AES_256_GCM_SHA384".
    pub tls: Option<String>,
    /// The inbound session number (the `session_id` field of the SMTP logs).
    pub session_id: u64,
}

/// The envelope of a message: sender, recipients and how it arrived.
///
/// It is the single line of JSON after the magic line of a spool file, so the spool file alone is
/// enough to rebuild the queue entry if the state database is lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The MAIL FROM address; "" is the null sender (bounces).
    pub sender: String,
    /// The RCPT TO addresses, in the order the client gave them.
    pub recipients: Vec<String>,
    /// The client asked for SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The client declared BODY=8BITMIME (or sent with BDAT BINARYMIME).
    pub eight_bit: bool,
    /// When the message was received.
    pub received_at: DateTime<Utc>,
    /// The SMTP client, absent for messages made by the gateway itself (DSNs).
    pub client: Option<ClientInfo>,
}
