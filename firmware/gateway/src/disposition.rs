//! Turning a scan verdict into what happens to the message, and doing it.
//!
//! [`plan`] is pure: verdict in, [`Disposition`] out, so the mapping is tested on its own. [`apply`]
//! carries a disposition out on a committed message, from the SMTP session (before the `250`)
//! or from the scheduler (after queueing, where a reject becomes a silent drop: the sender may
//! be forged, so we never bounce).
//!
//! Crash argument for rewrites (tag, strip, the disclaimer on outbound mail): the rewritten copy
//! is committed as a new queue entry (durable, then marked scanned) before the original is
//! deleted. A crash in between leaves both (the original, unscanned, is scanned and rewritten
//! again: a duplicate at worst), never neither. A copy that was committed but not yet marked
//! scanned is scanned again; it carries `X-Portcullis-Disclaimer`, so it does not get the
//! disclaimer twice. Quarantine is the same: the store is synced before the queue entry goes.
//!
//! Notifications (`crate::notifications`) are queued once the disposition has been carried out.

use std::sync::Arc;

use chrono::Utc;
use portcullis_queue::{self as queue, QueueEntry, QueueId, TrackEvent};
use portcullis_scan::Action;
use tokio::io::AsyncWriteExt;

use crate::alerts::{Alert, AlertKind};
use crate::config::QuarantineCopy;
use crate::disclaimer::{self, NoDisclaimer, WithDisclaimer};
use crate::notifications;
use crate::quarantine::{QuarantineRecord, QuarantineStore};
use crate::rewrite::{self, Changes};
use crate::scan::MessageVerdict;
use crate::state::Shared;

/// The header every tagged or rewritten message carries.
pub const VERDICT_HEADER: &str = "X-Portcullis-Verdict";

/// What to do with a message, derived from its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver, after the listed changes (none for deliver and log) and with copies to
    /// `forward_to`.
    Deliver {
        /// Header, subject and part changes.
        changes: Changes,
        /// Addresses that get a copy.
        forward_to: Vec<String>,
    },
    /// Keep in the hold queue with this reason.
    Hold {
        /// Shown by `queue list` and recorded.
        reason: String,
    },
    /// Move to the quarantine store.
    Quarantine,
    /// Accept and discard.
    Drop {
        /// Recorded on the tracking record.
        reason: String,
    },
    /// Refuse inside the SMTP session (only before the `250`).
    Reject {
        /// `550` or `554`.
        code: u16,
        /// `5.7.1` (policy) or `5.7.0` (virus).
        enhanced: &'static str,
        /// The reply text: the reason, in one line.
        text: String,
    },
}

/// Maps a verdict to its disposition. `in_session` is true before the `250` (a reject can be
/// said to the client); after it, a reject is a drop.
pub fn plan(verdict: &MessageVerdict, in_session: bool) -> Disposition {
    let first_for = |pred: &dyn Fn(&Action) -> bool| {
        verdict
            .reasons
            .iter()
            .find(|r| pred(&r.action))
            .map(|r| r.text.clone())
            .unwrap_or_else(|| verdict.action.to_string())
    };
    match &verdict.action {
        Action::Reject if in_session => match verdict
            .reasons
            .iter()
            .find(|r| r.action == Action::Reject && r.virus.is_some())
        {
            Some(r) => Disposition::Reject {
                code: 554,
                enhanced: "5.7.0",
                text: reply_text(&format!(
                    "message refused: virus {} found",
                    r.virus.as_deref().unwrap_or("?")
                )),
            },
            None => Disposition::Reject {
                code: 550,
                enhanced: "5.7.1",
                text: reply_text(&format!(
                    "message refused by policy: {}",
                    first_for(&|a| *a == Action::Reject)
                )),
            },
        },
        Action::Reject => Disposition::Drop {
            reason: format!(
                "rejected after queueing, so dropped (never bounced): {}",
                first_for(&|a| *a == Action::Reject)
            ),
        },
        Action::Drop => Disposition::Drop {
            reason: format!("dropped: {}", first_for(&|a| *a == Action::Drop)),
        },
        Action::Quarantine => Disposition::Quarantine,
        Action::Hold => Disposition::Hold {
            reason: format!("scan: {}", first_for(&|a| *a == Action::Hold)),
        },
        Action::Deliver
        | Action::Log
        | Action::Tag { .. }
        | Action::Forward { .. }
        | Action::StripPart => {
            let mut changes = Changes::default();
            let mut forward_to: Vec<String> = Vec::new();
            let mut tagged = false;
            for r in &verdict.reasons {
                match &r.action {
                    Action::Tag {
                        header,
                        subject_prefix,
                    } => {
                        tagged = true;
                        if let Some(h) = header
                            && !changes.headers.contains(h)
                        {
                            changes.headers.push(rewrite::header_value(h));
                        }
                        if let Some(p) = subject_prefix
                            && !changes.subject_prefixes.contains(p)
                        {
                            changes.subject_prefixes.push(p.clone());
                        }
                    }
                    Action::Forward { to } if !forward_to.contains(to) => {
                        forward_to.push(to.clone())
                    }
                    Action::StripPart => {
                        // The reasons, one "- " line each; `prepare_delivery` puts them into the
                        // configured note (`scan.removal_note`).
                        if let Some(carrier) = &r.carrier {
                            match changes.strip.iter_mut().find(|(c, _)| c == carrier) {
                                Some((_, reasons)) => reasons.push_str(&format!("\n- {}", r.text)),
                                None => changes
                                    .strip
                                    .push((carrier.clone(), format!("- {}", r.text))),
                            }
                        }
                    }
                    _ => {}
                }
            }
            if tagged || !changes.strip.is_empty() {
                let summary = verdict.explain().join("; ");
                changes.headers.insert(
                    0,
                    format!(
                        "{VERDICT_HEADER}: {}",
                        rewrite::header_value(&format!("{}; {summary}", verdict.action))
                    ),
                );
            }
            Disposition::Deliver {
                changes,
                forward_to,
            }
        }
    }
}

