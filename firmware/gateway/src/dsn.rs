//! Delivery status notifications (RFC 3464): bounces and delay notices to the sender.
//!
//! A notice is an ordinary message committed to our own queue with the null sender `<>`, so it
//! is as durable as any mail and can itself never be bounced (no loops). Nothing is ever sent
//! to the null sender.

use chrono::{DateTime, Utc};
use portcullis_queue::{Envelope, QueueEntry, QueueId};
use tokio::io::AsyncReadExt;

use crate::state::Shared;

/// One recipient the notice reports on.
#[derive(Debug, Clone)]
pub struct ReportedRecipient {
    /// The recipient address.
    pub address: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The next hop's reply or our own reason.
    pub diagnostic: String,
}

/// Which notice to send.
#[derive(Debug, Clone, Copy)]
pub enum Notice {
    /// Delivery failed permanently for these recipients.
    Failure,
    /// Delivery is delayed; we keep trying until the given time.
    Delay {
        /// When the message will bounce if still undelivered.
        until: DateTime<Utc>,
    },
}

/// Why a notice could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// Storing the notice in the queue failed.
    #[error("cannot queue the notice: {0}")]
    Queue(String),
}

/// Extracts the RFC 3463 status from a reply text, or a generic one for the class.
pub fn status_of(reply: &str, permanent: bool) -> String {
    let found = reply
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find(|tok| {
            let parts: Vec<&str> = tok.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "2" | "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        });
    match found {
        Some(s) if permanent == s.starts_with('5') => s.to_string(),
        _ if permanent => "5.0.0".into(),
        _ => "4.0.0".into(),
    }
}

/// Queues a notice about `original` to its sender. Returns `None` when no notice may be sent
/// (null sender, or nothing to report).
pub async fn send_notice(
    shared: &Shared,
    original: &QueueEntry,
    notice: Notice,
    recipients: &[ReportedRecipient],
) -> Result<Option<QueueId>, NoticeError> {
    if original.envelope.sender.is_empty() || recipients.is_empty() {
        return Ok(None);
    }
    let snap = shared.snapshot();
    let config = &snap.config;
    let mut to = vec![original.envelope.sender.clone()];
    if matches!(notice, Notice::Failure) && !config.bounces.postmaster.is_empty() {
        to.push(config.bounces.postmaster.clone());
    }
    let headers = original_headers(shared, &original.id).await;
    let text = compose(
        &config.server.hostname,
        &config.bounce_from(),
        original,
        notice,
        recipients,
        &headers,
    );
    let envelope = Envelope {
        sender: String::new(),
        recipients: to,
        smtputf8: original.envelope.smtputf8,
        eight_bit: true,
        received_at: Utc::now(),
        client: None,
    };
    // Our own notice: queued already marked scanned, like every message the gateway makes.
    let entry = crate::disposition::queue_scanned(shared, envelope, &text)
        .await
        .map_err(NoticeError::Queue)?;
    let kind = match notice {
        Notice::Failure => "dsn_sent",
        Notice::Delay { .. } => "delay_notice_sent",
    };
    shared.queue.tracking().event(
        &original.id,
        portcullis_queue::TrackEvent {
            at: Utc::now(),
            kind: kind.into(),
            recipient: Some(original.envelope.sender.clone()),
            detail: format!("notice queued as {}", entry.id),
        },
    );
    tracing::info!(queue_id = %original.id, notice_id = %entry.id, to = %original.envelope.sender, kind, "delivery status notice queued");
    shared.queue.notify_new().notify_one();
    Ok(Some(entry.id))
}

/// The original message's header section (at most 64 KiB): returned with a notice, and read
/// by notifications before the message may leave the queue.
pub(crate) async fn original_headers(shared: &Shared, id: &QueueId) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(message) = shared.queue.small_message(id).await {
        buf.extend_from_slice(&message[..message.len().min(64 * 1024)]);
        return header_section(buf);
    }
    let Some((path, offset)) = shared.queue.message_path(id) else {
        return Vec::new();
    };
    let read = async {
        let mut f = tokio::fs::File::open(&path).await?;
        tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(offset)).await?;
        f.take(64 * 1024).read_to_end(&mut buf).await
    };
    if read.await.is_err() {
        return Vec::new();
    }
    header_section(buf)
}

/// Cuts `buf` (the start of a message) after its header section.
fn header_section(mut buf: Vec<u8>) -> Vec<u8> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(buf.len());
    buf.truncate(end);
    buf
}

/// Builds the multipart/report message.
fn compose(
    reporting_mta: &str,
    from: &str,
    original: &QueueEntry,
    notice: Notice,
    recipients: &[ReportedRecipient],
    headers: &[u8],
) -> Vec<u8> {
    let now = Utc::now();
    let boundary = format!("=_portcullis_{}_{}", original.id, now.timestamp_micros());
    let (subject, action, intro) = match notice {
        Notice::Failure => (
            "Undelivered Mail Returned to Sender",
            "failed",
            "Your message could not be delivered to one or more recipients.\r\n\
             It has not been delivered to the addresses below; the reason is given for each.",
        ),
        Notice::Delay { .. } => (
            "Delayed Mail (still being retried)",
            "delayed",
            "Delivery of your message to the recipients below is delayed.\r\n\
             This is only a warning: you do not need to send the message again. We will keep trying.",
        ),
    };
    let mut human =
        format!("This is the mail system at host {reporting_mta}.\r\n\r\n{intro}\r\n\r\n");
    if let Notice::Delay { until } = notice {
        human.push_str(&format!(
            "If it still cannot be delivered by {}, it will be returned to you.\r\n\r\n",
            until.to_rfc2822()
        ));
    }
    for r in recipients {
        human.push_str(&format!("<{}>: {}\r\n", r.address, one_line(&r.diagnostic)));
    }
    let mut status = format!(
        "Reporting-MTA: dns; {reporting_mta}\r\nX-Portcullis-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.id,
        original.envelope.received_at.to_rfc2822()
    );
    for r in recipients {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {}\r\n",
            r.address,
            r.status,
            one_line(&r.diagnostic),
            now.to_rfc2822()
        ));
        if let Notice::Delay { until } = notice {
            status.push_str(&format!("Will-Retry-Until: {}\r\n", until.to_rfc2822()));
        }
    }
    let mut msg = format!(
        "From: Mail Delivery System <{from}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.{micros}@{reporting_mta}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {human}\r\n\
         --{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         {status}\r\n\
         --{boundary}\r\n\
         Content-Description: Undelivered message headers\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n",
        to = original.envelope.sender,
        date = now.to_rfc2822(),
        id = original.id,
        micros = now.timestamp_micros(),
    )
    .into_bytes();
    msg.extend_from_slice(headers);
    if !headers.ends_with(b"\r\n") {
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    msg
}

/// Diagnostics may come from remote servers: keep them on one line so they cannot inject fields.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_taken_from_the_reply_when_the_class_agrees() {
        assert_eq!(
            status_of("host x said: 550 5.1.1 no such user", true),
            "5.1.1"
        );
        assert_eq!(status_of("451 4.3.0 try later", false), "4.3.0");
        assert_eq!(status_of("550 no enhanced code", true), "5.0.0");
        assert_eq!(status_of("connection refused", false), "4.0.0");
        assert_eq!(status_of("421 4.4.2 timeout", true), "5.0.0");
    }

    #[test]
    fn diagnostics_cannot_inject_header_lines() {
        assert_eq!(
            one_line("550 bad\r\nStatus: 2.0.0"),
            "550 bad  Status: 2.0.0"
        );
    }
}
