//! The box's serial console, expect-style: wait for text (a literal or a regex) with a
//! deadline, type a line. Every byte received is saved to the current transcript file.
//!
//! Transports:
//! - QEMU: the harness listens on a unix socket and QEMU connects to it
//!   (`-chardev socket,id=…,path=P,server=off`), so not a byte of early boot output is lost,
//!   and it connects again after every restart (power cycle).
//! - A real box: a tty device (USB serial adapter, `/dev/ttyUSB0`) set to raw 8N1 at the
//!   given speed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use regex::bytes::Regex;

use crate::HilError;

/// Received bytes kept before the point of the last match are trimmed beyond this.
const KEEP_BEHIND: usize = 64 * 1024;
/// A match may start this far before the newest bytes already searched: patterns are lines
/// or prompts, far shorter.
const SEARCH_OVERLAP: usize = 4096;

/// What to wait for on the serial line.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// These exact bytes.
    Literal(String),
    /// A regular expression over the raw bytes (`(?m)` for line anchors).
    Regex(Regex),
}

impl Pattern {
    /// A literal pattern.
    pub fn literal(s: &str) -> Pattern {
        Pattern::Literal(s.to_string())
    }

    /// A regex pattern; the harness' own patterns are constants, so a bad one is a bug.
    pub fn regex(re: &str) -> Pattern {
        Pattern::Regex(Regex::new(re).unwrap_or_else(|e| panic!("bad pattern {re:?}: {e}")))
    }