/// One line, printable ASCII, bounded: safe as SMTP reply text.
/// The text that replaces a removed attachment: `template` with `%FILENAME%` (the attachment's
/// name, or its place in the message when it has none) and `%REASONS%` (one "- " line per
/// reason) filled in. An empty template leaves an empty part.
pub(crate) fn removal_note(template: &str, carrier: &str, reasons: &str) -> String {
    let name = match carrier.rsplit_once(" \"") {
        Some((_, quoted)) => quoted.trim_end_matches('"').to_string(),
        None => carrier.rsplit('/').next().unwrap_or(carrier).to_string(),
    };
    template
        .replace("%FILENAME%", &name)
        .replace("%REASONS%", reasons)
}

fn reply_text(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    clean.chars().take(400).collect()
}

/// What became of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// In the queue for delivery, marked scanned, under this id (a new one after a rewrite).
    Queued(QueueId),
    /// On hold.
    Held,
    /// In the quarantine store, out of the queue.
    Quarantined,
    /// Out of the queue, discarded.
    Dropped,
    /// Out of the queue; the session answers with this reply instead of `250`.
    Rejected {
        /// Reply code.
        code: u16,
        /// Enhanced status code.
        enhanced: &'static str,
        /// Reply text.
        text: String,
    },
}

/// Carries out the verdict on a committed message, then queues the notifications about it. On
/// error the message stays in the queue unscanned (or held), so the scheduler scans it again
/// later: nothing is delivered unscanned.
pub async fn apply(
    shared: &Arc<Shared>,
    entry: &QueueEntry,
    verdict: &MessageVerdict,
    in_session: bool,
) -> Result<Applied, String> {
    let id = &entry.id;
    let disposition = plan(verdict, in_session);
    note_infection(shared, entry, verdict);
    shared
        .metrics
        .verdicts
        .get_or_create(&vec![("verdict", verdict.label())])
        .inc();
    shared
        .queue
        .tracking()
        .event(id, TrackEvent::now("scanned", None, verdict.summary()));
    // A clean message's verdict is already in "message scanned"; anything else is told in full.
    if verdict.reasons.is_empty() {
        tracing::debug!(queue_id = %id, verdict = verdict.label(), in_session, "scan verdict");
    } else {
        tracing::info!(queue_id = %id, verdict = verdict.label(), reasons = %verdict.explain().join(" | "), in_session, "scan verdict");
    }
    // Read now: a reject, drop or quarantine takes the message out of the queue.
    let notify = if notifications::wanted(shared, verdict) {
        Some((
            crate::dsn::original_headers(shared, id).await,
            notifications::outcome_of(&disposition),
        ))
    } else {
        None
    };
    let copy = shared.snapshot().config.antivirus.quarantine_copy;
    if wants_quarantine_copy(copy, verdict, &disposition) {
        match put_in_quarantine(shared, entry, verdict).await {
            Ok(()) => {
                shared.queue.tracking().event(
                    id,
                    TrackEvent::now("quarantine_copy", None, "original kept in the quarantine"),
                );
                tracing::info!(queue_id = %id, "copy of the infected original kept in the quarantine");
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot keep a copy of the infected original in the quarantine")
            }
        }
    }
    let applied = carry_out(shared, entry, verdict, disposition).await?;
    if let Some((headers, outcome)) = notify {
        let facts = notifications::facts(entry, &headers, verdict, outcome);
        let plan = notifications::plan(shared, &facts);
        notifications::send(shared, entry, plan).await;
    }
    Ok(applied)
}

/// Whether an infected message leaves a copy of its original in the quarantine
/// (`antivirus.quarantine_copy`) besides what its disposition does.
fn wants_quarantine_copy(
    copy: QuarantineCopy,
    verdict: &MessageVerdict,
    disposition: &Disposition,
) -> bool {
    if matches!(disposition, Disposition::Quarantine) {
        return false;
    }
    let mut infected = verdict.reasons.iter().filter(|r| r.virus.is_some());
    match copy {
        QuarantineCopy::None => false,
        QuarantineCopy::All => infected.next().is_some(),
        QuarantineCopy::Unrepaired => infected.any(|r| r.action != Action::StripPart),
    }
}

