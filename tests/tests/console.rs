//! The serial console (`portcullis console`) driven the way the serial line drives it: the real
//! binary in a pseudo-terminal (line discipline, echo, Ctrl-C as SIGINT), with `--dry-run` so no
//! system command runs and `--root` pointing at a temporary data root.
//!
//! The checks are on what an admin and the disk image rely on: the contract strings on the
//! line, the files written (the gateway accepts the config, the hash verifies with the
//! reference argon2 implementation, the networkd file), the menu on a second run, and that an
//! aborted setup writes nothing. The only network traffic is a loopback SMTP peer.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_e2e::cli::binary;
use portcullis_e2e::process::{die_with_parent, run_bounded, wait_timeout};

/// Longest wait for any one piece of output (a debug build hashes a password in about a second).
const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "Tr0ub4dor&3 horse";

/// The harness's answers from the contract (gw1, 192.0.2.10/24 via 192.0.2.1, …).
fn contract_answers() -> Vec<&'static str> {
    vec![
        "gw1",
        "static",
        "192.0.2.10/24",
        "192.0.2.1",
        "192.0.2.1",
        PASSWORD,
        PASSWORD,
        "192.0.2.25:25",
        "example.org",
        "",
        "UTC",
        "",
        "y",
    ]
}

/// `portcullis console` on the slave side of a pty, its output collected from the master.
struct Console {
    child: Child,
    master: File,
    /// Kept open so the terminal settings can be read after the child is gone.
    slave: Option<OwnedFd>,
    output: Arc<Mutex<String>>,
    seen: usize,
}

