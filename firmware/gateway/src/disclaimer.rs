//! The disclaimer on outbound mail: deciding whether a delivered message gets it, and adding it
//! once.
//!
//! `portcullis-scan` adds the text to the message's text parts ([`Disclaimer::apply`], pure);
//! this module supplies what is internal (`relay.local_domains`, exact and `*.` wildcards) and
//! marks the result with [`DISCLAIMER_HEADER`], so a message scanned again after a crash (its
//! rewritten copy committed but not yet marked scanned) does not get the text twice.
//! `crate::disposition` commits the rewritten copy and deletes the original, as for any rewrite.

use portcullis_queue::Envelope;
use portcullis_scan::{Disclaimer, DisclaimerEdit, DisclaimerOutcome, NotAdded, TextKind};

use crate::relay::RelayPolicy;
use crate::rewrite::{self, Changes};

/// The header that marks a message as already carrying the disclaimer.
pub const DISCLAIMER_HEADER: &str = "X-Portcullis-Disclaimer";

/// A message with the disclaimer added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithDisclaimer {
    /// The new content, carrying [`DISCLAIMER_HEADER`].
    pub message: Vec<u8>,
    /// One line naming the parts that got the text, for the tracking record.
    pub parts: String,
}

/// Why a message was left without the disclaimer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoDisclaimer {
    /// The message carries [`DISCLAIMER_HEADER`] already (a rescan after a crash).
    AlreadyAdded,
    /// `portcullis-scan` left it as it was, and why.
    NotAdded(NotAdded),
}

/// Whether a message goes out: its sender's domain is internal and at least one recipient's is
/// not. A cheap test on the envelope, so inbound mail never has its content read for this;
/// [`Disclaimer::apply`] makes the same test again with the same predicate.
pub fn is_outbound(relay: &RelayPolicy, envelope: &Envelope) -> bool {
    let internal = |address: &str| {
        address
            .rsplit_once('@')
            .is_some_and(|(_, d)| relay.is_local_domain(d))
    };
    !envelope.sender.is_empty()
        && internal(&envelope.sender)
        && envelope.recipients.iter().any(|r| !internal(r))
}

/// Adds `disclaimer` to `raw` when the message goes out and does not carry it yet. Pure CPU
/// work: call it on the blocking pool.
pub fn add(
    disclaimer: &Disclaimer,
    relay: &RelayPolicy,
    envelope: &Envelope,
    raw: &[u8],
) -> Result<WithDisclaimer, NoDisclaimer> {
    if rewrite::has_header(raw, DISCLAIMER_HEADER) {
        return Err(NoDisclaimer::AlreadyAdded);
    }
    let is_internal = |domain: &str| relay.is_local_domain(domain);
    match disclaimer.apply(raw, &envelope.sender, &envelope.recipients, &is_internal) {
        DisclaimerOutcome::Added {
            message,
            edits,
            skipped,
        } => {
            let marked = rewrite::apply(
                &message,
                &Changes {
                    headers: vec![format!("{DISCLAIMER_HEADER}: added")],
                    ..Default::default()
                },
            );
            let mut parts: Vec<String> = edits.iter().map(describe_edit).collect();
            parts.extend(
                skipped
                    .iter()
                    .map(|s| format!("part {} skipped: {}", s.section, s.reason)),
            );
            Ok(WithDisclaimer {
                message: marked,
                parts: parts.join("; "),
            })
        }
        DisclaimerOutcome::Untouched(why) => Err(NoDisclaimer::NotAdded(why)),
    }
}

fn describe_edit(edit: &DisclaimerEdit) -> String {
    let kind = match edit.kind {
        TextKind::Plain => "text/plain",
        TextKind::Html => "text/html",
    };
    format!(
        "part {} ({kind}, {}, {})",
        edit.section, edit.charset, edit.encoding
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> RelayPolicy {
        RelayPolicy::new(&["example.com".into(), "*.corp.example".into()], &[], "")
    }

    fn envelope(sender: &str, recipients: &[&str]) -> Envelope {
        Envelope {
            sender: sender.into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            smtputf8: false,
            eight_bit: false,
            received_at: chrono::Utc::now(),
            client: None,
        }
    }

    const MAIL: &[u8] =
        b"Received: from x\r\n\tby gw; now\r\nFrom: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n";

    #[test]
    fn internal_sender_to_an_outside_domain_is_outbound_and_wildcards_count_as_internal() {
        let r = relay();
        assert!(is_outbound(
            &r,
            &envelope("a@example.com", &["b@example.com", "c@other.test"])
        ));
        assert!(is_outbound(
            &r,
            &envelope("a@mail.corp.example", &["c@other.test"])
        ));
        assert!(!is_outbound(
            &r,
            &envelope("a@example.com", &["b@example.com", "d@x.corp.example"])
        ));
        assert!(!is_outbound(
            &r,
            &envelope("a@other.test", &["b@example.com"])
        ));
        assert!(!is_outbound(&r, &envelope("", &["c@other.test"])));
    }

    #[test]
    fn disclaimer_is_added_once_with_the_marker_header() {
        let d = Disclaimer::new("Confidential.").unwrap();
        let env = envelope("a@example.com", &["c@other.test"]);
        let WithDisclaimer { message, parts } = add(&d, &relay(), &env, MAIL).unwrap();
        let text = String::from_utf8(message.clone()).unwrap();
        assert!(
            text.starts_with(
                "Received: from x\r\n\tby gw; now\r\nX-Portcullis-Disclaimer: added\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("hello\r\n") && text.contains("Confidential."),
            "{text}"
        );
        assert!(parts.contains("text/plain"), "{parts}");
        assert_eq!(
            add(&d, &relay(), &env, &message),
            Err(NoDisclaimer::AlreadyAdded)
        );
    }

    #[test]
    fn inbound_mail_never_gets_the_disclaimer() {
        let d = Disclaimer::new("Confidential.").unwrap();
        let step = add(
            &d,
            &relay(),
            &envelope("c@other.test", &["a@example.com"]),
            MAIL,
        );
        assert_eq!(step, Err(NoDisclaimer::NotAdded(NotAdded::Inbound)));
    }
}