    fn find(&self, hay: &[u8]) -> Option<(usize, usize, Vec<Option<String>>)> {
        match self {
            Pattern::Literal(s) => {
                let needle = s.as_bytes();
                if needle.is_empty() {
                    return Some((0, 0, Vec::new()));
                }
                hay.windows(needle.len())
                    .position(|w| w == needle)
                    .map(|p| (p, p + needle.len(), Vec::new()))
            }
            Pattern::Regex(re) => re.captures(hay).map(|c| {
                let m = c.get(0).expect("group 0 always matches");
                let groups = c
                    .iter()
                    .skip(1)
                    .map(|g| g.map(|g| String::from_utf8_lossy(g.as_bytes()).into_owned()))
                    .collect();
                (m.start(), m.end(), groups)
            }),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Literal(s) => write!(f, "{s:?}"),
            Pattern::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

/// A successful [`SerialLine::expect`].
#[derive(Debug, Clone)]
pub struct Match {
    /// The matched text.
    pub text: String,
    /// The regex's capture groups (empty for a literal).
    pub groups: Vec<Option<String>>,
    /// Everything received between the previous match and this one, the match included.
    pub before: String,
}

/// An expect-style serial line (see the module docs).
pub trait SerialLine: Send {
    /// Waits until `pattern` appears in what arrived since the last match; consumes up to
    /// the end of the match.
    fn expect(&mut self, pattern: &Pattern, timeout: Duration) -> Result<Match, HilError>;
    /// Waits for the first of several patterns; returns its index and the match.
    fn expect_any(
        &mut self,
        patterns: &[Pattern],
        timeout: Duration,
    ) -> Result<(usize, Match), HilError>;
    /// Types raw bytes.
    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError>;
    /// Types `line` and the line ending (what Enter sends on this rig).
    fn send_line(&mut self, line: &str) -> Result<(), HilError>;
    /// Forgets everything received so far: the next expect sees only new output.
    fn skip_pending(&mut self);
    /// Saves what arrives from now on to `path` (a new file).
    fn transcript_to(&mut self, path: &Path) -> Result<(), HilError>;
}

/// Where the console bytes come from.
#[derive(Debug, Clone)]
pub enum SerialSource {
    /// Listen on this unix socket for QEMU's chardev to connect (again after each restart).
    UnixListener(PathBuf),
    /// A tty device at this speed.
    Device {
        /// The device, e.g. `/dev/ttyUSB0`.
        path: PathBuf,
        /// Baud rate, e.g. 115200.
        baud: u32,
    },
}

struct Shared {
    received: Vec<u8>,
    /// Received bytes before this index have been consumed by a match.
    cursor: usize,
    /// Total bytes trimmed off the front of `received` (for diagnostics).
    trimmed: u64,
    transcript: Option<File>,
    writer: Option<Box<dyn Write + Send>>,
}

/// The serial console of one box (see the module docs). A reader thread moves bytes into a
/// buffer and the transcript as they arrive.
pub struct Console {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    line_ending: String,
    source: SerialSource,
}

impl Console {
    /// Opens `source`; Enter is `line_ending` (`"\r"` like a terminal; the box's tty turns it
    /// into a newline).
    pub fn open(source: SerialSource, line_ending: &str) -> Result<Console, HilError> {
        let shared = Arc::new((
            Mutex::new(Shared {
                received: Vec::new(),
                cursor: 0,
                trimmed: 0,
                transcript: None,
                writer: None,
            }),
            Condvar::new(),
        ));
        match &source {
            SerialSource::UnixListener(path) => {
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path).map_err(|e| {
                    HilError::io(
                        format!("listening for the serial console on {}", path.display()),
                        e,
                    )
                })?;
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name("serial-accept".into())
                    .spawn(move || accept_loop(listener, shared))
                    .map_err(|e| HilError::io("starting the serial thread", e))?;
            }
            SerialSource::Device { path, baud } => {
                let file = open_tty(path, *baud)?;
                let reader = file
                    .try_clone()
                    .map_err(|e| HilError::io(format!("duplicating {}", path.display()), e))?;
                shared.0.lock().expect("serial lock").writer = Some(Box::new(file));
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name("serial-read".into())
                    .spawn(move || read_loop(reader, shared))
                    .map_err(|e| HilError::io("starting the serial thread", e))?;
            }
        }
        Ok(Console {
            shared,
            line_ending: line_ending.to_string(),
            source,
        })
    }

    /// The source this console reads.
    pub fn source(&self) -> &SerialSource {
        &self.source
    }

    fn tail(buf: &[u8]) -> String {
        let start = buf.len().saturating_sub(1500);
        let text = String::from_utf8_lossy(&buf[start..]);
        text.replace('\r', "")
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<(Mutex<Shared>, Condvar)>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let Ok(writer) = conn.try_clone() else {
            continue;
        };
        shared.0.lock().expect("serial lock").writer = Some(Box::new(writer));
        read_loop(conn, shared.clone());
    }
}

fn read_loop(mut from: impl Read, shared: Arc<(Mutex<Shared>, Condvar)>) {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let (lock, cv) = &*shared;
                let mut s = lock.lock().expect("serial lock");
                s.received.extend_from_slice(&buf[..n]);
                if let Some(t) = s.transcript.as_mut() {
                    let _ = t.write_all(&buf[..n]);
                }
                cv.notify_all();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let mut s = shared.0.lock().expect("serial lock");
    s.writer = None;
}

impl SerialLine for Console {
    fn expect(&mut self, pattern: &Pattern, timeout: Duration) -> Result<Match, HilError> {
        self.expect_any(std::slice::from_ref(pattern), timeout)
            .map(|(_, m)| m)
    }

    fn expect_any(
        &mut self,
        patterns: &[Pattern],
        timeout: Duration,
    ) -> Result<(usize, Match), HilError> {
        let (lock, cv) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut s = lock.lock().expect("serial lock");
        let mut searched = s.cursor;
        loop {
            let from = searched.saturating_sub(SEARCH_OVERLAP).max(s.cursor);
            let hay = &s.received[from..];
            let best = patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.find(hay).map(|f| (i, f)))
                .min_by_key(|(_, (start, _, _))| *start);
            if let Some((i, (_, end, groups))) = best {
                let end = from + end;
                let before = String::from_utf8_lossy(&s.received[s.cursor..end]).into_owned();
                let text = {
                    let (_, (start, e, _)) = (i, patterns[i].find(hay).expect("found above"));
                    String::from_utf8_lossy(&hay[start..e]).into_owned()
                };
                s.cursor = end;
                if s.cursor > 2 * KEEP_BEHIND {
                    let cut = s.cursor - KEEP_BEHIND;
                    s.received.drain(..cut);
                    s.cursor -= cut;
                    s.trimmed += cut as u64;
                }
                return Ok((
                    i,
                    Match {
                        text,
                        groups,
                        before,
                    },
                ));
            }
            searched = s.received.len();
            let now = Instant::now();
            if now >= deadline {
                let what = patterns
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ");
                return Err(HilError::SerialTimeout {
                    what,
                    waited: timeout,
                    tail: Console::tail(&s.received[s.cursor..]),
                });
            }
            s = cv.wait_timeout(s, deadline - now).expect("serial lock").0;
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), HilError> {
        let mut s = self.shared.0.lock().expect("serial lock");
        let Some(w) = s.writer.as_mut() else {
            return Err(HilError::io(
                "typing on the serial console",
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the box's serial port is not connected (powered off?)",
                ),
            ));
        };
        w.write_all(bytes)
            .and_then(|_| w.flush())
            .map_err(|e| HilError::io("typing on the serial console", e))
    }

    fn send_line(&mut self, line: &str) -> Result<(), HilError> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(self.line_ending.as_bytes());
        self.send(&bytes)
    }