impl Console {
    fn start(root: &Path, zoneinfo: &Path) -> Console {
        let mut master_fd = -1;
        let mut slave_fd = -1;
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills the two descriptors; name and termios may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let mut command = Command::new(binary());
        command
            .args(["console", "--dry-run", "--root"])
            .arg(root)
            .arg("--zoneinfo")
            .arg(zoneinfo)
            .env("TERM", "dumb")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        die_with_parent(&mut command);
        // SAFETY: setsid and ioctl are async-signal-safe; they make the pty the child's
        // controlling terminal so ^C reaches it as SIGINT, as on the serial line.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start portcullis console");
        drop(command);
        let output = Arc::new(Mutex::new(String::new()));
        let mut reader = File::from(master.try_clone().unwrap());
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once no slave descriptor is left.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                sink.lock().unwrap().push_str(&text);
            }
        });
        Console {
            child,
            master: File::from(master),
            slave: Some(slave),
            output,
            seen: 0,
        }
    }

    fn transcript(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for `needle` after what was already matched; returns the text up to its end.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let out = self.output.lock().unwrap();
                if let Some(at) = out[self.seen..].find(needle) {
                    let end = self.seen + at + needle.len();
                    let text = out[self.seen..end].to_string();
                    self.seen = end;
                    return text;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the console within {WAIT:?}; it showed:\n{}",
                portcullis_e2e::process::tail(&self.transcript()[self.seen..], 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `line` and Enter (CR, as a terminal sends it).
    fn send(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .expect("write to the pty");
    }

    /// Answers the prompt that follows with `answer`.
    fn answer(&mut self, prompt: &str, answer: &str) -> String {
        let shown = self.expect(prompt);
        self.send(answer);
        shown
    }

    fn ctrl(&mut self, key: u8) {
        self.master.write_all(&[key]).expect("write to the pty");
    }

    fn echo_is_on(&self) -> bool {
        let fd = self.slave.as_ref().unwrap().as_raw_fd();
        // SAFETY: termios is plain data filled by tcgetattr for our own pty.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
        t.c_lflag & libc::ECHO != 0
    }

    fn exit_code(&mut self) -> Option<i32> {
        let status = wait_timeout(&mut self.child, WAIT).expect("console did not exit");
        status.code()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.slave.take();
    }
}

/// A time zone database with one zone (the test machine may have no tzdata).
fn zoneinfo(dir: &Path) -> PathBuf {
    let z = dir.join("zoneinfo");
    std::fs::create_dir_all(z.join("Europe")).unwrap();
    std::fs::write(z.join("Europe/Berlin"), b"TZif2\0\0\0\0").unwrap();
    z
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file below `dir`, relative.
fn files_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Whether `password` matches `hash` according to argon2-cffi (the reference C implementation).
fn argon2_verifies(hash: &str, password: &str) -> bool {
    let script = "import sys\ntry:\n    import argon2\nexcept ImportError:\n    sys.exit(3)\n\
                  try:\n    argon2.PasswordHasher().verify(sys.argv[1], sys.argv[2])\nexcept argon2.exceptions.VerifyMismatchError:\n    sys.exit(1)\n";
    let run = run_bounded(
        Command::new(portcullis_e2e::python()).args(["-c", script, hash, password]),
        WAIT,
    );
    assert_ne!(
        run.status,
        Some(3),
        "python module argon2 missing: pip install argon2-cffi (tests/run installs it)"
    );
    assert!(
        matches!(run.status, Some(0 | 1)),
        "argon2 check failed: {run:?}"
    );
    run.status == Some(0)
}

/// The stored admin password hash of the config at `root`.
fn stored_hash(root: &Path) -> String {
    let config: toml::Value = read(root.join("config/portcullis.toml")).parse().unwrap();
    config["console"]["admin_password_hash"]
        .as_str()
        .expect("console.admin_password_hash")
        .to_string()
}

fn check_config(root: &Path) {
    let run = run_bounded(
        Command::new(binary())
            .arg("check-config")
            .arg("--config")
            .arg(root.join("config/portcullis.toml")),
        WAIT,
    );
    assert_eq!(
        run.status,
        Some(0),
        "portcullis check-config refused it: {run:?}"
    );
}

/// Runs the setup through a pipe (no terminal at all) with the contract's answers.
fn set_up_through_a_pipe(root: &Path, zoneinfo: &Path) -> String {
    let mut child = die_with_parent(
        Command::new(binary())
            .args(["console", "--dry-run", "--root"])
            .arg(root)
            .arg("--zoneinfo")
            .arg(zoneinfo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .spawn()
    .unwrap();
    let mut input = contract_answers().join("\n");
    input.push('\n');
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut output = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_to_string(&mut output)
        .unwrap();
    assert_eq!(
        wait_timeout(&mut child, WAIT).and_then(|s| s.code()),
        Some(0),
        "{output}"
    );
    output
}

/// A loopback SMTP server for one session; returns its address and the lines it got.
fn smtp_peer() -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut got = Vec::new();
        stream
            .write_all(b"220 internal.example.org ESMTP test peer\r\n")
            .unwrap();
        for reply in [
            "250-internal.example.org\r\n250 SIZE 1000000\r\n",
            "221 bye\r\n",
        ] {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            got.push(line.trim_end().to_string());
            stream.write_all(reply.as_bytes()).unwrap();
        }
        got
    });
    (address, handle)
}

#[test]
fn first_boot_wizard_retries_wrong_answers_then_writes_a_setup_the_gateway_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut c = Console::start(&root, &zoneinfo(dir.path()));

    c.expect("Portcullis first-boot setup");
    c.answer("Hostname [portcullis]: ", "gw_1");
    let retry = c.answer("Hostname [portcullis]: ", "gw1");
    assert!(
        retry.contains("\n! "),
        "no `! ` line before the retry: {retry:?}"
    );
    c.answer("Network: dhcp or static [dhcp]: ", "static");
    c.answer("IP address/prefix, e.g. 192.0.2.10/24: ", "192.0.2.10");
    let retry = c.answer("IP address/prefix, e.g. 192.0.2.10/24: ", "192.0.2.10/24");
    assert!(retry.contains("! add the prefix length"), "{retry:?}");
    c.answer("Default gateway: ", "198.51.100.1");
    let retry = c.answer("Default gateway: ", "192.0.2.1");
    assert!(
        retry.contains("! 198.51.100.1 is outside the appliance's subnet"),
        "{retry:?}"
    );
    c.answer("DNS servers [192.0.2.1]: ", "192.0.2.1");
    c.answer("Admin password: ", "too short");
    let retry = c.answer("Admin password: ", PASSWORD);
    assert!(retry.contains("! too short"), "{retry:?}");
    c.answer("Admin password again: ", PASSWORD);
    c.expect("Internal mail server (host or host:port): ");
    assert!(c.echo_is_on(), "echo is back on after the password");
    c.send("192.0.2.25");
    c.answer(
        "Local domains to accept mail for: ",
        "example.org, *.example.org",
    );
    c.answer("Networks allowed to relay [192.0.2.25/32]: ", "");
    c.answer("Time zone [UTC]: ", "Europe/Berln");
    let retry = c.answer("Time zone [UTC]: ", "Europe/Berlin");
    assert!(retry.contains("! unknown time zone"), "{retry:?}");
    c.answer("NTP servers (empty for none): ", "");
    let summary = c.answer("Apply these settings? [y/N]: ", "y");
    assert!(
        summary.contains("Internal server:  192.0.2.25:25"),
        "{summary}"
    );
    let applied = c.expect("Setup complete.");
    for command in [
        "would run: systemctl start portcullis-system.service",
        "would run: systemctl --no-block restart portcullis.service",
    ] {
        assert!(applied.contains(command), "{command:?} missing:\n{applied}");
    }
    // Straight on to the menu.
    c.answer("Choose [1-9]: ", "7");
    c.answer("Reboot now? [y/N]: ", "y");
    c.expect("would run: systemctl reboot");
    c.expect("Choose [1-9]: ");
    c.ctrl(0x04); // Ctrl-D: end of input
    assert_eq!(c.exit_code(), Some(0));

    let transcript = c.transcript();
    assert!(
        !transcript.contains(PASSWORD),
        "the password was echoed:\n{transcript}"
    );
    assert!(
        !transcript.contains("too short\n"),
        "the short password was echoed"
    );
    assert!(
        !transcript.contains('\x1b'),
        "escape sequences on a dumb terminal"
    );
    for line in transcript.lines() {
        assert!(
            line.chars().count() <= 80,
            "longer than 80 columns: {line:?}"
        );
    }

    assert_eq!(
        files_below(&root),
        [
            "config/portcullis.toml",
            "system/hostname",
            "system/network/10-portcullis.network",
            "system/ntp",
            "system/resolv.conf",
            "system/setup-complete",
            "system/timezone",
        ]
    );
    check_config(&root);
    let config = read(root.join("config/portcullis.toml"));
    for expected in [
        "listen = [\"0.0.0.0:25\"]",
        "local_domains = [\"example.org\", \"*.example.org\"]",
        "relay_networks = [\"192.0.2.25/32\"]",
        "[[delivery.routes]]\ndomain = \"example.org\"\nhosts = [\"192.0.2.25:25\"]",
        "servers = [\"192.0.2.1:53\"]",
        "device = \"/dev/watchdog0\"",
    ] {
        assert!(config.contains(expected), "{expected:?} missing:\n{config}");
    }
    assert!(!config.contains(PASSWORD));
    let hash = stored_hash(&root);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(argon2_verifies(&hash, PASSWORD), "the hash does not verify");
    assert!(!argon2_verifies(&hash, "too short"));
    let network = read(root.join("system/network/10-portcullis.network"));
    assert!(
        network.contains(
            "[Match]\nName=en* eth*\n\n[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.1\n"
        ),
        "{network}"
    );
    assert_eq!(read(root.join("system/hostname")), "gw1\n");
    assert_eq!(read(root.join("system/timezone")), "Europe/Berlin\n");
    assert_eq!(read(root.join("system/ntp")), "\n");
    assert!(read(root.join("system/resolv.conf")).contains("nameserver 192.0.2.1\n"));
    let finished = read(root.join("system/setup-complete"));
    assert!(
        finished.starts_with("20") && finished.ends_with("Z\n"),
        "{finished:?}"
    );
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("config/portcullis.toml"),
        0o600,
        "the hash is root's only"
    );
    assert_eq!(mode("system/network/10-portcullis.network"), 0o644);
}

