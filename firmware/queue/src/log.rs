//! The message log: fresh mail is appended to segment files instead of getting a file each.
//!
//! A file per message costs the file system an inode allocation, a directory entry, a rename,
//! an unlink and an inode release per message, and the disk one more write each; measured on
//! the development machine that was a quarter to a third of the gateway's CPU. Most mail leaves
//! the queue seconds after it arrived, so it goes to `log/` instead: each round of the spool
//! writer appends the records of all its commits to the current segment with one `write` and
//! makes them durable with one `fdatasync`; the end of a message is a small *done* record in the
//! same way. A message that stays longer (its first attempt deferred it, or it is put on hold)
//! moves out to a spool file of its own (`active/<id>`, `hold/<id>`), so the log only ever holds
//! mail on its way through.
//!
//! A record is a 32-byte header and a payload:
//!
//! ```text
//! 0   magic "PQL1"
//! 4   kind: 1 = message, 2 = done, 3 = attempt (a delivery attempt started), 4 = scanned
//!     (the scan stage has decided about the message)
//! 5   3 zero bytes
//! 8   payload length (u32, little endian)
//! 12  CRC-32 of bytes 4..12, the id and the payload (u32, little endian)
//! 16  queue id (16 ASCII characters)
//! 32  payload: for a message, exactly what a spool file holds (magic line, envelope line,
//!     message); for done, nothing
//! ```
//!
//! Segments are named by a sequence number (`<16 hex digits>.log`) and only ever appended to: a
//! new process starts a new segment, and so does a failed write or sync (anything after a failed
//! write was never acknowledged). At start-up every segment is read in order: a message record
//! makes its id live, a done record ends it, and reading a segment stops at its first record that
//! does not check out (a write cut short by a crash). A segment is deleted when it and every
//! older segment hold no live message: a done record always lies in the same segment as its
//! message or a newer one, so deleting oldest first can never bring a finished message back.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::id::QueueId;

/// The first bytes of every record.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"PQL1";
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 32;
/// A segment this large gets no more records; the next round starts a new one.
pub(crate) const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// Largest payload a record may have; larger messages get a spool file of their own.
pub(crate) const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

const KIND_MESSAGE: u8 = 1;
const KIND_DONE: u8 = 2;
const KIND_ATTEMPT: u8 = 3;
const KIND_SCANNED: u8 = 4;

/// Where a message's record is: its segment, and offset and length of its payload (the spool
/// file content).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogPos {
    pub(crate) segment: u64,
    pub(crate) payload: u64,
    pub(crate) len: u32,
}

/// Which messages live in the log and where; shared by the writer (which changes it) and the
/// queue (which reads messages through it).
#[derive(Debug, Default)]
pub(crate) struct LogIndex {
    inner: Mutex<IndexInner>,
    /// `fdatasync`s of segments (for tests).
    syncs: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct IndexInner {
    messages: HashMap<QueueId, LogPos>,
    /// Live messages per segment, for every segment that exists.
    live: BTreeMap<u64, usize>,
}

impl LogIndex {
    /// Where `id` is, if it lives in the log.
    pub(crate) fn get(&self, id: &QueueId) -> Option<LogPos> {
        self.lock().messages.get(id).copied()
    }

    /// Whether `id` lives in the log.
    pub(crate) fn contains(&self, id: &QueueId) -> bool {
        self.lock().messages.contains_key(id)
    }

    /// How many messages live in the log.
    pub(crate) fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// How many times a segment was synced.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many segments exist.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn segments(&self) -> usize {
        self.lock().live.len()
    }

    pub(crate) fn insert(&self, id: QueueId, pos: LogPos) {
        let mut inner = self.lock();
        *inner.live.entry(pos.segment).or_insert(0) += 1;
        if let Some(old) = inner.messages.insert(id, pos)
            && let Some(n) = inner.live.get_mut(&old.segment)
        {
            *n = n.saturating_sub(1);
        }
    }

    pub(crate) fn remove(&self, id: &QueueId) -> Option<LogPos> {
        let mut inner = self.lock();
        let pos = inner.messages.remove(id)?;
        if let Some(n) = inner.live.get_mut(&pos.segment) {
            *n = n.saturating_sub(1);
        }
        Some(pos)
    }