    fn skip_pending(&mut self) {
        let mut s = self.shared.0.lock().expect("serial lock");
        s.cursor = s.received.len();
    }

    fn transcript_to(&mut self, path: &Path) -> Result<(), HilError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HilError::io(format!("creating {}", dir.display()), e))?;
        }
        let file = File::create(path)
            .map_err(|e| HilError::io(format!("creating {}", path.display()), e))?;
        self.shared.0.lock().expect("serial lock").transcript = Some(file);
        Ok(())
    }
}

/// Opens a tty in raw 8N1 mode at `baud` (no echo, no line editing, no flow control).
fn open_tty(path: &Path, baud: u32) -> Result<File, HilError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| HilError::io(format!("opening serial device {}", path.display()), e))?;
    let speed = match baud {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        other => {
            return Err(HilError::io(
                format!("configuring {}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("unsupported speed {other}"),
                ),
            ));
        }
    };
    // SAFETY: termios calls on an open fd with a properly initialised struct.
    unsafe {
        let fd = file.as_raw_fd();
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(HilError::io(
                format!("reading the settings of {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        libc::cfmakeraw(&mut t);
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        t.c_cflag &= !(libc::CRTSCTS | libc::CSTOPB | libc::PARENB);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        libc::cfsetispeed(&mut t, speed);
        libc::cfsetospeed(&mut t, speed);
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(HilError::io(
                format!("configuring {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(file)
}

/// Connects to a console socket the way QEMU does (for tests and the self-test).
pub fn connect_like_qemu(path: &Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> (tempfile::TempDir, Console, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("serial.sock");
        let c = Console::open(SerialSource::UnixListener(sock.clone()), "\r").unwrap();
        (dir, c, sock)
    }

    #[test]
    fn expect_waits_for_text_split_across_writes_and_consumes_it() {
        let (dir, mut c, sock) = console();
        c.transcript_to(&dir.path().join("out/serial.log")).unwrap();
        let mut box_side = connect_like_qemu(&sock).unwrap();
        let writer = std::thread::spawn(move || {
            box_side
                .write_all(b"Booting...\r\nPortcullis first-")
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            box_side
                .write_all(b"boot setup\r\nHostname [portcullis]: ")
                .unwrap();
            box_side
        });
        let m = c
            .expect(
                &Pattern::literal("Portcullis first-boot setup"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(m.before.starts_with("Booting"));
        let m = c
            .expect(
                &Pattern::regex(r"(\w+) \[(\w*)\]: $"),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            m.groups,
            [Some("Hostname".into()), Some("portcullis".into())]
        );
        // Consumed: the same text is not found again.
        assert!(
            c.expect(&Pattern::literal("Hostname"), Duration::from_millis(100))
                .is_err()
        );
        let mut box_side = writer.join().unwrap();
        c.send_line("gw1").unwrap();
        let mut typed = [0u8; 4];
        box_side.read_exact(&mut typed).unwrap();
        assert_eq!(&typed, b"gw1\r");
        let log = std::fs::read(dir.path().join("out/serial.log")).unwrap();
        assert_eq!(
            log,
            b"Booting...\r\nPortcullis first-boot setup\r\nHostname [portcullis]: "
        );
    }

    #[test]
    fn a_timeout_reports_the_pattern_and_the_last_output() {
        let (_dir, mut c, sock) = console();
        let mut box_side = connect_like_qemu(&sock).unwrap();
        box_side
            .write_all(b"kernel panic - not syncing\r\n")
            .unwrap();
        let e = c
            .expect(&Pattern::literal("login"), Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"login\""), "{e}");
        assert!(e.contains("kernel panic"), "{e}");
    }

    #[test]
    fn the_earliest_of_several_patterns_wins_and_a_reconnect_keeps_reading() {
        let (_dir, mut c, sock) = console();
        connect_like_qemu(&sock)
            .unwrap()
            .write_all(b"first boot\r\n")
            .unwrap();
        c.expect(&Pattern::literal("first boot"), Duration::from_secs(5))
            .unwrap();
        let mut again = connect_like_qemu(&sock).unwrap();
        again.write_all(b"! bad address\r\nHostname: ").unwrap();
        let (i, m) = c
            .expect_any(
                &[
                    Pattern::literal("Hostname: "),
                    Pattern::regex(r"(?m)^! (.*)\r"),
                ],
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(i, 1);
        assert_eq!(m.groups[0].as_deref(), Some("bad address"));
        c.skip_pending();
        assert!(
            c.expect(&Pattern::literal("Hostname"), Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn typing_with_nothing_connected_says_the_box_is_not_there() {
        let (_dir, mut c, _sock) = console();
        let e = c.send_line("x").unwrap_err().to_string();
        assert!(e.contains("not connected"), "{e}");
    }
}
