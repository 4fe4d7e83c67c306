//! An in-memory index of the queue state: which messages are due when, and how many each queue
//! holds. sled stays the record; this index only spares the scheduler from decoding every entry
//! each time it looks for work (which, with a backlog, cost more than delivering).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::entry::{QueueEntry, QueueKind};
use crate::id::QueueId;
use crate::queue::QueueCounts;

/// What the index knows of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    kind: QueueKind,
    /// When the message may be tried next, if it is waiting for delivery (not held, not being
    /// delivered right now).
    waiting_since: Option<i64>,
}

/// The index. Every change of an entry in sled is followed by [`Schedule::update`] or
/// [`Schedule::forget`].
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Messages waiting for delivery, by next attempt (microseconds) then arrival.
    waiting: BTreeSet<(i64, QueueId)>,
    known: HashMap<QueueId, Known>,
    counts: QueueCounts,
}

impl Inner {
    fn count(&mut self, kind: QueueKind, delta: isize) {
        let slot = match kind {
            QueueKind::Incoming => &mut self.counts.incoming,
            QueueKind::Deferred => &mut self.counts.deferred,
            QueueKind::Hold => &mut self.counts.hold,
        };
        *slot = slot.saturating_add_signed(delta);
    }

    fn forget(&mut self, id: &QueueId) {
        if let Some(old) = self.known.remove(id) {
            self.count(old.kind, -1);
            if let Some(at) = old.waiting_since {
                self.waiting.remove(&(at, id.clone()));
            }
        }
    }
}

impl Schedule {
    /// Records the current state of `entry`.
    pub(crate) fn update(&self, entry: &QueueEntry) {
        let waiting_since = (entry.kind != QueueKind::Hold && !entry.in_flight)
            .then(|| entry.next_attempt.timestamp_micros());
        let mut inner = self.inner.lock().expect("schedule lock");
        inner.forget(&entry.id);
        inner.count(entry.kind, 1);
        if let Some(at) = waiting_since {
            inner.waiting.insert((at, entry.id.clone()));
        }
        inner.known.insert(
            entry.id.clone(),
            Known {
                kind: entry.kind,
                waiting_since,
            },
        );
    }

    /// The message left the queue.
    pub(crate) fn forget(&self, id: &QueueId) {
        self.inner.lock().expect("schedule lock").forget(id);
    }

    /// Up to `limit` messages waiting whose next attempt is at or before `now`, earliest first,
    /// passing over those `skip` says (called under the schedule's lock: it must not touch the
    /// queue).
    pub(crate) fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: impl Fn(&QueueId) -> bool,
    ) -> Vec<QueueId> {
        let now = now.timestamp_micros();
        let inner = self.inner.lock().expect("schedule lock");
        inner
            .waiting
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, id)| !skip(id))
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// How many messages each queue holds.
    pub(crate) fn counts(&self) -> QueueCounts {
        self.inner.lock().expect("schedule lock").counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    fn entry(kind: QueueKind, in_flight: bool, next_in_secs: i64) -> QueueEntry {
        let envelope = Envelope {
            sender: "a@example.org".into(),
            recipients: vec!["b@example.com".into()],
            smtputf8: false,
            eight_bit: false,
            received_at: Utc::now(),
            client: None,
        };
        let mut entry = QueueEntry::new(QueueId::generate(), envelope, 10, None, None);
        entry.kind = kind;
        entry.in_flight = in_flight;
        entry.next_attempt = Utc::now() + chrono::Duration::seconds(next_in_secs);
        entry
    }

    #[test]
    fn only_messages_that_wait_and_are_due_are_handed_out_earliest_first() {
        let schedule = Schedule::default();
        let later = entry(QueueKind::Deferred, false, 600);
        let due_second = entry(QueueKind::Deferred, false, -5);
        let due_first = entry(QueueKind::Incoming, false, -10);
        let held = entry(QueueKind::Hold, false, -20);
        let busy = entry(QueueKind::Incoming, true, -30);
        for e in [&later, &due_second, &due_first, &held, &busy] {
            schedule.update(e);
        }
        assert_eq!(
            schedule.due(Utc::now(), 10, |_| false),
            vec![due_first.id.clone(), due_second.id.clone()]
        );
        assert_eq!(
            schedule.due(Utc::now(), 1, |_| false),
            vec![due_first.id.clone()]
        );
        // Passed-over messages do not count towards the limit.
        assert_eq!(
            schedule.due(Utc::now(), 1, |id| *id == due_first.id),
            vec![due_second.id.clone()]
        );
        let counts = schedule.counts();
        assert_eq!((counts.incoming, counts.deferred, counts.hold), (2, 2, 1));
    }

    #[test]
    fn an_update_replaces_the_previous_state_and_forget_removes_it() {
        let schedule = Schedule::default();
        let mut e = entry(QueueKind::Incoming, false, -1);
        schedule.update(&e);
        e.in_flight = true;
        schedule.update(&e);
        assert!(schedule.due(Utc::now(), 10, |_| false).is_empty());
        e.in_flight = false;
        e.kind = QueueKind::Deferred;
        e.next_attempt = Utc::now() - chrono::Duration::seconds(1);
        schedule.update(&e);
        assert_eq!(schedule.due(Utc::now(), 10, |_| false), vec![e.id.clone()]);
        assert_eq!(schedule.counts().incoming, 0);
        assert_eq!(schedule.counts().deferred, 1);
        schedule.forget(&e.id);
        assert!(schedule.due(Utc::now(), 10, |_| false).is_empty());
        assert_eq!(schedule.counts(), QueueCounts::default());
    }
}
