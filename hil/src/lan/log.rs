//! What the LAN saw, per scenario: `lan.log` (one line per event: link changes, DNS queries,
//! every SMTP command and reply, HTTP requests) and `lan.pcap` (every frame on the cable,
//! readable with Wireshark or tcpdump -r).

use std::fs::File;
use std::io::{BufWriter, LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smoltcp::phy::{PcapLinkType, PcapSink};

/// A cloneable handle to the current transcript files (none until [`LanLog::open`]).
#[derive(Clone)]
pub struct LanLog {
    inner: Arc<Mutex<Files>>,
    start: Instant,
}

struct Files {
    text: Option<LineWriter<File>>,
    pcap: Option<BufWriter<File>>,
    last_flush: Instant,
}

impl LanLog {
    /// A log that writes nowhere until [`LanLog::open`].
    pub fn new() -> LanLog {
        LanLog {
            inner: Arc::new(Mutex::new(Files {
                text: None,
                pcap: None,
                last_flush: Instant::now(),
            })),
            start: Instant::now(),
        }
    }

    /// Starts writing `dir/lan.log` and `dir/lan.pcap` (closing the previous ones).
    pub fn open(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = LineWriter::new(File::create(dir.join("lan.log"))?);
        let mut pcap = BufWriter::new(File::create(dir.join("lan.pcap"))?);
        pcap.global_header(PcapLinkType::Ethernet);
        let mut files = self.inner.lock().expect("lan log lock");
        if let Some(mut old) = files.pcap.take() {
            let _ = Write::flush(&mut old);
        }
        files.text = Some(text);
        files.pcap = Some(pcap);
        Ok(())
    }

    /// Flushes and closes the files.
    pub fn close(&self) {
        let mut files = self.inner.lock().expect("lan log lock");
        if let Some(mut p) = files.pcap.take() {
            let _ = Write::flush(&mut p);
        }
        files.text = None;
    }

    /// Time since the LAN started, the clock of every log line.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// One event line, prefixed with the time and the host that saw it.
    pub fn line(&self, host: &str, text: &str) {
        let t = self.start.elapsed();
        let mut files = self.inner.lock().expect("lan log lock");
        if let Some(w) = files.text.as_mut() {
            let _ = writeln!(w, "{:>9.3} {host:<10} {text}", t.as_secs_f64());
        }
    }

    /// One frame on the cable.
    pub fn frame(&self, frame: &[u8]) {
        let now = smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64);
        let mut files = self.inner.lock().expect("lan log lock");
        let flush = files.last_flush.elapsed() > Duration::from_secs(1);
        if let Some(p) = files.pcap.as_mut() {
            // PcapSink::packet flushes after every frame; write the parts ourselves so the
            // buffer takes the load, and flush once a second.
            p.packet_header(now, frame.len());
            let _ = p.write_all(frame);
            if flush {
                let _ = Write::flush(p);
            }
        }
        if flush {
            files.last_flush = Instant::now();
        }
    }
}

impl Default for LanLog {
    fn default() -> Self {
        LanLog::new()
    }
}

impl std::fmt::Debug for LanLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanLog").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_frames_go_to_the_open_directory() {
        let dir = tempfile::tempdir().unwrap();
        let log = LanLog::new();
        log.line("dns", "not written: nothing open yet");
        log.open(dir.path()).unwrap();
        log.line("dns", "A? mail.example.org");
        log.frame(&[0xff; 60]);
        log.close();
        let text = std::fs::read_to_string(dir.path().join("lan.log")).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("dns        A? mail.example.org"));
        let pcap = std::fs::read(dir.path().join("lan.pcap")).unwrap();
        assert_eq!(&pcap[..4], &0xa1b2c3d4u32.to_ne_bytes());
        assert_eq!(pcap.len(), 24 + 16 + 60);
    }
}
