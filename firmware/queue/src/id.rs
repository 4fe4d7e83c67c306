//! Queue ids: the name of a message in the spool, in logs and in the tracking log.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Digits of the id, in ascending order so that fixed-width ids sort like the numbers they encode.
const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Characters that encode the time (microseconds since 1970; base 36 lasts until the year 2085).
const TIME_CHARS: usize = 10;
/// Characters of randomness, so that ids stay unique across restarts even if the clock stepped back.
const RANDOM_CHARS: usize = 6;
/// Total length of a queue id.
pub(crate) const ID_LEN: usize = TIME_CHARS + RANDOM_CHARS;

/// The last time value handed out; ids take `max(now, last + 1)` so two ids of one process never share it.
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

/// The identifier of a queued message: 16 characters `[0-9A-Z]`, the first 10 the arrival time in
/// microseconds (base 36, so ids sort by arrival), the last 6 random.
///
/// It is safe as a file name and is the file name of the message in the spool.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

impl QueueId {
    /// Makes a new id, unique within this process even under heavy concurrency (a monotonic
    /// microsecond counter) and across restarts (random suffix).
    pub fn generate() -> QueueId {
        let now = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
        let mut last = LAST_MICROS.load(Ordering::Relaxed);
        let micros = loop {
            let next = now.max(last + 1);
            match LAST_MICROS.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        let random = rand::thread_rng().gen_range(0..36u64.pow(RANDOM_CHARS as u32));
        let mut id = String::with_capacity(ID_LEN);
        push_base36(&mut id, micros, TIME_CHARS);
        push_base36(&mut id, random, RANDOM_CHARS);
        QueueId(id)
    }

    /// The id as text (also the spool file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A small number derived from the random part, used to spread per-message locks.
    pub(crate) fn shard(&self, shards: usize) -> usize {
        let random = &self.0.as_bytes()[TIME_CHARS..];
        random.iter().fold(0usize, |acc, b| {
            acc.wrapping_mul(31).wrapping_add(*b as usize)
        }) % shards
    }
}

/// Appends `value` as exactly `width` base-36 digits (most significant first).
fn push_base36(out: &mut String, mut value: u64, width: usize) {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(value % 36) as usize];
        value /= 36;
    }
    out.extend(digits.iter().map(|&b| b as char));
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a text is not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id: {0:?} (expected 16 characters 0-9 and A-Z)")]
pub struct InvalidQueueId(pub String);

impl FromStr for QueueId {
    type Err = InvalidQueueId;

    fn from_str(s: &str) -> Result<QueueId, InvalidQueueId> {
        // Upper case only: the id is a file name, and two spellings of one file would be a trap.
        if s.len() == ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            Ok(QueueId(s.to_owned()))
        } else {
            Err(InvalidQueueId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for QueueId {
    type Error = InvalidQueueId;

    fn try_from(s: String) -> Result<QueueId, InvalidQueueId> {
        s.parse()
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_16_filename_safe_chars_and_parse_back() {
        let id = QueueId::generate();
        assert_eq!(id.as_str().len(), 16);
        assert_eq!(id.as_str().parse::<QueueId>().unwrap(), id);
        assert!("abc".parse::<QueueId>().is_err());
        assert!("0000000000abcdef".parse::<QueueId>().is_err());
        assert!("00000000/0ABCDEF".parse::<QueueId>().is_err());
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_are_unique_across_many_threads() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| (0..20_000).map(|_| QueueId::generate()).collect::<Vec<_>>())
            })
            .collect();
        let mut seen = HashSet::new();
        for handle in handles {
            for id in handle.join().unwrap() {
                assert!(seen.insert(id), "duplicate queue id");
            }
        }
        assert_eq!(seen.len(), 160_000);
    }

    #[test]
    fn ids_serialize_as_plain_strings_and_reject_garbage() {
        let id = QueueId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<QueueId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<QueueId>("\"../etc/passwd\"").is_err());
    }
}