    /// Keeps a segment (and every newer one) from ever being deleted by this process: one that
    /// could not be read may hold live mail, and newer ones its done records.
    pub(crate) fn pin_segment(&self, segment: u64) {
        *self.lock().live.entry(segment).or_insert(0) += 1;
    }

    pub(crate) fn add_segment(&self, segment: u64) {
        self.lock().live.entry(segment).or_insert(0);
    }

    /// Takes out the oldest segments that hold no live message, up to (not including) the first
    /// one that does; the caller deletes them.
    fn take_deletable(&self) -> Vec<u64> {
        let mut inner = self.lock();
        let mut gone = Vec::new();
        while let Some((&segment, &live)) = inner.live.first_key_value() {
            if live > 0 {
                break;
            }
            inner.live.remove(&segment);
            gone.push(segment);
        }
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexInner> {
        // The index is plain data: a panic elsewhere cannot leave it half updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The file of segment `segment` in `dir`.
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.log"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Appends a message record (payload = `parts` concatenated) to `buf`; returns the offset of the
/// payload within `buf`.
pub(crate) fn encode_message(buf: &mut Vec<u8>, id: &QueueId, parts: &[&[u8]]) -> usize {
    encode(buf, KIND_MESSAGE, id, parts)
}

/// Appends a done record for `id` to `buf`.
pub(crate) fn encode_done(buf: &mut Vec<u8>, id: &QueueId) {
    encode(buf, KIND_DONE, id, &[]);
}

/// Appends an attempt record for `id` to `buf`: a delivery attempt of the message is starting.
pub(crate) fn encode_attempt(buf: &mut Vec<u8>, id: &QueueId) {
    encode(buf, KIND_ATTEMPT, id, &[]);
}

/// Appends a scanned record for `id` to `buf`.
pub(crate) fn encode_scanned(buf: &mut Vec<u8>, id: &QueueId) {
    encode(buf, KIND_SCANNED, id, &[]);
}

fn encode(buf: &mut Vec<u8>, kind: u8, id: &QueueId, parts: &[&[u8]]) -> usize {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).expect("log payloads are bounded by MAX_PAYLOAD");
    let mut meta = [0u8; 8];
    meta[0] = kind;
    meta[4..8].copy_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);
    crc.update(id.as_str().as_bytes());
    for part in parts {
        crc.update(part);
    }
    buf.extend_from_slice(&RECORD_MAGIC);
    buf.extend_from_slice(&meta);
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(id.as_str().as_bytes());
    let payload = buf.len();
    for part in parts {
        buf.extend_from_slice(part);
    }
    payload
}

/// Reads the payload (the spool file content) of a message record.
pub(crate) fn read_payload(dir: &Path, pos: LogPos) -> io::Result<Vec<u8>> {
    let file = File::open(segment_path(dir, pos.segment))?;
    let mut payload = vec![0; pos.len as usize];
    file.read_exact_at(&mut payload, pos.payload)?;
    Ok(payload)
}

/// The writer's side of the log: the segment being appended to. Lives on the spool writer thread.
#[derive(Debug)]
pub(crate) struct LogWriter {
    dir: PathBuf,
    index: Arc<LogIndex>,
    fsync: bool,
    next_segment: u64,
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    segment: u64,
    file: File,
    len: u64,
}

impl LogWriter {
    /// A writer whose first segment will be `next_segment` (one past every existing one).
    pub(crate) fn new(
        dir: &Path,
        index: Arc<LogIndex>,
        next_segment: u64,
        fsync: bool,
    ) -> LogWriter {
        LogWriter {
            dir: dir.to_path_buf(),
            index,
            fsync,
            next_segment,
            current: None,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn index(&self) -> &LogIndex {
        &self.index
    }

    /// Appends `buf` (whole records) to the current segment, starting a new one first when there
    /// is none or it is full. Returns the segment and the offset `buf` starts at. After an error
    /// the segment is abandoned: what follows goes to a new one.
    pub(crate) fn append(&mut self, buf: &[u8]) -> io::Result<(u64, u64)> {
        if self.current.as_ref().is_none_or(|c| c.len >= SEGMENT_BYTES) {
            self.start_segment()?;
        }
        let current = self.current.as_mut().expect("a segment was just started");
        let at = (current.segment, current.len);
        match current.file.write_all(buf) {
            Ok(()) => {
                current.len += buf.len() as u64;
                Ok(at)
            }
            Err(e) => {
                self.current = None;
                Err(e)
            }
        }
    }

    /// Makes everything appended so far durable (data, and the file size).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let Some(current) = &self.current else {
            return Ok(());
        };
        self.index
            .syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        current.file.sync_data().inspect_err(|_| {
            // Whether any of it reached the disk is unknown: never append after it.
            self.current = None;
        })
    }

