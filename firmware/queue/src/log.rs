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
//!
//! **Prepared segments.** Appending to a file makes every `fdatasync` write the file's size and
//! its newly allocated blocks as well as the data: on ext4 that was three writes to the disk and
//! a cache flush per sync instead of one write and a flush, and about 60 % more time per sync.
//! So once the current segment is half full, a thread of its own prepares the next one:
//! `next.prep` is filled with zeros to the segment size and synced, and the writer later renames
//! it to the segment's name (syncing the directory, as for any new segment). Records then
//! overwrite blocks that already exist in a file whose size does not change, and a sync writes
//! only them. A segment that is not ready in time (or could not be prepared: the disk has less
//! than four segments' worth free, a write failed) starts as an empty file as before. Reading
//! stops at the first bytes that are not a record, so a prepared segment's unused zeros read
//! like the end of the file; a prepared segment is kept while it is current even when nothing in
//! it lives any more, since its space is taken either way.

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
/// A segment this large gets no more records; the next round starts a new one (the default of
/// `QueueConfig::log_segment_bytes`).
pub(crate) const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// Largest payload a record may have; larger messages get a spool file of their own.
pub(crate) const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// The name of the segment being prepared (see the module docs).
const PREPARED_NAME: &str = "next.prep";

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
    /// `keep` (the current segment, if it is to stay) is never taken.
    fn take_deletable(&self, keep: Option<u64>) -> Vec<u64> {
        let mut inner = self.lock();
        let mut gone = Vec::new();
        while let Some((&segment, &live)) = inner.live.first_key_value() {
            if live > 0 || Some(segment) == keep {
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

/// A failed write or sync of a segment (or of starting one), with the segment's path: the
/// segment is abandoned by then, so the writer could no longer name it.
#[derive(Debug)]
pub(crate) struct SegmentError {
    pub(crate) path: PathBuf,
    pub(crate) error: io::Error,
}

/// The writer's side of the log: the segment being appended to. Lives on the spool writer thread.
#[derive(Debug)]
pub(crate) struct LogWriter {
    dir: PathBuf,
    index: Arc<LogIndex>,
    fsync: bool,
    next_segment: u64,
    current: Option<Current>,
    /// A segment this large gets no more records ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
    /// The next segment, being prepared or ready (see the module docs).
    preparing: Option<std::thread::JoinHandle<io::Result<File>>>,
    /// The segment during which preparing the next one was declined (too little free space):
    /// not asked again until the next segment.
    declined: Option<u64>,
}

#[derive(Debug)]
struct Current {
    segment: u64,
    file: File,
    len: u64,
    /// Made from a prepared file: zero-filled to the segment size.
    prepared: bool,
}

impl LogWriter {
    /// A writer whose first segment will be `next_segment` (one past every existing one).
    pub(crate) fn new(
        dir: &Path,
        index: Arc<LogIndex>,
        next_segment: u64,
        fsync: bool,
    ) -> LogWriter {
        // A preparation the last process did not finish, or did not use.
        if let Err(e) = fs::remove_file(dir.join(PREPARED_NAME))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old prepared log segment");
        }
        LogWriter {
            dir: dir.to_path_buf(),
            index,
            fsync,
            next_segment,
            current: None,
            segment_bytes: SEGMENT_BYTES,
            preparing: None,
            declined: None,
        }
    }

    /// Segments of `bytes` instead of [`SEGMENT_BYTES`] (at least 64 KiB).
    pub(crate) fn with_segment_bytes(mut self, bytes: u64) -> LogWriter {
        self.segment_bytes = bytes.max(64 * 1024);
        self
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
    pub(crate) fn append(&mut self, buf: &[u8]) -> Result<(u64, u64), SegmentError> {
        if self
            .current
            .as_ref()
            .is_none_or(|c| c.len >= self.segment_bytes)
        {
            self.start_segment().map_err(|error| SegmentError {
                // `start_segment` numbered the segment it tried to start.
                path: segment_path(&self.dir, self.next_segment - 1),
                error,
            })?;
        }
        let current = self.current.as_mut().expect("a segment was just started");
        let at = (current.segment, current.len);
        match current.file.write_all_at(buf, current.len) {
            Ok(()) => {
                current.len += buf.len() as u64;
                let segment = current.segment;
                if self.fsync
                    && self.preparing.is_none()
                    && self.declined != Some(segment)
                    && current.len >= self.segment_bytes / 2
                {
                    self.prepare_next(segment);
                }
                Ok(at)
            }
            Err(error) => {
                let path = segment_path(&self.dir, current.segment);
                self.current = None;
                Err(SegmentError { path, error })
            }
        }
    }

    /// Makes everything appended so far durable (data, and the file size).
    pub(crate) fn sync(&mut self) -> Result<(), SegmentError> {
        if !self.fsync {
            return Ok(());
        }
        let Some(current) = &self.current else {
            return Ok(());
        };
        self.index
            .syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let segment = current.segment;
        current.file.sync_data().map_err(|error| {
            let path = segment_path(&self.dir, segment);
            // Whether any of it reached the disk is unknown: never append after it.
            self.current = None;
            SegmentError { path, error }
        })
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let segment = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.dir, segment);
        let renamed = self.take_prepared().and_then(|file| {
            let prep = self.dir.join(PREPARED_NAME);
            match fs::rename(&prep, &path) {
                Ok(()) => Some(file),
                Err(e) => {
                    tracing::warn!(file = %prep.display(), error = %e, "cannot use the prepared log segment; starting an empty one");
                    let _ = fs::remove_file(&prep);
                    None
                }
            }
        });
        let (file, prepared) = match renamed {
            Some(file) => (file, true),
            None => (
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?,
                false,
            ),
        };
        // The new name must be durable before anything acknowledged lives in the file.
        if self.fsync {
            File::open(&self.dir)?.sync_all()?;
        }
        tracing::info!(segment = %path.display(), prepared, "log segment started");
        self.index.add_segment(segment);
        self.current = Some(Current {
            segment,
            file,
            len: 0,
            prepared,
        });
        Ok(())
    }

    /// Starts preparing the next segment on a thread of its own, if the disk has room to spare.
    fn prepare_next(&mut self, current: u64) {
        let room = 4 * self.segment_bytes;
        match free_bytes(&self.dir) {
            Ok(free) if free >= room => {}
            Ok(free) => {
                tracing::debug!(
                    free,
                    "little free space: the next log segment is not prepared"
                );
                self.declined = Some(current);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the free space: the next log segment is not prepared");
                self.declined = Some(current);
                return;
            }
        }
        let path = self.dir.join(PREPARED_NAME);
        let size = self.segment_bytes;
        let thread = std::thread::Builder::new()
            .name("log-prepare".into())
            .spawn(move || prepare_segment(&path, size));
        match thread {
            Ok(handle) => self.preparing = Some(handle),
            Err(e) => tracing::warn!(error = %e, "cannot start preparing the next log segment"),
        }
    }

    /// The prepared segment, if one is ready; one still being prepared stays for the next turn.
    fn take_prepared(&mut self) -> Option<File> {
        if !self.preparing.as_ref()?.is_finished() {
            return None;
        }
        let path = self.dir.join(PREPARED_NAME);
        match self.preparing.take()?.join() {
            Ok(Ok(file)) => Some(file),
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the preparing thread panicked".to_string(),
                };
                tracing::warn!(file = %path.display(), %error, "could not prepare the next log segment; starting an empty one");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Deletes the oldest segments that no longer hold a live message (see the module docs for
    /// why only oldest first), the current one too when nothing lives in any segment: the space
    /// of delivered mail is given back at once. Returns how many were deleted.
    pub(crate) fn collect_garbage(&mut self) -> usize {
        // A prepared segment stays while it is current: its space is taken either way, and
        // preparing another costs a segment's worth of writes.
        let keep = self
            .current
            .as_ref()
            .filter(|c| c.prepared)
            .map(|c| c.segment);
        let gone = self.index.take_deletable(keep);
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

/// Fills `path` with `size` zero bytes and syncs it: a segment whose blocks and size are on disk
/// before any record is written to it.
fn prepare_segment(path: &Path, size: u64) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Bytes an unprivileged process may still write on the file system of `dir`.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `s` a plain struct statvfs fills in.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
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
            // Holds no records; the writer removes it.
            None if name == PREPARED_NAME => {}
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
                    if rest.iter().all(|&b| b == 0) {
                        // The unused rest of a prepared segment (no record can follow in it).
                    } else if rest
                        .windows(RECORD_MAGIC.len())
                        .skip(1)
                        .any(|w| w == RECORD_MAGIC)
                    {
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
        assert!(index.take_deletable(None).is_empty());
    }

    /// Appends one message record of `size` payload bytes and indexes it as live.
    fn append_live(log: &mut LogWriter, size: usize) -> QueueId {
        let id = QueueId::generate();
        let mut buf = Vec::new();
        let payload = encode_message(&mut buf, &id, &[&vec![b'm'; size]]);
        let (segment, base) = log.append(&buf).unwrap();
        log.sync().unwrap();
        log.index.insert(
            id.clone(),
            LogPos {
                segment,
                payload: base + payload as u64,
                len: size as u32,
            },
        );
        id
    }

    fn wait_prepared(log: &LogWriter) {
        let started = std::time::Instant::now();
        while !log.preparing.as_ref().expect("preparing").is_finished() {
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn the_next_segment_is_prepared_once_the_current_one_is_half_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        log.segment_bytes = 64 * 1024;
        let first = append_live(&mut log, 20 * 1024);
        assert!(log.preparing.is_none(), "prepared before half full");
        assert!(!log.current.as_ref().unwrap().prepared);
        let second = append_live(&mut log, 20 * 1024);
        wait_prepared(&log);
        let prep = dir.path().join(PREPARED_NAME);
        assert_eq!(std::fs::metadata(&prep).unwrap().len(), 64 * 1024);
        // The scan of a directory with a prepared file reads no segment from it.
        assert_eq!(scan(dir.path()).unwrap().segments.len(), 1);

        // This one fills the first segment; the next record goes to the prepared one.
        let filler = append_live(&mut log, 30 * 1024);
        assert!(!log.current.as_ref().unwrap().prepared);
        let third = append_live(&mut log, 30 * 1024);
        let current = log.current.as_ref().unwrap();
        assert!(current.prepared, "the new segment was not the prepared one");
        assert!(!prep.exists());
        let path = segment_path(dir.path(), current.segment);
        // Written into, not appended to: the size is the prepared one.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);

        let scanned = scan(dir.path()).unwrap();
        let live: Vec<_> = scanned.messages.keys().cloned().collect();
        let mut expected = vec![first, second, filler, third.clone()];
        expected.sort();
        assert_eq!(live, expected);
        assert!(scanned.damaged.is_empty());
        let pos = scanned.messages[&third];
        assert_eq!(pos.segment, current.segment);
        assert_eq!(
            read_payload(dir.path(), pos).unwrap(),
            vec![b'm'; 30 * 1024]
        );
    }

    #[test]
    fn a_prepared_current_segment_stays_when_nothing_in_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path());
        log.segment_bytes = 64 * 1024;
        let mut ids = vec![append_live(&mut log, 40 * 1024)];
        wait_prepared(&log);
        ids.push(append_live(&mut log, 30 * 1024));
        ids.push(append_live(&mut log, 30 * 1024));
        let current = log.current.as_ref().unwrap().segment;
        assert!(log.current.as_ref().unwrap().prepared);
        for id in &ids {
            log.index.remove(id);
        }
        // The old segment goes; the prepared current one stays and takes the next records.
        assert_eq!(log.collect_garbage(), 1);
        assert!(segment_path(dir.path(), current).exists());
        let (segment, at) = log.append(b"x").unwrap();
        assert_eq!(segment, current);
        assert!(at > 30 * 1024);
    }

    #[test]
    fn a_left_over_prepared_file_is_ignored_by_the_scan_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let prep = dir.path().join(PREPARED_NAME);
        std::fs::write(&prep, vec![0u8; 4096]).unwrap();
        let scanned = scan(dir.path()).unwrap();
        assert!(scanned.segments.is_empty());
        assert_eq!(scanned.next_segment, 1);
        let _log = writer(dir.path());
        assert!(!prep.exists());
    }

    #[test]
    fn no_segment_is_prepared_without_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogWriter::new(dir.path(), Arc::new(LogIndex::default()), 1, false);
        log.segment_bytes = 64 * 1024;
        append_live(&mut log, 40 * 1024);
        assert!(log.preparing.is_none());
    }

    #[test]
    fn a_failed_append_names_the_segment_it_was_for() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        std::fs::create_dir(&log_dir).unwrap();
        let mut log = writer(&log_dir);
        let (first, _) = log.append(b"x").unwrap();
        std::fs::remove_dir_all(&log_dir).unwrap();
        // The segment is full: the next append must start one, in a directory that is gone.
        log.current.as_mut().unwrap().len = SEGMENT_BYTES;
        let e = log.append(b"y").unwrap_err();
        assert_eq!(e.path, segment_path(&log_dir, first + 1));
        assert_eq!(e.error.kind(), io::ErrorKind::NotFound);
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