/// Stores the message as it is in the queue, with its verdict, in the quarantine (synced before
/// it returns).
async fn put_in_quarantine(
    shared: &Shared,
    entry: &QueueEntry,
    verdict: &MessageVerdict,
) -> Result<(), String> {
    let raw = shared
        .queue
        .read_message(&entry.id)
        .await
        .map_err(|e| e.to_string())?;
    let record = QuarantineRecord {
        id: entry.id.to_string(),
        quarantined_at: Utc::now(),
        envelope: entry.envelope.clone(),
        subject: entry.subject.clone(),
        message_id: entry.message_id.clone(),
        size: raw.len() as u64,
        verdict: verdict.clone(),
    };
    let store = QuarantineStore::new(&shared.snapshot().config.quarantine_dir());
    tokio::task::spawn_blocking(move || store.put(&record, &raw))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Does what the disposition says, on the queue and the quarantine store.
async fn carry_out(
    shared: &Arc<Shared>,
    entry: &QueueEntry,
    verdict: &MessageVerdict,
    disposition: Disposition,
) -> Result<Applied, String> {
    let id = &entry.id;
    let q = &shared.queue;
    match disposition {
        Disposition::Reject {
            code,
            enhanced,
            text,
        } => {
            q.delete_with_reason(
                id,
                &format!("rejected in the SMTP session: {code} {enhanced} {text}"),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(Applied::Rejected {
                code,
                enhanced,
                text,
            })
        }
        Disposition::Drop { reason } => {
            q.delete_with_reason(id, &reason)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Applied::Dropped)
        }
        Disposition::Hold { reason } => {
            // Hold first: if marking fails the admin's release rescans; it never delivers unscanned.
            q.hold(id, &reason).await.map_err(|e| e.to_string())?;
            shared.metrics.messages_held.inc();
            if let Err(e) = q.mark_scanned(id).await {
                tracing::warn!(queue_id = %id, error = %e, "held message not marked scanned; it is scanned again on release");
            }
            Ok(Applied::Held)
        }
        Disposition::Quarantine => {
            put_in_quarantine(shared, entry, verdict).await?;
            q.delete_with_reason(id, "quarantined")
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(queue_id = %id, "message quarantined");
            Ok(Applied::Quarantined)
        }
        Disposition::Deliver {
            changes,
            forward_to,
        } => {
            let final_id = prepare_delivery(shared, entry, verdict, changes).await?;
            for to in forward_to {
                if let Err(e) = forward_copy(shared, entry, &final_id, &to, verdict).await {
                    tracing::error!(queue_id = %id, to = %to, error = %e, "cannot queue the forwarded copy");
                }
            }
            q.notify_new().notify_one();
            Ok(Applied::Queued(final_id))
        }
    }
}

/// Makes a message ready for delivery: the verdict's changes and, on outbound mail, the
/// disclaimer, in one rewrite. Unchanged, the entry is marked scanned in place; changed, the
/// rewritten copy is committed (and marked scanned) before the original is deleted.
async fn prepare_delivery(
    shared: &Arc<Shared>,
    entry: &QueueEntry,
    verdict: &MessageVerdict,
    changes: Changes,
) -> Result<QueueId, String> {
    let id = &entry.id;
    let q = &shared.queue;
    let snap = shared.snapshot();
    let mut changes = changes;
    for (carrier, reasons) in &mut changes.strip {
        *reasons = removal_note(&snap.config.scan.removal_note, carrier, reasons);
    }
    let disclaimer = snap
        .disclaimer
        .clone()
        .filter(|_| disclaimer::is_outbound(&snap.relay, &entry.envelope));
    if changes.is_empty() && disclaimer.is_none() {
        q.mark_scanned(id).await.map_err(|e| e.to_string())?;
        return Ok(id.clone());
    }
    let raw = q.read_message(id).await.map_err(|e| e.to_string())?;
    let envelope = entry.envelope.clone();
    let verdict_changes = changes.clone();
    let (rewritten, with_disclaimer) = tokio::task::spawn_blocking(move || {
        let rewritten = if verdict_changes.is_empty() {
            raw
        } else {
            rewrite::apply(&raw, &verdict_changes)
        };
        let with_disclaimer =
            disclaimer.map(|d| disclaimer::add(&d, &snap.relay, &envelope, &rewritten));
        (rewritten, with_disclaimer)
    })
    .await
    .map_err(|e| e.to_string())?;
    let (content, parts) = disclaimer_outcome(shared, id, rewritten, with_disclaimer);
    if changes.is_empty() && parts.is_none() {
        q.mark_scanned(id).await.map_err(|e| e.to_string())?;
        return Ok(id.clone());
    }
    let new = queue_scanned(shared, entry.envelope.clone(), &content).await?;
    let what = match (changes.is_empty(), parts.is_some()) {
        (false, true) => format!("{} and disclaimer", verdict.label()),
        (false, false) => verdict.label().to_string(),
        (true, _) => "disclaimer".to_string(),
    };
    record_copy(shared, &new, &format!("rewritten from {id} ({what})"));
    if let Some(parts) = &parts {
        q.tracking().event(
            id,
            TrackEvent::now(
                "disclaimer_added",
                None,
                format!("{parts}; copy queued as {}", new.id),
            ),
        );
        tracing::info!(queue_id = %id, new_queue_id = %new.id, parts = %parts, "disclaimer added");
    }
    q.delete_with_reason(id, &format!("replaced by its rewritten copy {}", new.id))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(queue_id = %id, new_queue_id = %new.id, changes = %what, "message rewritten");
    Ok(new.id)
}

/// Feeds an infected message to the outbreak watch and raises the outbreak alert when it fires.
fn note_infection(shared: &Arc<Shared>, entry: &QueueEntry, verdict: &MessageVerdict) {
    let viruses: Vec<String> = verdict.viruses().into_iter().map(str::to_owned).collect();
    if viruses.is_empty() {
        return;
    }
    let config = &shared.snapshot().config.antivirus;
    let Some(outbreak) = shared.outbreak.infected(
        std::time::Instant::now(),
        &viruses,
        config.outbreak_messages,
        config.outbreak_window,
    ) else {
        return;
    };
    let names: Vec<String> = outbreak
        .viruses
        .iter()
        .map(|(name, n)| format!("{name} ({n})"))
        .collect();
    tracing::warn!(target: "av", queue_id = %entry.id, messages = outbreak.messages, viruses = %names.join(", "), "virus outbreak");
    shared.alert(Alert::new(
        AlertKind::Outbreak,
        "antivirus".to_string(),
        format!(
            "virus outbreak: {} infected messages within {}",
            outbreak.messages,
            humantime::format_duration(outbreak.window)
        ),
        format!(
            "Viruses: {}\nLatest message: {} from <{}>",
            names.join(", "),
            entry.id,
            entry.envelope.sender
        ),
    ));
}

/// Logs and records what became of the disclaimer on message `id`; returns the message to
/// deliver and, when the disclaimer was added, the parts it went into.
fn disclaimer_outcome(
    shared: &Shared,
    id: &QueueId,
    message: Vec<u8>,
    with_disclaimer: Option<Result<WithDisclaimer, NoDisclaimer>>,
) -> (Vec<u8>, Option<String>) {
    match with_disclaimer {
        Some(Ok(WithDisclaimer { message, parts })) => (message, Some(parts.to_string())),
        Some(Err(NoDisclaimer::NotAdded(why))) => {
            shared.queue.tracking().event(
                id,
                TrackEvent::now("disclaimer_not_added", None, why.to_string()),
            );
            tracing::info!(queue_id = %id, reason = %why, "disclaimer not added");
            (message, None)
        }
        Some(Err(NoDisclaimer::AlreadyAdded)) => {
            tracing::info!(queue_id = %id, "disclaimer already present; not added again");
            (message, None)
        }
        None => (message, None),
    }
}

/// The message with the disclaimer added when it is outbound mail (and has none yet): for mail
/// that leaves hold or the quarantine by an admin's decision, which skips the scan (and so the
/// step that adds it on the way in). `Some(parts)` when it was added.
pub(crate) async fn with_outbound_disclaimer(
    shared: &Shared,
    id: &QueueId,
    envelope: &queue::Envelope,
    raw: Vec<u8>,
) -> Result<(Vec<u8>, Option<String>), String> {
    let snap = shared.snapshot();
    let Some(disclaimer) = snap
        .disclaimer
        .clone()
        .filter(|_| disclaimer::is_outbound(&snap.relay, envelope))
    else {
        return Ok((raw, None));
    };
    let envelope = envelope.clone();
    let (raw, added) = tokio::task::spawn_blocking(move || {
        let added = disclaimer::add(&disclaimer, &snap.relay, &envelope, &raw);
        (raw, added)
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(disclaimer_outcome(shared, id, raw, Some(added)))
}

/// Releases a held message. One that was scanned before it was held (a policy hold) never
/// passes the scan again, so when it is outbound mail the disclaimer is added here: the copy
/// with the disclaimer is queued (scanned) and the held original removed. A crash in between
/// leaves both, the original still held: a second release would deliver it twice, nothing is
/// lost. Returns the id the message is delivered under.
pub(crate) async fn release_held(shared: &Shared, id: &QueueId) -> Result<QueueId, String> {
    let q = &shared.queue;
    let entry = q
        .get(id)
        .ok_or_else(|| format!("no message with queue id {id}"))?;
    if entry.kind != queue::QueueKind::Hold || !entry.scanned {
        q.release(id).await.map_err(|e| e.to_string())?;
        return Ok(id.clone());
    }
    let raw = q.read_message(id).await.map_err(|e| e.to_string())?;
    let (content, parts) = with_outbound_disclaimer(shared, id, &entry.envelope, raw).await?;
    let Some(parts) = parts else {
        q.release(id).await.map_err(|e| e.to_string())?;
        return Ok(id.clone());
    };
    let new = queue_scanned(shared, entry.envelope.clone(), &content).await?;
    record_copy(
        shared,
        &new,
        &format!("released from hold as {id} with the disclaimer"),
    );
    q.tracking().event(
        id,
        TrackEvent::now(
            "disclaimer_added",
            None,
            format!("{parts}; copy queued as {}", new.id),
        ),
    );
    q.delete_with_reason(
        id,
        &format!(
            "released from hold; replaced by its copy {} with the disclaimer",
            new.id
        ),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(queue_id = %id, new_queue_id = %new.id, parts = %parts, "message released from hold with the disclaimer");
    Ok(new.id)
}

/// Commits a message made by the gateway (a rewritten copy, a forwarded copy, a notification)
/// and marks it scanned: it carries a verdict already, or is our own text. It is claimed while
/// it is committed and marked, so the scheduler never scans it in between.
pub(crate) async fn queue_scanned(
    shared: &Shared,
    envelope: queue::Envelope,
    content: &[u8],
) -> Result<QueueEntry, String> {
    let q = &shared.queue;
    let mut draft = q.draft(envelope).map_err(|e| e.to_string())?;
    let new_id = draft.id().clone();
    if let Err(e) = draft.write_all(content).await {
        q.discard(draft).await;
        return Err(format!("cannot write the message: {e}"));
    }
    shared.scan.claim(&new_id);
    let entry = match q.commit(draft).await {
        Ok(entry) => entry,
        Err(e) => {
            shared.scan.unclaim(&new_id);
            return Err(e.to_string());
        }
    };
    if let Err(e) = q.mark_scanned(&entry.id).await {
        tracing::warn!(queue_id = %entry.id, error = %e, "new message not marked scanned; it is scanned before delivery");
    }
    shared.scan.unclaim(&new_id);
    Ok(entry)
}

/// Notes on the tracking record of a message the gateway made from another one why it exists
/// (the queue started the record itself at commit).
fn record_copy(shared: &Shared, new: &QueueEntry, detail: &str) {
    shared
        .queue
        .tracking()
        .event(&new.id, TrackEvent::now("received", None, detail));
}

/// Queues a copy of the (possibly rewritten) message to `to`, from the null sender so it can
/// never bounce to the original (possibly forged) sender.
async fn forward_copy(
    shared: &Arc<Shared>,
    original: &QueueEntry,
    source: &QueueId,
    to: &str,
    verdict: &MessageVerdict,
) -> Result<(), String> {
    let raw = shared
        .queue
        .read_message(source)
        .await
        .map_err(|e| e.to_string())?;
    let changes = Changes {
        headers: vec![format!(
            "X-Portcullis-Forwarded: copy of {} for {}",
            original.id,
            rewrite::header_value(&verdict.summary())
        )],
        ..Default::default()
    };
    let content = rewrite::apply(&raw, &changes);
    let envelope = queue::Envelope {
        sender: String::new(),
        recipients: vec![to.to_string()],
        smtputf8: original.envelope.smtputf8,
        eight_bit: original.envelope.eight_bit,
        received_at: Utc::now(),
        client: None,
    };
    let copy = queue_scanned(shared, envelope, &content).await?;
    record_copy(
        shared,
        &copy,
        &format!("copy of {} forwarded for its verdict", original.id),
    );
    shared.queue.tracking().event(
        &original.id,
        TrackEvent::now("forwarded", Some(to), format!("copy queued as {}", copy.id)),
    );
    tracing::info!(queue_id = %original.id, copy_queue_id = %copy.id, to, "copy forwarded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::VerdictReason;

    fn reason(
        text: &str,
        action: Action,
        carrier: Option<&str>,
        virus: Option<&str>,
    ) -> VerdictReason {
        VerdictReason {
            text: text.into(),
            action,
            carrier: carrier.map(String::from),
            virus: virus.map(String::from),
            violation: None,
        }
    }

    #[test]
    fn virus_reject_in_session_is_554_5_7_0_naming_the_virus() {
        let v = MessageVerdict::from_reasons(vec![reason(
            "virus Eicar found in x",
            Action::Reject,
            None,
            Some("Eicar-Test-Signature"),
        )]);
        match plan(&v, true) {
            Disposition::Reject {
                code,
                enhanced,
                text,
            } => {
                assert_eq!((code, enhanced), (554, "5.7.0"));
                assert!(text.contains("Eicar-Test-Signature"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_reject_in_session_is_550_5_7_1_with_the_reason() {
        let v = MessageVerdict::from_reasons(vec![reason(
            "subject \"win\" matches blocked pattern \"*win*\"",
            Action::Reject,
            None,
            None,
        )]);
        let Disposition::Reject {
            code,
            enhanced,
            text,
        } = plan(&v, true)
        else {
            panic!()
        };
        assert_eq!((code, enhanced), (550, "5.7.1"));
        assert!(text.contains("blocked pattern"), "{text}");
    }

    #[test]
    fn reject_after_queueing_becomes_drop_never_a_bounce() {
        let v = MessageVerdict::from_reasons(vec![reason(
            "virus X found",
            Action::Reject,
            None,
            Some("X"),
        )]);
        assert!(matches!(plan(&v, false), Disposition::Drop { .. }));
    }

    #[test]
    fn hold_quarantine_and_drop_map_to_themselves() {
        let v = MessageVerdict::from_reasons(vec![reason("unscannable", Action::Hold, None, None)]);
        assert!(
            matches!(plan(&v, true), Disposition::Hold { reason } if reason.contains("unscannable"))
        );
        let v = MessageVerdict::from_reasons(vec![reason("rule", Action::Quarantine, None, None)]);
        assert_eq!(plan(&v, true), Disposition::Quarantine);
        let v = MessageVerdict::from_reasons(vec![reason("rule", Action::Drop, None, None)]);
        assert!(matches!(plan(&v, true), Disposition::Drop { .. }));
    }

    #[test]
    fn clean_and_log_verdicts_deliver_unchanged() {
        assert_eq!(
            plan(&MessageVerdict::clean(), true),
            Disposition::Deliver {
                changes: Changes::default(),
                forward_to: vec![]
            }
        );
        let v = MessageVerdict::from_reasons(vec![reason(
            "encrypted container",
            Action::Log,
            None,
            None,
        )]);
        assert_eq!(
            plan(&v, true),
            Disposition::Deliver {
                changes: Changes::default(),
                forward_to: vec![]
            }
        );
    }

    #[test]
    fn tag_adds_the_verdict_header_the_configured_header_and_subject_prefix() {
        let v = MessageVerdict::from_reasons(vec![reason(
            "content rule \"x\" matched",
            Action::Tag {
                header: Some("X-Policy: suspect".into()),
                subject_prefix: Some("[SUSPECT]".into()),
            },
            None,
            None,
        )]);
        let Disposition::Deliver {
            changes,
            forward_to,
        } = plan(&v, true)
        else {
            panic!()
        };
        assert!(forward_to.is_empty());
        assert!(
            changes.headers[0].starts_with("X-Portcullis-Verdict: tag"),
            "{:?}",
            changes.headers
        );
        assert_eq!(changes.headers[1], "X-Policy: suspect");
        assert_eq!(changes.subject_prefixes, vec!["[SUSPECT]".to_string()]);
    }

    #[test]
    fn the_removal_note_names_the_attachment_and_lists_the_reasons() {
        let note = removal_note(
            crate::config::DEFAULT_REMOVAL_NOTE,
            "message/attachment[1] \"a.zip\"",
            "- virus X\n- blocked extension",
        );
        assert_eq!(
            note,
            "Portcullis removed the attachment a.zip from this message:\n- virus X\n- blocked extension"
        );
        assert_eq!(
            removal_note("[%FILENAME% removed]", "message/attachment[2]", "- r"),
            "[attachment[2] removed]"
        );
        assert_eq!(removal_note("", "message/attachment[1] \"x\"", "- r"), "");
    }

    #[test]
    fn strip_lists_each_carrier_once_with_a_note_naming_every_reason() {
        let v = MessageVerdict::from_reasons(vec![
            reason(
                "file name \"a.exe\" has blocked extension .exe in message/attachment[1] \"a.zip\"/a.exe",
                Action::StripPart,
                Some("message/attachment[1] \"a.zip\""),
                None,
            ),
            reason(
                "virus X found in message/attachment[1] \"a.zip\"/a.exe",
                Action::StripPart,
                Some("message/attachment[1] \"a.zip\""),
                Some("X"),
            ),
            reason(
                "rule",
                Action::Forward {
                    to: "sec@example.com".into(),
                },
                None,
                None,
            ),
        ]);
        let Disposition::Deliver {
            changes,
            forward_to,
        } = plan(&v, true)
        else {
            panic!()
        };
        assert_eq!(changes.strip.len(), 1);
        assert!(
            changes.strip[0].1.contains("blocked extension")
                && changes.strip[0].1.contains("virus X")
        );
        assert_eq!(forward_to, vec!["sec@example.com".to_string()]);
        assert!(
            changes.headers[0].starts_with("X-Portcullis-Verdict: strip the attachment"),
            "{:?}",
            changes.headers
        );
    }

    #[test]
    fn reply_text_is_one_printable_line() {
        assert_eq!(reply_text("a\r\nb\u{e9}"), "a??b?");
    }

    mod through_the_queue {
        use std::sync::Arc;

        use portcullis_queue::{Queue, QueueConfig};
        use tokio::io::AsyncWriteExt;

        use super::super::*;
        use crate::config::{Config, Overrides};
        use crate::state::Snapshot;

        fn mail() -> Vec<u8> {
            let eicar = std::str::from_utf8(portcullis_av::EICAR).unwrap();
            format!(
                "From: a@example.com\r\nSubject: test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"eicar.txt\"\r\n\r\n{eicar}\r\n--b1--\r\n"
            )
            .into_bytes()
        }

        async fn gateway(dir: &std::path::Path, toml: &str) -> Arc<Shared> {
            let text = format!(
                "[server]\ndata_dir = {:?}\nhostname = \"gw.example.com\"\n{toml}",
                dir.display().to_string()
            );
            let config = Config::parse(&text, "test.toml", &Overrides::default()).unwrap();
            let (queue, _) = Queue::open(&dir.join("queue"), QueueConfig::default()).unwrap();
            let snap = Snapshot::new(config, Arc::new(portcullis_av::Engine::builtin())).unwrap();
            let (_tx, rx) = tokio::sync::watch::channel(Arc::new(snap));
            Arc::new(Shared::new(rx, queue, None))
        }

        async fn commit(shared: &Shared, content: &[u8]) -> QueueEntry {
            commit_from(shared, "a@example.com", &["b@example.com"], content).await
        }

        async fn commit_from(
            shared: &Shared,
            sender: &str,
            recipients: &[&str],
            content: &[u8],
        ) -> QueueEntry {
            let envelope = queue::Envelope {
                sender: sender.into(),
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
                smtputf8: false,
                eight_bit: false,
                received_at: Utc::now(),
                client: None,
            };
            let mut draft = shared.queue.draft(envelope).unwrap();
            draft.write_all(content).await.unwrap();
            shared.queue.commit(draft).await.unwrap()
        }

        async fn scan_and_apply(
            shared: &Arc<Shared>,
            entry: &QueueEntry,
            in_session: bool,
        ) -> Applied {
            let verdict = crate::scan::inspect(shared.snapshot(), &shared.queue, &entry.id)
                .await
                .unwrap();
            apply(shared, entry, &verdict, in_session).await.unwrap()
        }

        #[tokio::test]
        async fn eicar_with_the_default_config_is_refused_554_and_leaves_the_queue() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "").await;
            let entry = commit(&shared, &mail()).await;
            let applied = scan_and_apply(&shared, &entry, true).await;
            assert!(
                matches!(&applied, Applied::Rejected { code: 554, enhanced: "5.7.0", text } if text.contains("Eicar-Test-Signature")),
                "{applied:?}"
            );
            assert!(shared.queue.list().is_empty());
            let record = shared.queue.tracking().get(&entry.id).unwrap();
            assert!(
                record
                    .events
                    .iter()
                    .any(|e| e.kind == "scanned" && e.detail.starts_with("reject")),
                "{record:?}"
            );
        }

        #[tokio::test]
        async fn eicar_found_after_queueing_is_dropped_not_bounced() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "").await;
            let entry = commit(&shared, &mail()).await;
            assert_eq!(
                scan_and_apply(&shared, &entry, false).await,
                Applied::Dropped
            );
            assert!(shared.queue.list().is_empty());
        }

        #[tokio::test]
        async fn quarantine_moves_the_message_with_its_verdict_into_the_store() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "[antivirus]\naction = \"quarantine\"\n").await;
            let entry = commit(&shared, &mail()).await;
            assert_eq!(
                scan_and_apply(&shared, &entry, true).await,
                Applied::Quarantined
            );
            assert!(shared.queue.list().is_empty());
            let store = QuarantineStore::new(&dir.path().join("quarantine"));
            let records = store.list().unwrap();
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].id, entry.id.to_string());
            assert_eq!(
                records[0].envelope.recipients,
                vec!["b@example.com".to_string()]
            );
            assert_eq!(records[0].verdict.viruses(), vec!["Eicar-Test-Signature"]);
            assert_eq!(store.read_message(&records[0].id).unwrap(), mail());
        }

        #[tokio::test]
        async fn quarantine_copy_keeps_the_infected_original_as_the_action_asks() {
            // (action, quarantine_copy, copies expected, what the message gets)
            let cases = [
                ("strip", "all", 1, "queued"),
                ("strip", "unrepaired", 0, "queued"),
                ("reject", "unrepaired", 1, "rejected"),
                ("drop", "none", 0, "dropped"),
            ];
            for (action, copy, copies, outcome) in cases {
                let dir = tempfile::tempdir().unwrap();
                let config =
                    format!("[antivirus]\naction = \"{action}\"\nquarantine_copy = \"{copy}\"\n");
                let shared = gateway(dir.path(), &config).await;
                let entry = commit(&shared, &mail()).await;
                let applied = scan_and_apply(&shared, &entry, true).await;
                let got = match applied {
                    Applied::Queued(_) => "queued",
                    Applied::Rejected { .. } => "rejected",
                    Applied::Dropped => "dropped",
                    _ => "other",
                };
                assert_eq!(got, outcome, "{action}/{copy}: {applied:?}");
                let store = QuarantineStore::new(&dir.path().join("quarantine"));
                let records = store.list().unwrap();
                assert_eq!(records.len(), copies, "{action}/{copy}");
                if copies == 1 {
                    assert_eq!(store.read_message(&records[0].id).unwrap(), mail());
                    assert_eq!(records[0].verdict.viruses(), vec!["Eicar-Test-Signature"]);
                }
            }
        }

        #[tokio::test]
        async fn strip_replaces_the_old_entry_by_a_scanned_copy_without_the_virus() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "[antivirus]\naction = \"strip\"\n").await;
            let entry = commit(&shared, &mail()).await;
            let Applied::Queued(new_id) = scan_and_apply(&shared, &entry, true).await else {
                panic!()
            };
            assert_ne!(new_id, entry.id);
            assert!(shared.queue.get(&entry.id).is_none());
            let new = shared.queue.get(&new_id).unwrap();
            assert!(new.scanned);
            assert_eq!(new.envelope.recipients, entry.envelope.recipients);
            let content =
                String::from_utf8(shared.queue.read_message(&new_id).await.unwrap()).unwrap();
            assert!(
                !content.contains("EICAR") && content.contains("hello"),
                "{content}"
            );
            assert!(
                content.contains("X-Portcullis-Verdict: strip the attachment"),
                "{content}"
            );
            let verdict = crate::scan::inspect(shared.snapshot(), &shared.queue, &new_id)
                .await
                .unwrap();
            assert_eq!(verdict, MessageVerdict::clean());
        }

        #[tokio::test]
        async fn hold_verdict_holds_and_marks_scanned_and_clean_mail_is_marked_scanned_in_place() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(
                dir.path(),
                "[scan.policy.subjects]\npatterns = [\"*hold me*\"]\naction = \"hold\"\n",
            )
            .await;
            let held = commit(&shared, b"Subject: please hold me\r\n\r\nhi\r\n").await;
            assert_eq!(scan_and_apply(&shared, &held, true).await, Applied::Held);
            let e = shared.queue.get(&held.id).unwrap();
            assert_eq!(e.kind, portcullis_queue::QueueKind::Hold);
            assert!(e.scanned && e.hold_reason.unwrap().contains("hold me"));
            let clean = commit(&shared, b"Subject: hello\r\n\r\nhi\r\n").await;
            assert_eq!(
                scan_and_apply(&shared, &clean, true).await,
                Applied::Queued(clean.id.clone())
            );
            assert!(shared.queue.get(&clean.id).unwrap().scanned);
        }

        #[tokio::test]
        async fn forward_delivers_the_original_and_queues_a_scanned_copy_from_the_null_sender() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(
                dir.path(),
                "[scan.policy.subjects]\npatterns = [\"*invoice*\"]\naction = { forward = { to = \"sec@example.com\" } }\n",
            )
            .await;
            let entry = commit(&shared, b"Subject: your invoice\r\n\r\nhi\r\n").await;
            assert_eq!(
                scan_and_apply(&shared, &entry, true).await,
                Applied::Queued(entry.id.clone())
            );
            let list = shared.queue.list();
            assert_eq!(list.len(), 2);
            let copy = list.iter().find(|e| e.id != entry.id).unwrap();
            assert_eq!(copy.envelope.sender, "");
            assert_eq!(
                copy.envelope.recipients,
                vec!["sec@example.com".to_string()]
            );
            assert!(copy.scanned);
        }
        /// The entries the gateway queued besides `except`, with their content.
        async fn others(shared: &Shared, except: &[&QueueId]) -> Vec<(QueueEntry, String)> {
            let mut out = Vec::new();
            for e in shared
                .queue
                .list()
                .into_iter()
                .filter(|e| !except.contains(&&e.id))
            {
                let text =
                    String::from_utf8(shared.queue.read_message(&e.id).await.unwrap()).unwrap();
                out.push((e, text));
            }
            out
        }

        fn events(shared: &Shared, id: &QueueId, kind: &str) -> Vec<portcullis_queue::TrackEvent> {
            shared
                .queue
                .tracking()
                .get(id)
                .unwrap()
                .events
                .into_iter()
                .filter(|e| e.kind == kind)
                .collect()
        }

        #[tokio::test]
        async fn virus_verdict_queues_a_notification_to_each_recipient_and_the_admin_from_the_null_sender()
         {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(
                dir.path(),
                "[antivirus]\naction = \"quarantine\"\n[notifications]\nadmin = \"security@example.com\"\nvirus = { recipients = true, admin = true }\n",
            )
            .await;
            let entry = commit_from(
                &shared,
                "a@example.com",
                &["b@example.com", "c@example.com"],
                &mail(),
            )
            .await;
            assert_eq!(
                scan_and_apply(&shared, &entry, true).await,
                Applied::Quarantined
            );
            let queued = others(&shared, &[]).await;
            let mut to: Vec<String> = queued
                .iter()
                .map(|(e, _)| e.envelope.recipients.join(","))
                .collect();
            to.sort();
            assert_eq!(
                to,
                vec!["b@example.com", "c@example.com", "security@example.com"]
            );
            for (e, text) in &queued {
                assert_eq!(
                    e.envelope.sender, "",
                    "notifications go out from the null sender"
                );
                assert!(e.scanned, "our own notifications are not scanned again");
                assert!(
                    text.contains("X-Portcullis-Notification: ")
                        && text.contains("Auto-Submitted: auto-replied"),
                    "{text}"
                );
                assert!(
                    text.contains("Eicar-Test-Signature") && text.contains("quarantined"),
                    "{text}"
                );
                assert!(text.contains(&entry.id.to_string()), "{text}");
            }
            let notified = events(&shared, &entry.id, "notified");
            assert_eq!(notified.len(), 3, "{notified:?}");
        }

        #[tokio::test]
        async fn null_sender_is_never_notified_and_the_suppression_is_recorded() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "[antivirus]\naction = \"drop\"\n[notifications]\nvirus = { sender = true, recipients = false }\n").await;
            let entry = commit_from(&shared, "", &["b@example.com"], &mail()).await;
            assert_eq!(
                scan_and_apply(&shared, &entry, false).await,
                Applied::Dropped
            );
            assert!(
                shared.queue.list().is_empty(),
                "nothing may be queued for the null sender"
            );
            let suppressed = events(&shared, &entry.id, "notification_suppressed");
            assert_eq!(suppressed.len(), 1, "{suppressed:?}");
            assert!(
                suppressed[0].detail.contains("sender") && suppressed[0].detail.contains("null"),
                "{suppressed:?}"
            );
        }

        #[tokio::test]
        async fn message_refused_in_session_notifies_only_the_admin() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "[notifications]\nadmin = \"security@example.com\"\nvirus = { sender = true, recipients = true, admin = true }\n").await;
            let entry = commit(&shared, &mail()).await;
            assert!(matches!(
                scan_and_apply(&shared, &entry, true).await,
                Applied::Rejected { code: 554, .. }
            ));
            let queued = others(&shared, &[]).await;
            assert_eq!(queued.len(), 1);
            assert_eq!(
                queued[0].0.envelope.recipients,
                vec!["security@example.com".to_string()]
            );
            assert!(queued[0].1.contains("refused"), "{}", queued[0].1);
            let suppressed = events(&shared, &entry.id, "notification_suppressed");
            assert_eq!(suppressed.len(), 2, "sender and recipient: {suppressed:?}");
            assert!(
                suppressed.iter().all(|e| e.detail.contains("already told")),
                "{suppressed:?}"
            );
        }

        #[tokio::test]
        async fn clean_message_causes_no_notification() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), "[notifications]\n").await;
            let entry = commit(&shared, b"Subject: hello\r\n\r\nhi\r\n").await;
            assert_eq!(
                scan_and_apply(&shared, &entry, true).await,
                Applied::Queued(entry.id.clone())
            );
            assert!(others(&shared, &[&entry.id]).await.is_empty());
        }

        const DISCLAIMER: &str = "[relay]\nlocal_domains = [\"example.com\", \"*.corp.example\"]\n[disclaimer]\ntext = \"This message is confidential.\"\n";

        #[tokio::test]
        async fn outbound_mail_gets_the_disclaimer_once_in_a_rewritten_copy() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), DISCLAIMER).await;
            let entry = commit_from(
                &shared,
                "a@example.com",
                &["b@example.com", "x@other.test"],
                b"Subject: hello\r\n\r\nhi there\r\n",
            )
            .await;
            let Applied::Queued(new_id) = scan_and_apply(&shared, &entry, true).await else {
                panic!()
            };
            assert_ne!(
                new_id, entry.id,
                "the disclaimer is added to a new committed copy"
            );
            assert!(
                shared.queue.get(&entry.id).is_none(),
                "the original is deleted"
            );
            let new = shared.queue.get(&new_id).unwrap();
            assert!(new.scanned);
            assert_eq!(new.envelope.recipients, entry.envelope.recipients);
            let content =
                String::from_utf8(shared.queue.read_message(&new_id).await.unwrap()).unwrap();
            assert!(
                content.contains("X-Portcullis-Disclaimer: added\r\n"),
                "{content}"
            );
            assert!(
                content.contains("hi there\r\n")
                    && content.contains("This message is confidential."),
                "{content}"
            );
            assert_eq!(events(&shared, &entry.id, "disclaimer_added").len(), 1);

            // A rescan of the copy (as after a crash before it was marked scanned) adds nothing.
            assert_eq!(
                scan_and_apply(&shared, &new, false).await,
                Applied::Queued(new_id.clone())
            );
            let again =
                String::from_utf8(shared.queue.read_message(&new_id).await.unwrap()).unwrap();
            assert_eq!(again, content);
            assert_eq!(again.matches("This message is confidential.").count(), 1);
        }

        #[tokio::test]
        async fn outbound_mail_released_from_a_policy_hold_gets_the_disclaimer() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), DISCLAIMER).await;
            let entry = commit_from(
                &shared,
                "a@example.com",
                &["x@other.test"],
                b"Subject: held\r\n\r\nheld text\r\n",
            )
            .await;
            // What a Hold verdict does: hold, then mark scanned (so release skips the scan).
            shared.queue.hold(&entry.id, "policy").await.unwrap();
            shared.queue.mark_scanned(&entry.id).await.unwrap();
            let delivered_as = release_held(&shared, &entry.id).await.unwrap();
            assert_ne!(delivered_as, entry.id);
            assert!(
                shared.queue.get(&entry.id).is_none(),
                "the held original is gone"
            );
            let copy = shared.queue.get(&delivered_as).unwrap();
            assert!(copy.scanned && copy.kind == queue::QueueKind::Incoming);
            let content =
                String::from_utf8(shared.queue.read_message(&delivered_as).await.unwrap()).unwrap();
            assert!(content.contains("held text\r\n"), "{content}");
            assert_eq!(content.matches("This message is confidential.").count(), 1);

            // Inbound mail is released as it is, under its own id.
            let inbound = commit_from(
                &shared,
                "x@other.test",
                &["b@example.com"],
                b"Subject: in\r\n\r\ninbound\r\n",
            )
            .await;
            shared.queue.hold(&inbound.id, "policy").await.unwrap();
            shared.queue.mark_scanned(&inbound.id).await.unwrap();
            assert_eq!(
                release_held(&shared, &inbound.id).await.unwrap(),
                inbound.id
            );
            let content =
                String::from_utf8(shared.queue.read_message(&inbound.id).await.unwrap()).unwrap();
            assert!(!content.contains("This message is confidential."));
        }

        #[tokio::test]
        async fn inbound_and_internal_mail_never_get_the_disclaimer() {
            let dir = tempfile::tempdir().unwrap();
            let shared = gateway(dir.path(), DISCLAIMER).await;
            let raw = b"Subject: hello\r\n\r\nhi there\r\n";
            for (sender, rcpt) in [
                ("x@other.test", "a@example.com"),
                ("a@example.com", "b@mail.corp.example"),
                ("", "x@other.test"),
            ] {
                let entry = commit_from(&shared, sender, &[rcpt], raw).await;
                assert_eq!(
                    scan_and_apply(&shared, &entry, true).await,
                    Applied::Queued(entry.id.clone()),
                    "{sender} -> {rcpt}"
                );
                assert_eq!(
                    shared.queue.read_message(&entry.id).await.unwrap(),
                    raw.to_vec(),
                    "{sender} -> {rcpt}"
                );
            }
        }

        #[tokio::test]
        async fn a_tagged_outbound_message_is_rewritten_once_with_tag_and_disclaimer() {
            let dir = tempfile::tempdir().unwrap();
            let toml = format!(
                "{DISCLAIMER}[scan.policy.subjects]\npatterns = [\"*offer*\"]\naction = {{ tag = {{ subject_prefix = \"[SUSPECT]\" }} }}\n"
            );
            let shared = gateway(dir.path(), &toml).await;
            let entry = commit_from(
                &shared,
                "a@example.com",
                &["x@other.test"],
                b"Subject: an offer\r\n\r\nhi there\r\n",
            )
            .await;
            let Applied::Queued(new_id) = scan_and_apply(&shared, &entry, true).await else {
                panic!()
            };
            let in_queue: Vec<QueueId> = shared
                .queue
                .list()
                .into_iter()
                .filter(|e| e.envelope.sender == "a@example.com")
                .map(|e| e.id)
                .collect();
            assert_eq!(in_queue, vec![new_id.clone()]);
            let content =
                String::from_utf8(shared.queue.read_message(&new_id).await.unwrap()).unwrap();
            assert!(
                content.contains("Subject: [SUSPECT] an offer")
                    && content.contains("This message is confidential."),
                "{content}"
            );
        }
    }
}