    /// The path of the current segment (for error messages).
    pub(crate) fn current_path(&self) -> PathBuf {
        match &self.current {
            Some(c) => segment_path(&self.dir, c.segment),
            None => self.dir.clone(),
        }
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let segment = self.next_segment;
        self.next_segment += 1;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(segment_path(&self.dir, segment))?;
        // The new name must be durable before anything acknowledged lives in the file.
        if self.fsync {
            File::open(&self.dir)?.sync_all()?;
        }
        self.index.add_segment(segment);
        self.current = Some(Current {
            segment,
            file,
            len: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segments that no longer hold a live message (see the module docs for
    /// why only oldest first), the current one too when nothing lives in any segment: the space
    /// of delivered mail is given back at once. Returns how many were deleted.
    pub(crate) fn collect_garbage(&mut self) -> usize {
        let gone = self.index.take_deletable();
        if let Some(current) = &self.current
            && gone.contains(&current.segment)
        {
            self.current = None;
        }
        for segment in &gone {
            let path = segment_path(&self.dir, *segment);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a finished log segment");
            }
        }
        if !gone.is_empty() && self.fsync {
            // Unlinks are not ordered on every file system: make them durable before an older
            // segment's done records could be needed again.
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not sync the log directory");
            }
        }
        gone.len()
    }
}

/// What reading the log at start-up found.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    /// Live messages: not followed by a done record.
    pub(crate) messages: BTreeMap<QueueId, LogPos>,
    /// Attempt records of live messages: delivery attempts that started and never ended (an
    /// attempt that ends either finishes the message or moves it out of the log).
    pub(crate) attempts: HashMap<QueueId, u32>,
    /// Live messages the scan stage has decided about.
    pub(crate) scanned: std::collections::HashSet<QueueId>,
    /// Every segment that could be read, oldest first.
    pub(crate) segments: Vec<u64>,
    /// One past the newest segment.
    pub(crate) next_segment: u64,
    /// Segments in which valid-looking records follow a record that does not check out: not
    /// a torn write, so the file is damaged (copied to `corrupt/` by recovery).
    pub(crate) damaged: Vec<u64>,
    /// Segments that could not be read at all (an I/O error). They are left alone, never
    /// deleted: what they hold is read at the next start that can.
    pub(crate) unreadable: Vec<u64>,
}

/// Reads every segment in `dir`, oldest first.
pub(crate) fn scan(dir: &Path) -> io::Result<Scanned> {
    let mut scanned = Scanned::default();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        match parse_segment_name(&name) {
            Some(segment) => scanned.segments.push(segment),
            None => {
                tracing::warn!(file = %item.path().display(), "file in the log directory is not a segment; ignored")
            }
        }
    }
    scanned.segments.sort_unstable();
    scanned.next_segment = scanned.segments.last().map_or(1, |s| s + 1);
    let mut readable = Vec::with_capacity(scanned.segments.len());
    for &segment in &scanned.segments {
        let path = segment_path(dir, segment);
        let mut bytes = Vec::new();
        if let Err(e) = File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            tracing::error!(segment = %path.display(), error = %e, "cannot read a log segment; it is kept for the next start");
            scanned.unreadable.push(segment);
            continue;
        }
        readable.push(segment);
        let mut at = 0usize;
        while at < bytes.len() {
            match parse_record(&bytes[at..]) {
                Some((kind, id, len)) => {
                    match kind {
                        KIND_MESSAGE => {
                            let pos = LogPos {
                                segment,
                                payload: (at + HEADER_LEN) as u64,
                                len,
                            };
                            scanned.messages.insert(id, pos);
                        }
                        KIND_ATTEMPT => {
                            if scanned.messages.contains_key(&id) {
                                *scanned.attempts.entry(id).or_insert(0) += 1;
                            }
                        }
                        KIND_SCANNED => {
                            if scanned.messages.contains_key(&id) {
                                scanned.scanned.insert(id);
                            }
                        }
                        _ => {
                            scanned.messages.remove(&id);
                            scanned.attempts.remove(&id);
                            scanned.scanned.remove(&id);
                        }
                    }
                    at += HEADER_LEN + len as usize;
                }
                None => {
                    let rest = &bytes[at..];
                    let more = rest
                        .windows(RECORD_MAGIC.len())
                        .skip(1)
                        .any(|w| w == RECORD_MAGIC);
                    if more {
                        tracing::error!(segment = %path.display(), offset = at, "log segment is damaged: records follow one that does not check out; they are not read");
                        scanned.damaged.push(segment);
                    } else {
                        tracing::warn!(segment = %path.display(), offset = at, bytes = rest.len(), "log segment ends with an incomplete record (a write cut short); ignored");
                    }
                    break;
                }
            }
        }
    }
    scanned.segments = readable;
    Ok(scanned)
}

