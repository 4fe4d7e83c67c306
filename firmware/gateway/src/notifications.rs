//! Telling the sender, the recipients and/or the admin what the scan verdict did to a message.
//!
//! `portcullis-scan` decides who is told and writes the messages ([`CompiledNotifications`],
//! pure, with the loop protection in one place); this module gives it the facts and queues
//! what it wrote. Each notification is committed to our own queue with the null envelope
//! sender, like a bounce, so it is as durable as any mail and can never itself be bounced.
//!
//! Notifications are queued after the disposition has been carried out, so they report what
//! really happened. A crash between the two can cost a notification, never the message; the
//! message's tracking record says which notifications were queued.

use std::sync::Arc;

use chrono::Utc;
use portcullis_queue::{Envelope, QueueEntry, TrackEvent};
use portcullis_scan::{
    Audience, MessageFacts, NotificationPlan, OriginalHeaders, Outcome, Suppressed,
    SuppressedNotification,
};

use crate::disposition::Disposition;
use crate::scan::MessageVerdict;
use crate::state::Shared;

/// Whether a verdict can lead to a notification: notifications are configured and the verdict
/// is anything but a plain "deliver" (a virus, a content rule, an encrypted or unscannable part
/// hit, whatever the action).
pub fn wanted(shared: &Shared, verdict: &MessageVerdict) -> bool {
    !verdict.reasons.is_empty() && shared.snapshot().notifications.is_some()
}

/// What `${DISPOSITION}` says about a disposition that was carried out.
pub fn outcome_of(disposition: &Disposition) -> Outcome {
    match disposition {
        Disposition::Deliver { changes, .. } if !changes.strip.is_empty() => {
            Outcome::PartsStripped {
                parts: changes
                    .strip
                    .iter()
                    .map(|(carrier, _)| carrier.clone())
                    .collect(),
            }
        }
        Disposition::Deliver { changes, .. } if !changes.is_empty() => Outcome::DeliveredTagged,
        Disposition::Deliver { .. } => Outcome::Delivered,
        Disposition::Hold { .. } => Outcome::Held,
        Disposition::Quarantine => Outcome::Quarantined,
        Disposition::Drop { .. } => Outcome::Dropped,
        Disposition::Reject { .. } => Outcome::Rejected,
    }
}

/// The facts notifications are written from. `headers` is the original header section, read
/// before the disposition could remove the message from the queue.
pub fn facts(
    entry: &QueueEntry,
    headers: &[u8],
    verdict: &MessageVerdict,
    outcome: Outcome,
) -> MessageFacts {
    MessageFacts {
        queue_id: entry.id.to_string(),
        envelope_sender: entry.envelope.sender.clone(),
        envelope_recipients: entry.envelope.recipients.clone(),
        headers: OriginalHeaders::from_message(headers),
        size: entry.size,
        violations: verdict
            .reasons
            .iter()
            .map(|r| r.violation_report())
            .collect(),
        outcome,
    }
}

/// The notifications to send about a message, with the gateway's own rule on top of the scan
/// crate's: a message refused in the SMTP session was never accepted, so only the admin (when
/// configured) hears of it; the sender's server has the reply and the recipients never had it.
pub fn plan(shared: &Shared, facts: &MessageFacts) -> NotificationPlan {
    let Some(notifier) = shared.snapshot().notifications.clone() else {
        return NotificationPlan::default();
    };
    let mut plan = notifier.notifications(facts, Utc::now());
    if facts.outcome == Outcome::Rejected {
        let (keep, refused): (Vec<_>, Vec<_>) = plan
            .notifications
            .into_iter()
            .partition(|n| n.audience == Audience::Admin);
        plan.notifications = keep;
        for n in refused {
            plan.suppressed.push(SuppressedNotification {
                audience: n.audience,
                reason: Suppressed::RejectedInSession,
            });
        }
    }
    plan
}

/// Queues every notification of `plan` about `original` with the null envelope sender and
/// records each one sent or suppressed on the original's tracking record. A notification that
/// cannot be queued is logged and recorded; the message itself is not affected.
pub async fn send(shared: &Arc<Shared>, original: &QueueEntry, plan: NotificationPlan) {
    let id = &original.id;
    let tracking = shared.queue.tracking();
    for s in &plan.suppressed {
        let recipient = match &s.reason {
            Suppressed::UnusableAddress(address) => Some(address.as_str()),
            _ => None,
        };
        tracking.event(
            id,
            TrackEvent::now(
                "notification_suppressed",
                recipient,
                format!("{}: {}", audience_name(s.audience), s.reason),
            ),
        );
        tracing::info!(queue_id = %id, audience = audience_name(s.audience), reason = %s.reason, "notification suppressed");
    }
    for n in plan.notifications {
        let kinds: Vec<&str> = n.violations.iter().map(|v| v.as_str()).collect();
        let envelope = Envelope {
            sender: String::new(),
            recipients: n.recipients.clone(),
            smtputf8: false,
            // 7bit or quoted-printable, as the scan crate writes them.
            eight_bit: false,
            received_at: Utc::now(),
            client: None,
        };
        let to = n.recipients.join(", ");
        match crate::disposition::queue_scanned(shared, envelope, &n.message).await {
            Ok(notice) => {
                let detail = format!(
                    "{} notice ({}) queued as {}",
                    audience_name(n.audience),
                    kinds.join(","),
                    notice.id
                );
                tracking.event(id, TrackEvent::now("notified", Some(&to), detail));
                tracing::info!(queue_id = %id, notice_queue_id = %notice.id, audience = audience_name(n.audience), to = %to, violations = %kinds.join(","), "notification queued");
            }
            Err(e) => {
                let detail = format!(
                    "{} notice ({}) could not be queued: {e}",
                    audience_name(n.audience),
                    kinds.join(",")
                );
                tracking.event(
                    id,
                    TrackEvent::now("notification_failed", Some(&to), detail),
                );
                tracing::error!(queue_id = %id, audience = audience_name(n.audience), to = %to, error = %e, "cannot queue the notification");
            }
        }
    }
    shared.queue.notify_new().notify_one();
}

fn audience_name(audience: Audience) -> &'static str {
    match audience {
        Audience::Sender => "sender",
        Audience::Recipient => "recipient",
        Audience::Admin => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::Changes;

    #[test]
    fn outcome_follows_the_disposition_carried_out() {
        let deliver = |changes: Changes| Disposition::Deliver {
            changes,
            forward_to: vec![],
        };
        assert_eq!(outcome_of(&deliver(Changes::default())), Outcome::Delivered);
        let tagged = Changes {
            subject_prefixes: vec!["[X]".into()],
            ..Default::default()
        };
        assert_eq!(outcome_of(&deliver(tagged)), Outcome::DeliveredTagged);
        let stripped = Changes {
            strip: vec![("message/attachment[1] \"a.exe\"".into(), "note".into())],
            ..Default::default()
        };
        assert_eq!(
            outcome_of(&deliver(stripped)),
            Outcome::PartsStripped {
                parts: vec!["message/attachment[1] \"a.exe\"".into()]
            }
        );
        assert_eq!(outcome_of(&Disposition::Quarantine), Outcome::Quarantined);
        assert_eq!(
            outcome_of(&Disposition::Drop { reason: "x".into() }),
            Outcome::Dropped
        );
        let reject = Disposition::Reject {
            code: 554,
            enhanced: "5.7.0",
            text: "virus".into(),
        };
        assert_eq!(outcome_of(&reject), Outcome::Rejected);
    }
}
