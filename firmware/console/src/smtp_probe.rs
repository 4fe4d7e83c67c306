//! "Test SMTP to the internal server": connect, read the banner, EHLO, QUIT, showing each line.
//!
//! It proves the path the gateway will deliver local mail on (address, port, firewall, a server
//! that speaks SMTP) without sending a message.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use portcullis_delivery::HostPort;

/// Longest wait for the connection and for each reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most lines of one multi-line reply read before giving up on the server.
const MAX_REPLY_LINES: usize = 100;
/// Longest reply line kept (RFC 5321 allows 512 octets).
const MAX_REPLY_LINE: usize = 1000;

/// One line of the conversation, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeLine {
    /// Something the probe did (`connected to …`).
    Note(String),
    /// A line the probe sent.
    Sent(String),
    /// A line the server sent.
    Received(String),
}

/// What failed, as the admin needs to hear it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The host name did not resolve.
    #[error("cannot resolve {server}: {reason}")]
    Resolve {
        /// `host:port`.
        server: String,
        /// Why.
        reason: String,
    },
    /// No TCP connection.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// `host:port` or the address tried.
        server: String,
        /// Why (refused, timed out, no route).
        reason: String,
    },
    /// The server went silent, closed or sent garbage at some step.
    #[error("no usable reply to {step}: {reason}")]
    Reply {
        /// `the banner`, `EHLO`, `QUIT`.
        step: &'static str,
        /// Why.
        reason: String,
    },
    /// The server answered with a code that is not the success code.
    #[error("{step} was answered {code}, expected {expected}: {text}")]
    Refused {
        /// `the banner`, `EHLO`.
        step: &'static str,
        /// The code received.
        code: u16,
        /// The code wanted.
        expected: u16,
        /// The reply text (first line).
        text: String,
    },
}

/// Talks to `server` as a mail client would up to EHLO, then says QUIT. Each line is handed to
/// `show` as it happens; `helo` is the name given in EHLO.
pub fn probe(
    server: &HostPort,
    helo: &str,
    timeout: Duration,
    show: &mut dyn FnMut(ProbeLine),
) -> Result<(), ProbeError> {
    let target = server.to_string();
    let addresses: Vec<SocketAddr> = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(|e| ProbeError::Resolve {
            server: target.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for address in addresses {
        show(ProbeLine::Note(format!("connecting to {address}")));
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| ProbeError::Connect {
        server: target.clone(),
        reason: last_error
            .map(|e| e.to_string())
            .unwrap_or_else(|| "the name has no addresses".into()),
    })?;
    let io_reason = |e: std::io::Error| e.to_string();
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| ProbeError::Connect {
            server: target.clone(),
            reason: io_reason(e),
        })?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| ProbeError::Connect {
            server: target.clone(),
            reason: io_reason(e),
        })?;
    show(ProbeLine::Note(format!("connected to {target}")));
    let mut writer = stream.try_clone().map_err(|e| ProbeError::Connect {
        server: target.clone(),
        reason: io_reason(e),
    })?;
    let mut reader = BufReader::new(stream);

    expect(&mut reader, "the banner", 220, show)?;
    send(&mut writer, &format!("EHLO {helo}"), "EHLO", show)?;
    expect(&mut reader, "EHLO", 250, show)?;
    send(&mut writer, "QUIT", "QUIT", show)?;
    // A server that drops the line after QUIT without 221 is sloppy, not broken for delivery.
    if let Err(e) = expect(&mut reader, "QUIT", 221, show) {
        show(ProbeLine::Note(format!("after QUIT: {e}")));
    }
    Ok(())
}

fn send(
    writer: &mut TcpStream,
    line: &str,
    step: &'static str,
    show: &mut dyn FnMut(ProbeLine),
) -> Result<(), ProbeError> {
    show(ProbeLine::Sent(line.to_string()));
    writer
        .write_all(format!("{line}\r\n").as_bytes())
        .map_err(|e| ProbeError::Reply {
            step,
            reason: format!("sending failed: {e}"),
        })
}

