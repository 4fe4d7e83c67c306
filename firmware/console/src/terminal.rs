//! The dumb terminal: questions, answers, messages, at most 80 columns, plain text only.
//!
//! Input is read from standard input as lines. On a real terminal the line discipline does the
//! editing and the echo; passwords are read with echo off. Ctrl-C does not kill the console: the
//! SIGINT handler only raises a flag, the blocked read returns, and the question being asked ends
//! with [`InputError::Interrupted`], so the caller decides what "cancel" means there (the wizard
//! writes nothing, the menu goes back to its list). When standard input is a pipe, nothing
//! echoes, so the console ends each answered prompt with a line break itself.

use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::validate::{Invalid, yes_no};

/// Width of the terminal the console is made for (a serial console, VT100-like).
pub const WIDTH: usize = 80;
/// Longest answer kept; anything longer is cut (no question needs more).
const MAX_LINE: usize = 4096;

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The admin pressed Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// Standard input ended (Ctrl-D, or the pipe closed).
    #[error("end of input")]
    Closed,
    /// Reading or writing the terminal failed.
    #[error("terminal: {0}")]
    Io(#[from] io::Error),
}

/// Set by the SIGINT handler, taken by the next read.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_signal: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C (SIGINT) interrupt the current question instead of killing the console.
///
/// Installed without `SA_RESTART`, so a read blocked on the terminal returns `EINTR` and the
/// question ends at once. Children (ping) still get SIGINT from the terminal and stop normally.
pub fn install_interrupt_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
    // stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = 0;
        if libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Forgets a Ctrl-C pressed while nothing was being asked (during an apply or a ping).
pub fn forget_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Where answers come from.
pub trait LineInput {
    /// The next line, without its line ending.
    fn read_line(&mut self) -> Result<String, InputError>;
    /// Turns the terminal echo off (`false`) or back on (`true`); nothing when not a terminal.
    fn set_echo(&mut self, on: bool) -> io::Result<()>;
    /// Whether what the admin types shows on the screen without our help.
    fn echoes(&self) -> bool;
}

/// Standard input: a terminal (serial line, pty) or a pipe.
pub struct StdinInput {
    is_terminal: bool,
    pending: Vec<u8>,
    closed: bool,
    saved_termios: Option<libc::termios>,
}

impl StdinInput {
    /// Reads the process's standard input.
    pub fn new() -> StdinInput {
        StdinInput {
            is_terminal: io::stdin().is_terminal(),
            pending: Vec::new(),
            closed: false,
            saved_termios: None,
        }
    }

    fn take_line(&mut self, end: usize) -> String {
        let mut line: Vec<u8> = self.pending.drain(..end).collect();
        if self.pending.first() == Some(&b'\n') {
            self.pending.remove(0);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

impl Default for StdinInput {
    fn default() -> Self {
        StdinInput::new()
    }
}

impl LineInput for StdinInput {
    fn read_line(&mut self) -> Result<String, InputError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                return Ok(self.take_line(end));
            }
            if self.pending.len() >= MAX_LINE || (self.closed && !self.pending.is_empty()) {
                let end = self.pending.len().min(MAX_LINE);
                return Ok(self.take_line(end));
            }
            if self.closed {
                return Err(InputError::Closed);
            }
            if take_interrupt() {
                self.pending.clear();
                return Err(InputError::Interrupted);
            }
            let mut chunk = [0u8; 512];
            match io::stdin().lock().read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                // EINTR: the loop looks at the Ctrl-C flag before reading again.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(InputError::Io(e)),
            }
        }
    }

    fn set_echo(&mut self, on: bool) -> io::Result<()> {
        if !self.is_terminal {
            return Ok(());
        }
        if on {
            if let Some(saved) = self.saved_termios.take() {
                // SAFETY: fd 0 is a terminal and `saved` came from tcgetattr on it.
                if unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            return Ok(());
        }
        if self.saved_termios.is_some() {
            return Ok(());
        }
        // SAFETY: termios is plain data; tcgetattr fills it for the terminal on fd 0.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut termios) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = termios;
        // No echo, but the Enter still moves to the next line (ECHONL).
        termios.c_lflag &= !libc::ECHO;
        termios.c_lflag |= libc::ECHONL;
        // TCSANOW, not TCSAFLUSH: an answer typed ahead must not be thrown away.
        // SAFETY: as above; `termios` is a modified copy of the terminal's own settings.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &termios) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.saved_termios = Some(saved);
        Ok(())
    }

    fn echoes(&self) -> bool {
        self.is_terminal
    }
}

impl Drop for StdinInput {
    fn drop(&mut self) {
        let _ = self.set_echo(true);
    }
}