#[test]
fn after_setup_the_console_shows_the_menu_and_its_items_act() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let zones = zoneinfo(dir.path());
    let piped = set_up_through_a_pipe(&root, &zones);
    assert!(piped.contains("Setup complete."), "{piped}");
    let first_hash = stored_hash(&root);

    let mut c = Console::start(&root, &zones);
    let menu = c.expect("Choose [1-9]: ");
    assert!(!menu.contains("first-boot setup"), "{menu}");
    assert!(menu.contains("Portcullis console - gw1"), "{menu}");
    assert!(
        menu.contains("Network: static 192.0.2.10/24 via 192.0.2.1"),
        "{menu}"
    );

    c.send("1");
    let status = c.answer("Press Enter to return to the menu: ", "");
    for expected in [
        "Host name:        gw1",
        "would run: ip -brief address show",
        "would run: systemctl is-active portcullis.service",
        "Mail gateway:     no answer: the gateway is not running",
    ] {
        assert!(status.contains(expected), "{expected:?} missing:\n{status}");
    }

    let (peer, peer_lines) = smtp_peer();
    c.answer("Choose [1-9]: ", "4");
    c.answer("Mail server to test [192.0.2.25:25]: ", &peer);
    let smtp = c.answer("Press Enter to return to the menu: ", "");
    assert!(
        smtp.contains("< 220 internal.example.org ESMTP test peer"),
        "{smtp}"
    );
    assert!(smtp.contains("> EHLO gw1"), "{smtp}");
    assert!(smtp.contains("< 221 bye"), "{smtp}");
    assert!(smtp.contains("SMTP test passed"), "{smtp}");
    assert_eq!(peer_lines.join().unwrap(), ["EHLO gw1", "QUIT"]);

    c.answer("Choose [1-9]: ", "3");
    c.answer("Host to ping: ", "127.0.0.1");
    let ping = c.answer("Press Enter to return to the menu: ", "");
    assert!(
        ping.contains("would run: ping -c 3 -W 2 127.0.0.1"),
        "{ping}"
    );

    c.answer("Choose [1-9]: ", "5");
    c.answer("New admin password: ", "a new admin password");
    c.answer("New admin password again: ", "a new admin password");
    c.expect("Admin password changed.");
    let new_hash = stored_hash(&root);
    assert_ne!(new_hash, first_hash);
    assert!(argon2_verifies(&new_hash, "a new admin password"));

    c.answer("Choose [1-9]: ", "2");
    c.answer("Network: dhcp or static [static]: ", "dhcp");
    c.answer("Apply these settings? [y/N]: ", "y");
    c.expect("would run: systemctl start portcullis-system.service");
    c.expect("would run: systemctl --no-block reload-or-restart portcullis.service");
    c.expect("Network settings applied.");
    assert!(read(root.join("system/network/10-portcullis.network")).contains("DHCP=yes"));
    assert!(!root.join("system/resolv.conf").exists());
    check_config(&root);
    assert!(!read(root.join("config/portcullis.toml")).contains("192.0.2.1:53"));

    c.answer("Choose [1-9]: ", "6");
    c.answer(
        "Type the host name (gw1) or yes to erase everything: ",
        "gw1",
    );
    c.expect("would run: systemctl stop portcullis.service");
    c.expect("would run: systemctl reboot");
    assert!(
        files_below(&root).is_empty(),
        "left: {:?}",
        files_below(&root)
    );
    // Without setup-complete the same session is back at the wizard.
    c.expect("Portcullis first-boot setup");
    c.expect("Hostname [portcullis]: ");
    c.ctrl(0x03);
    c.expect("Setup cancelled; nothing was changed.");
    assert_eq!(c.exit_code(), Some(1));
    assert!(files_below(&root).is_empty());
}

#[test]
fn ctrl_c_during_the_wizard_writes_nothing_and_turns_echo_back_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut c = Console::start(&root, &zoneinfo(dir.path()));
    for (prompt, answer) in [
        ("Hostname [portcullis]: ", "gw1"),
        ("Network: dhcp or static [dhcp]: ", "static"),
        ("IP address/prefix, e.g. 192.0.2.10/24: ", "192.0.2.10/24"),
        ("Default gateway: ", "192.0.2.1"),
        ("DNS servers [192.0.2.1]: ", ""),
    ] {
        c.answer(prompt, answer);
    }
    c.expect("Admin password: ");
    // The console turns echo off before it prints the prompt.
    assert!(!c.echo_is_on(), "echo is on at the password prompt");
    c.ctrl(0x03);
    c.expect("Setup cancelled; nothing was changed.");
    assert_eq!(c.exit_code(), Some(1));
    assert!(
        c.echo_is_on(),
        "echo left off after Ctrl-C at the password prompt"
    );
    assert!(
        !root.exists(),
        "written despite Ctrl-C: {:?}",
        files_below(&root)
    );
}