/// Reads one (possibly multi-line) reply and checks its code.
fn expect(
    reader: &mut BufReader<TcpStream>,
    step: &'static str,
    expected: u16,
    show: &mut dyn FnMut(ProbeLine),
) -> Result<(), ProbeError> {
    let reply_error = |reason: String| ProbeError::Reply { step, reason };
    let mut first_text = None;
    for _ in 0..MAX_REPLY_LINES {
        let mut raw = Vec::new();
        let n = std::io::Read::take(&mut *reader, MAX_REPLY_LINE as u64)
            .read_until(b'\n', &mut raw)
            .map_err(|e| {
                reply_error(
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) {
                        "the server did not answer in time".into()
                    } else {
                        e.to_string()
                    },
                )
            })?;
        if n == 0 {
            return Err(reply_error("the server closed the connection".into()));
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        show(ProbeLine::Received(line.clone()));
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| reply_error(format!("not an SMTP reply: {line:?}")))?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        first_text.get_or_insert_with(|| line.get(4..).unwrap_or("").to_string());
        if !more {
            if code != expected {
                return Err(ProbeError::Refused {
                    step,
                    code,
                    expected,
                    text: first_text.unwrap_or_default(),
                });
            }
            return Ok(());
        }
    }
    Err(reply_error(format!(
        "more than {MAX_REPLY_LINES} reply lines"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A loopback server that plays `script`: each entry is sent after reading one line (the
    /// first is the banner, sent at once). Returns its address and the lines it received.
    fn server(script: &'static [&'static str]) -> (HostPort, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            for (i, reply) in script.iter().enumerate() {
                if i > 0 {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    received.push(line.trim_end().to_string());
                }
                if !reply.is_empty() {
                    s.write_all(reply.as_bytes()).unwrap();
                }
            }
            received
        });
        (format!("127.0.0.1:{port}").parse().unwrap(), handle)
    }

    fn run(server: &HostPort) -> (Result<(), ProbeError>, Vec<ProbeLine>) {
        let mut lines = Vec::new();
        let r = probe(server, "gw1", Duration::from_secs(2), &mut |l| {
            lines.push(l)
        });
        (r, lines)
    }

    #[test]
    fn a_working_server_gets_ehlo_and_quit_and_every_line_is_shown() {
        let (addr, handle) = server(&[
            "220 mail.example.org ESMTP\r\n",
            "250-mail.example.org\r\n250 PIPELINING\r\n",
            "221 bye\r\n",
        ]);
        let (result, lines) = run(&addr);
        result.unwrap();
        assert_eq!(handle.join().unwrap(), ["EHLO gw1", "QUIT"]);
        let received: Vec<_> = lines
            .iter()
            .filter_map(|l| match l {
                ProbeLine::Received(r) => Some(r.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            received,
            [
                "220 mail.example.org ESMTP",
                "250-mail.example.org",
                "250 PIPELINING",
                "221 bye"
            ]
        );
        assert!(lines.contains(&ProbeLine::Sent("EHLO gw1".into())));
    }

    #[test]
    fn a_refusing_banner_is_reported_with_its_code_and_text() {
        let (addr, _handle) = server(&["554 no service here\r\n"]);
        let (result, _) = run(&addr);
        let e = result.unwrap_err().to_string();
        assert_eq!(
            e,
            "the banner was answered 554, expected 220: no service here"
        );
    }

    #[test]
    fn a_refused_ehlo_is_reported() {
        let (addr, _handle) = server(&["220 hi\r\n", "502 no EHLO\r\n", ""]);
        let e = run(&addr).0.unwrap_err().to_string();
        assert!(e.starts_with("EHLO was answered 502, expected 250"), "{e}");
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: HostPort = format!("127.0.0.1:{port}").parse().unwrap();
        let e = run(&addr).0.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot connect to 127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[test]
    fn a_silent_server_times_out_at_the_banner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: HostPort = listener.local_addr().unwrap().to_string().parse().unwrap();
        let keep = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1];
            let _ = s.read(&mut buf);
        });
        let mut lines = Vec::new();
        let e = probe(&addr, "gw1", Duration::from_millis(300), &mut |l| {
            lines.push(l)
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "no usable reply to the banner: the server did not answer in time"
        );
        drop(keep);
    }

    #[test]
    fn a_server_closing_right_away_is_reported() {
        let (addr, _handle) = server(&[""]);
        let e = run(&addr).0.unwrap_err().to_string();
        assert_eq!(
            e,
            "no usable reply to the banner: the server closed the connection"
        );
    }
}
