//! Recently committed messages kept in memory, so scanning and delivering a message that has just
//! arrived (nearly every message) needs no file read. The spool file stays the truth: whatever
//! is not in the cache is read from it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::id::QueueId;

/// A byte-bounded cache of message bodies, oldest evicted first.
#[derive(Debug)]
pub(crate) struct MessageCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    messages: HashMap<QueueId, Bytes>,
    /// Insertion order, for eviction; may name ids already removed (skipped when evicting).
    order: VecDeque<QueueId>,
    bytes: usize,
}

impl MessageCache {
    /// A cache holding at most `budget` bytes of messages (0 keeps nothing).
    pub(crate) fn new(budget: usize) -> MessageCache {
        MessageCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Keeps `message` under `id`, evicting the oldest messages to stay within the budget. A
    /// message larger than the whole budget is not kept.
    pub(crate) fn insert(&self, id: &QueueId, message: Bytes) {
        if message.len() > self.budget {
            return;
        }
        let mut inner = self.inner.lock().expect("message cache lock");
        while inner.bytes + message.len() > self.budget {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.messages.remove(&oldest) {
                inner.bytes -= gone.len();
            }
        }
        inner.bytes += message.len();
        if let Some(old) = inner.messages.insert(id.clone(), message) {
            inner.bytes -= old.len();
        } else {
            inner.order.push_back(id.clone());
        }
        // Ids removed out of order leave stale entries in `order`; compact when they dominate.
        if inner.order.len() > 2 * inner.messages.len() + 64 {
            let Inner {
                messages, order, ..
            } = &mut *inner;
            order.retain(|id| messages.contains_key(id));
        }
    }

    /// The message, if it is cached.
    pub(crate) fn get(&self, id: &QueueId) -> Option<Bytes> {
        let inner = self.inner.lock().expect("message cache lock");
        inner.messages.get(id).cloned()
    }

    /// Forgets the message (it left the queue or went on hold).
    pub(crate) fn remove(&self, id: &QueueId) {
        let mut inner = self.inner.lock().expect("message cache lock");
        if let Some(gone) = inner.messages.remove(id) {
            inner.bytes -= gone.len();
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().expect("message cache lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[test]
    fn the_oldest_messages_are_evicted_to_stay_within_the_budget() {
        let cache = MessageCache::new(100);
        let ids: Vec<QueueId> = (0..4).map(|_| QueueId::generate()).collect();
        for id in &ids {
            cache.insert(id, message(30));
        }
        assert!(cache.get(&ids[0]).is_none());
        assert!(ids[1..].iter().all(|id| cache.get(id).is_some()));
        assert_eq!(cache.bytes(), 90);
    }

    #[test]
    fn removed_messages_free_their_bytes_and_a_message_over_budget_is_not_kept() {
        let cache = MessageCache::new(100);
        let (a, b) = (QueueId::generate(), QueueId::generate());
        cache.insert(&a, message(60));
        cache.remove(&a);
        assert_eq!(cache.bytes(), 0);
        cache.insert(&b, message(101));
        assert!(cache.get(&b).is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn many_out_of_order_removals_do_not_grow_the_eviction_list_without_bound() {
        let cache = MessageCache::new(1_000_000);
        for _ in 0..10_000 {
            let id = QueueId::generate();
            cache.insert(&id, message(10));
            cache.remove(&id);
        }
        assert!(cache.inner.lock().unwrap().order.len() < 200);
    }
}