/// Text from outside (command output, SMTP replies, error messages) made safe for a dumb
/// terminal: no escape sequences or other control characters, tabs as spaces.
pub fn plain(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\r')
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// Breaks `line` into pieces of at most `width` characters, at spaces where possible; pieces
/// after the first start with `indent`.
pub fn wrap(line: &str, width: usize, indent: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest: Vec<char> = line.trim_end().chars().collect();
    let mut prefix = String::new();
    loop {
        let room = width.saturating_sub(prefix.chars().count()).max(1);
        if rest.len() <= room {
            pieces.push(format!("{prefix}{}", rest.iter().collect::<String>()));
            return pieces;
        }
        let cut = rest[..=room]
            .iter()
            .rposition(|&c| c == ' ')
            .filter(|&i| i > 0)
            .unwrap_or(room);
        let head: String = rest[..cut].iter().collect();
        pieces.push(format!("{prefix}{}", head.trim_end()));
        let skip = rest[cut..].iter().take_while(|&&c| c == ' ').count();
        rest.drain(..cut + skip);
        prefix = indent.to_string();
    }
}

/// The console's terminal: asks questions, shows answers' problems, prints messages.
pub struct Terminal {
    input: Box<dyn LineInput>,
    out: Box<dyn Write>,
}

impl Terminal {
    /// A terminal reading `input` and writing `out`.
    pub fn new(input: Box<dyn LineInput>, out: Box<dyn Write>) -> Terminal {
        Terminal { input, out }
    }

    /// Prints `text` (any number of lines), each line cut to 80 columns at spaces.
    pub fn say(&mut self, text: &str) -> io::Result<()> {
        for line in plain(text).split('\n') {
            for piece in wrap(line, WIDTH, "  ") {
                writeln!(self.out, "{piece}")?;
            }
        }
        self.out.flush()
    }

    /// Prints `! <problem>`: what is wrong with an answer or an action.
    pub fn problem(&mut self, problem: &str) -> io::Result<()> {
        for piece in wrap(
            &format!("! {}", plain(problem).replace('\n', " ")),
            WIDTH,
            "  ",
        ) {
            writeln!(self.out, "{piece}")?;
        }
        self.out.flush()
    }

    fn prompt(&mut self, label: &str, default: Option<&str>) -> io::Result<()> {
        match default {
            Some(d) => write!(self.out, "{label} [{d}]: ")?,
            None => write!(self.out, "{label}: ")?,
        }
        self.out.flush()
    }

    fn end_answer(&mut self) -> io::Result<()> {
        if !self.input.echoes() {
            writeln!(self.out)?;
            self.out.flush()?;
        }
        Ok(())
    }

    /// Reads one line after `label: ` without checking it (trimmed).
    pub fn read_answer(
        &mut self,
        label: &str,
        default: Option<&str>,
    ) -> Result<String, InputError> {
        self.prompt(label, default)?;
        let line = self.input.read_line();
        self.end_answer()?;
        let line = line?;
        let answer = line.trim();
        Ok(match default {
            Some(d) if answer.is_empty() => d.to_string(),
            _ => answer.to_string(),
        })
    }

    /// Asks `label [default]: ` until `check` accepts the answer (an empty answer means the
    /// default); each refusal prints `! <why>`.
    pub fn ask<T>(
        &mut self,
        label: &str,
        default: Option<&str>,
        mut check: impl FnMut(&str) -> Result<T, Invalid>,
    ) -> Result<T, InputError> {
        loop {
            let answer = self.read_answer(label, default)?;
            match check(&answer) {
                Ok(value) => return Ok(value),
                Err(Invalid(why)) => self.problem(&why)?,
            }
        }
    }

    /// Reads one line with the terminal echo off (exactly as typed, not trimmed).
    pub fn read_secret(&mut self, label: &str) -> Result<String, InputError> {
        // Echo goes off before the prompt shows, so an answer typed right after it never echoes.
        self.input.set_echo(false)?;
        let answer = self
            .prompt(label, None)
            .map_err(InputError::Io)
            .and_then(|()| {
                let line = self.input.read_line();
                self.end_answer()?;
                line
            });
        let restored = self.input.set_echo(true);
        let answer = answer?;
        restored?;
        Ok(answer)
    }

    /// Asks for a new password twice with echo off until it passes `check` and both match.
    pub fn ask_new_password(
        &mut self,
        label: &str,
        check: impl Fn(&str) -> Result<String, Invalid>,
    ) -> Result<String, InputError> {
        loop {
            let first = self.read_secret(label)?;
            if let Err(Invalid(why)) = check(&first) {
                self.problem(&why)?;
                continue;
            }
            let second = self.read_secret(&format!("{label} again"))?;
            if first == second {
                return Ok(first);
            }
            self.problem("the two passwords differ; enter them again")?;
        }
    }

    /// Asks `label [y/N]: `; only y/yes says yes.
    pub fn confirm(&mut self, label: &str) -> Result<bool, InputError> {
        self.ask(label, Some("y/N"), |answer| {
            if answer == "y/N" {
                Ok(false)
            } else {
                yes_no(answer)
            }
        })
    }

    /// Waits for Enter (so output is read before the menu scrolls it away).
    pub fn pause(&mut self) -> Result<(), InputError> {
        self.read_answer("Press Enter to return to the menu", None)
            .map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod scripted {
    //! A terminal driven by a script of answers, recording everything shown.

    use std::collections::VecDeque;
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    use super::{InputError, LineInput};

    /// One step of the script.
    #[derive(Debug, Clone)]
    pub(crate) enum Step {
        /// An answer typed and Enter.
        Line(String),
        /// Ctrl-C.
        Interrupt,
    }

    /// Answers from a script; the input ends after the last step.
    pub(crate) struct ScriptedInput {
        steps: VecDeque<Step>,
        pub(crate) echo_off_reads: Arc<Mutex<Vec<bool>>>,
        echo_on: bool,
    }

    impl ScriptedInput {
        pub(crate) fn new(steps: Vec<Step>) -> ScriptedInput {
            ScriptedInput {
                steps: steps.into(),
                echo_off_reads: Arc::default(),
                echo_on: true,
            }
        }
    }

    impl LineInput for ScriptedInput {
        fn read_line(&mut self) -> Result<String, InputError> {
            self.echo_off_reads.lock().unwrap().push(!self.echo_on);
            match self.steps.pop_front() {
                Some(Step::Line(l)) => Ok(l),
                Some(Step::Interrupt) => Err(InputError::Interrupted),
                None => Err(InputError::Closed),
            }
        }
        fn set_echo(&mut self, on: bool) -> io::Result<()> {
            self.echo_on = on;
            Ok(())
        }
        fn echoes(&self) -> bool {
            false
        }
    }

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    pub(crate) struct Screen(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Screen {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines from plain strings; `"^C"` stands for Ctrl-C.
    pub(crate) fn script(lines: &[&str]) -> Vec<Step> {
        lines
            .iter()
            .map(|l| match *l {
                "^C" => Step::Interrupt,
                l => Step::Line(l.to_string()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::{Screen, ScriptedInput, script};
    use super::*;
    use crate::validate::hostname;

    fn terminal(lines: &[&str]) -> (Terminal, Screen) {
        let screen = Screen::default();
        let t = Terminal::new(
            Box::new(ScriptedInput::new(script(lines))),
            Box::new(screen.clone()),
        );
        (t, screen)
    }

    #[test]
    fn ask_shows_the_default_retries_after_a_wrong_answer_and_takes_the_default_on_empty() {
        let (mut t, screen) = terminal(&["-bad-", "", "gw2"]);
        assert_eq!(
            t.ask("Hostname", Some("portcullis"), hostname).unwrap(),
            "portcullis"
        );
        assert_eq!(t.ask("Hostname", None, hostname).unwrap(), "gw2");
        let text = screen.text();
        assert!(
            text.starts_with("Hostname [portcullis]: \n! use 1-63"),
            "{text}"
        );
        assert_eq!(text.matches("Hostname [portcullis]: ").count(), 2);
        assert!(text.ends_with("Hostname: \n"), "{text}");
    }

    #[test]
    fn ask_reports_ctrl_c_and_end_of_input() {
        let (mut t, _) = terminal(&["^C"]);
        assert!(matches!(
            t.ask("Hostname", None, hostname),
            Err(InputError::Interrupted)
        ));
        assert!(matches!(
            t.ask("Hostname", None, hostname),
            Err(InputError::Closed)
        ));
    }

    #[test]
    fn new_password_is_read_with_echo_off_twice_and_must_match() {
        let screen = Screen::default();
        let input = ScriptedInput::new(script(&[
            "short",
            "0123456789",
            "0123456780",
            " 0123456789",
            " 0123456789",
        ]));
        let echo_off = input.echo_off_reads.clone();
        let mut t = Terminal::new(Box::new(input), Box::new(screen.clone()));
        let pw = t
            .ask_new_password("Password", crate::validate::password)
            .unwrap();
        assert_eq!(pw, " 0123456789", "kept exactly as typed");
        assert!(echo_off.lock().unwrap().iter().all(|&off| off));
        let text = screen.text();
        assert!(text.contains("! too short"), "{text}");
        assert!(text.contains("! the two passwords differ"), "{text}");
        assert!(!text.contains("0123456789"), "{text}");
    }

    #[test]
    fn confirm_defaults_to_no() {
        let (mut t, screen) = terminal(&["", "what", "y"]);
        assert!(!t.confirm("Apply these settings?").unwrap());
        assert!(t.confirm("Apply these settings?").unwrap());
        assert!(
            screen.text().starts_with("Apply these settings? [y/N]: \n"),
            "{}",
            screen.text()
        );
    }

    #[test]
    fn say_wraps_long_lines_and_strips_escape_sequences() {
        let (mut t, screen) = terminal(&[]);
        let long = format!("{} {}", "word ".repeat(30), "x".repeat(100));
        t.say(&format!("\x1b[31mred\x1b[0m\r\n{long}")).unwrap();
        t.problem(&"because ".repeat(20)).unwrap();
        let text = screen.text();
        assert!(!text.contains('\x1b'));
        assert!(text.starts_with("?[31mred?[0m\n"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        let joined: String = text.split_whitespace().collect();
        assert!(joined.contains(&"x".repeat(100)), "nothing lost: {text}");
        assert!(text.contains("\n! because"), "{text}");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_splits_words_longer_than_a_line() {
        assert_eq!(wrap("aaa bbb ccc", 7, " "), ["aaa bbb", " ccc"]);
        assert_eq!(wrap("abcdefghij", 4, ""), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 80, ""), [""]);
    }
}