/// Checks the record at the start of `bytes`: (kind, id, payload length).
fn parse_record(bytes: &[u8]) -> Option<(u8, QueueId, u32)> {
    if bytes.len() < HEADER_LEN || bytes[..4] != RECORD_MAGIC {
        return None;
    }
    let meta = &bytes[4..12];
    let kind = meta[0];
    if !matches!(kind, KIND_MESSAGE | KIND_DONE | KIND_ATTEMPT | KIND_SCANNED)
        || meta[1..4] != [0, 0, 0]
    {
        return None;
    }
    let len = u32::from_le_bytes(meta[4..8].try_into().ok()?);
    if len as usize > MAX_PAYLOAD || bytes.len() < HEADER_LEN + len as usize {
        return None;
    }
    let stored = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    let mut crc = crc32fast::Hasher::new();
    crc.update(meta);
    crc.update(&bytes[16..HEADER_LEN + len as usize]);
    if crc.finalize() != stored {
        return None;
    }
    let id = std::str::from_utf8(&bytes[16..32]).ok()?.parse().ok()?;
    Some((kind, id, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path) -> LogWriter {
        LogWriter::new(dir, Arc::new(LogIndex::default()), 1, true)
    }

    #[test]
    fn messages_without_a_done_record_are_live_after_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        let (a, b) = (QueueId::generate(), QueueId::generate());
        let mut buf = Vec::new();
        let pa = encode_message(&mut buf, &a, &[b"spool-a"]);
        encode_message(&mut buf, &b, &[b"spool-", b"b"]);
        let (segment, base) = log.append(&buf).unwrap();
        log.sync().unwrap();
        let mut done = Vec::new();
        encode_done(&mut done, &a);
        log.append(&done).unwrap();
        log.sync().unwrap();

        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.segments, vec![segment]);
        assert_eq!(scanned.next_segment, segment + 1);
        assert!(!scanned.messages.contains_key(&a));
        let pos = scanned.messages[&b];
        assert_eq!(read_payload(dir.path(), pos).unwrap(), b"spool-b");
        assert_eq!(pa as u64 + base, HEADER_LEN as u64);
        assert!(scanned.damaged.is_empty());
    }

    #[test]
    fn attempt_records_count_until_the_message_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        let (a, b) = (QueueId::generate(), QueueId::generate());
        let mut buf = Vec::new();
        encode_message(&mut buf, &a, &[b"a"]);
        encode_message(&mut buf, &b, &[b"b"]);
        encode_attempt(&mut buf, &a);
        encode_attempt(&mut buf, &b);
        encode_attempt(&mut buf, &a);
        encode_scanned(&mut buf, &a);
        encode_scanned(&mut buf, &b);
        encode_done(&mut buf, &b);
        log.append(&buf).unwrap();
        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.attempts.get(&a), Some(&2));
        assert_eq!(scanned.attempts.get(&b), None);
        assert!(scanned.scanned.contains(&a) && !scanned.scanned.contains(&b));
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        let (a, b) = (QueueId::generate(), QueueId::generate());
        let mut buf = Vec::new();
        encode_message(&mut buf, &a, &[b"first"]);
        let cut = buf.len();
        encode_message(&mut buf, &b, &[&[b'x'; 1000]]);
        log.append(&buf[..cut + 500]).unwrap();
        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.messages.keys().collect::<Vec<_>>(), vec![&a]);
        assert!(scanned.damaged.is_empty());
    }

    #[test]
    fn a_flipped_bit_stops_the_segment_and_marks_it_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        let ids: Vec<QueueId> = (0..3).map(|_| QueueId::generate()).collect();
        let mut buf = Vec::new();
        let second = {
            encode_message(&mut buf, &ids[0], &[b"one"]);
            let at = buf.len();
            encode_message(&mut buf, &ids[1], &[b"two"]);
            encode_message(&mut buf, &ids[2], &[b"three"]);
            at
        };
        buf[second + HEADER_LEN] ^= 0x20;
        let (segment, _) = log.append(&buf).unwrap();
        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.messages.keys().collect::<Vec<_>>(), vec![&ids[0]]);
        assert_eq!(scanned.damaged, vec![segment]);
    }

    #[test]
    fn a_record_inside_a_payload_is_never_read_as_a_record() {
        // A message may contain bytes that look like a record (an attacker can send anything);
        // records are only ever read at record boundaries.
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        let (outer, inner) = (QueueId::generate(), QueueId::generate());
        let mut fake = Vec::new();
        encode_message(&mut fake, &inner, &[b"injected"]);
        let mut buf = Vec::new();
        encode_message(&mut buf, &outer, &[b"header\n", &fake]);
        log.append(&buf).unwrap();
        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.messages.keys().collect::<Vec<_>>(), vec![&outer]);
    }

    #[test]
    fn segments_are_deleted_oldest_first_once_nothing_in_them_or_before_lives() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(LogIndex::default());
        let mut log = LogWriter::new(dir.path(), index.clone(), 1, true);
        let ids: Vec<QueueId> = (0..3).map(|_| QueueId::generate()).collect();
        // Three segments with one message each (a new segment per append, by abandoning); the
        // third stays current.
        let mut segments = Vec::new();
        for id in &ids {
            let mut buf = Vec::new();
            let payload = encode_message(&mut buf, id, &[b"m"]);
            let (segment, base) = log.append(&buf).unwrap();
            index.insert(
                id.clone(),
                LogPos {
                    segment,
                    payload: base + payload as u64,
                    len: 1,
                },
            );
            segments.push(segment);
            if segments.len() < 3 {
                log.current = None;
            }
        }
        assert_eq!(index.segments(), 3);
        // The middle one finishes first: nothing may go, the oldest still lives.
        index.remove(&ids[1]);
        assert_eq!(log.collect_garbage(), 0);
        index.remove(&ids[0]);
        assert_eq!(log.collect_garbage(), 2);
        assert!(!segment_path(dir.path(), segments[0]).exists());
        assert!(!segment_path(dir.path(), segments[1]).exists());
        assert!(segment_path(dir.path(), segments[2]).exists());
        assert_eq!(index.len(), 1);
        // Nothing lives any more: the current segment goes too, and the next append starts a
        // new one.
        index.remove(&ids[2]);
        assert_eq!(log.collect_garbage(), 1);
        assert!(!segment_path(dir.path(), segments[2]).exists());
        let (next, at) = log.append(b"x").unwrap();
        assert_eq!((next, at), (segments[2] + 1, 0));
    }

    #[test]
    fn an_unreadable_segment_is_reported_and_nothing_after_it_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(LogIndex::default());
        let mut log = LogWriter::new(dir.path(), index.clone(), 1, true);
        log.append(b"").unwrap();
        // A directory where a segment should be: reading it fails.
        std::fs::create_dir(segment_path(dir.path(), 7)).unwrap();
        let scanned = scan(dir.path()).unwrap();
        assert_eq!(scanned.unreadable, vec![7]);
        assert_eq!(scanned.segments, vec![1]);
        assert_eq!(scanned.next_segment, 8);
        let index = LogIndex::default();
        index.pin_segment(7);
        index.add_segment(8);
        assert!(index.take_deletable().is_empty());
    }

    #[test]
    fn a_full_segment_is_followed_by_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        let (first, _) = log.append(b"x").unwrap();
        log.current.as_mut().unwrap().len = SEGMENT_BYTES;
        let (second, at) = log.append(b"y").unwrap();
        assert_eq!((second, at), (first + 1, 0));
    }
}
