//! The SMTP command parser (RFC 5321 §4.1, with the ESMTP parameters we advertise).
//!
//! The parser only checks syntax; whether a command is allowed now is the session's business.

use std::fmt;
use std::str::FromStr;

use crate::SmtpError;
use crate::reply::Reply;

/// The longest mailbox we accept: 64 octets of local part, `@`, 255 octets of domain (RFC 5321 §4.5.3.1).
const MAX_ADDRESS_LENGTH: usize = 320;

/// A forward- or reverse-path. `address` is "" for the null sender `<>`. Source routes (`<@a,@b:u@c>`) are parsed,
/// `source_route` is set and `address` holds only the mailbox so the handler can reject it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path {
    /// The mailbox `local-part@domain` as the client wrote it (quotes kept), or "" for `<>`.
    pub address: String,
    /// The client used an obsolete source route (RFC 5321 §4.1.2 says to ignore it; the handler may refuse).
    pub source_route: bool,
}

impl Path {
    /// The null reverse-path `<>` used by bounces.
    pub fn null() -> Path {
        Path::default()
    }

    /// True for the null reverse-path `<>`.
    pub fn is_null(&self) -> bool {
        self.address.is_empty()
    }

    /// True when the address is plain ASCII; a non-ASCII address needs the SMTPUTF8 parameter (RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.address.is_ascii()
    }

    /// The part after the last `@`, or "" (the null path, or `<postmaster>` without a domain).
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for Path {
    /// The path in angle brackets, as it would be sent in MAIL FROM or RCPT TO.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.address)
    }
}

impl FromStr for Path {
    type Err = SmtpError;

    /// Parses `<mailbox>`, `<>` or a source-routed path; a bare mailbox without brackets is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, rest) = split_path(s.trim()).ok_or_else(|| SmtpError::BadPath(s.to_string()))?;
        if !rest.trim().is_empty() {
            return Err(SmtpError::BadPath(s.to_string()));
        }
        parse_path(path, PathKind::Reverse).ok_or_else(|| SmtpError::BadPath(s.to_string()))
    }
}

/// The declared body type of the message (RFC 6152 BODY= parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The parameters of MAIL FROM that we advertise: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// The client's estimate of the message size in bytes (`SIZE=`); saturates at `u64::MAX` for absurd values.
    pub size: Option<u64>,
    /// The declared body type (`BODY=`).
    pub body: Option<BodyType>,
    /// The client asked for SMTPUTF8 (internationalised addresses and headers).
    pub smtputf8: bool,
}

/// One parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`: the client speaks ESMTP.
    Ehlo(String),
    /// `HELO domain`: plain SMTP.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail {
        /// The reverse-path.
        from: Path,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path>` (no RCPT parameters are supported).
    Rcpt {
        /// The forward-path.
        to: Path,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030): `size` octets of message content follow the command line.
    Bdat {
        /// The number of content octets following the command line.
        size: u64,
        /// This is the final chunk of the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH ...`: recognised only so that it can be refused politely; AUTH is not offered.
    Auth,
}

/// Why a command line could not be parsed. Each variant maps to the reply the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The verb is not an SMTP command we know.
    #[error("command not recognized: {0}")]
    UnknownCommand(String),
    /// An HTTP or proxy verb: someone is abusing the SMTP port, the session is closed.
    #[error("{0} is a web or proxy command, not SMTP")]
    ForbiddenCommand(String),
    /// Control characters or invalid UTF-8 in a command line.
    #[error("invalid characters in command")]
    InvalidCharacters,
    /// The arguments do not match the command's syntax.
    #[error("syntax: {0}")]
    Syntax(&'static str),
    /// A BDAT line without a valid chunk size: the chunk boundary is lost, so the session must be closed.
    #[error("syntax: BDAT size [LAST]")]
    BadChunk,
    /// The MAIL FROM path is malformed.
    #[error("bad sender address syntax")]
    BadSender,
    /// The RCPT TO path is malformed.
    #[error("bad recipient address syntax")]
    BadRecipient,
    /// A parameter we do not support or did not advertise.
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
    /// A supported parameter with a bad or repeated value.
    #[error("invalid parameter {0}")]
    BadParameter(String),
}

impl ParseError {
    /// The reply to send for this error (RFC 5321 §4.2.3 basic code, RFC 3463 enhanced code).
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::UnknownCommand(_) => Reply::new(500, "5.5.2", "command not recognized"),
            ParseError::ForbiddenCommand(_) => Reply::new(
                521,
                "5.7.0",
                "this is an SMTP server, not a web proxy; closing connection",
            ),
            ParseError::InvalidCharacters => {
                Reply::new(500, "5.5.2", "invalid characters in command")
            }
            ParseError::Syntax(usage) => Reply::new(501, "5.5.4", format!("syntax: {usage}")),
            ParseError::BadChunk => Reply::new(
                501,
                "5.5.4",
                "syntax: BDAT size [LAST]; chunk boundary lost, closing connection",
            ),
            ParseError::BadSender => Reply::new(501, "5.1.7", "bad sender address syntax"),
            ParseError::BadRecipient => Reply::new(501, "5.1.3", "bad recipient address syntax"),
            ParseError::UnknownParameter(p) => {
                Reply::new(555, "5.5.4", format!("unsupported parameter {p}"))
            }
            ParseError::BadParameter(p) => {
                Reply::new(501, "5.5.4", format!("invalid parameter {p}"))
            }
        }
    }

    /// The session cannot continue after this error (the reply is followed by closing the connection).
    pub fn closes_session(&self) -> bool {
        matches!(self, ParseError::ForbiddenCommand(_) | ParseError::BadChunk)
    }
}

/// Parses one command line, without its trailing CRLF.
pub fn parse(line: &str) -> Result<Command, ParseError> {
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::InvalidCharacters);
    }
    let line = line.trim_matches(|c| c == ' ' || c == '\t');
    let (verb, args) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    let verb_upper = verb.to_ascii_uppercase();
    match verb_upper.as_str() {
        "EHLO" => Ok(Command::Ehlo(helo_argument(args, "EHLO hostname")?)),
        "HELO" => Ok(Command::Helo(helo_argument(args, "HELO hostname")?)),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_arguments(args, Command::Data, "DATA"),
        "BDAT" => parse_bdat(args),
        "RSET" => no_arguments(args, Command::Rset, "RSET"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arguments(args, Command::Quit, "QUIT"),
        "HELP" => Ok(Command::Help((!args.is_empty()).then(|| args.to_string()))),
        "VRFY" if args.is_empty() => Err(ParseError::Syntax("VRFY address")),
        "VRFY" => Ok(Command::Vrfy(args.to_string())),
        "EXPN" if args.is_empty() => Err(ParseError::Syntax("EXPN list")),
        "EXPN" => Ok(Command::Expn(args.to_string())),
        "STARTTLS" => no_arguments(args, Command::StartTls, "STARTTLS"),
        "AUTH" => Ok(Command::Auth),
        // Browsers and open-proxy scanners: answering them as SMTP would only prolong the abuse.
        "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "OPTIONS" => {
            Err(ParseError::ForbiddenCommand(verb_upper))
        }
        _ => Err(ParseError::UnknownCommand(verb.chars().take(32).collect())),
    }
}

fn no_arguments(args: &str, command: Command, usage: &'static str) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(ParseError::Syntax(usage))
    }
}

fn helo_argument(args: &str, usage: &'static str) -> Result<String, ParseError> {
    match args.split([' ', '\t']).next() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(ParseError::Syntax(usage)),
    }
}

/// Strips a case-insensitive keyword such as `FROM:`; a space after the colon is tolerated because common
/// clients send one.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| args[keyword.len()..].trim_start_matches(' '))
}

fn parse_mail(args: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(args, "FROM:")
        .ok_or(ParseError::Syntax("MAIL FROM:<address> [parameters]"))?;
    let (path, params) = split_path(rest).ok_or(ParseError::BadSender)?;
    let from = parse_path(path, PathKind::Reverse).ok_or(ParseError::BadSender)?;
    let params = parse_mail_params(params)?;
    Ok(Command::Mail { from, params })
}

fn parse_rcpt(args: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(args, "TO:").ok_or(ParseError::Syntax("RCPT TO:<address>"))?;
    let (path, params) = split_path(rest).ok_or(ParseError::BadRecipient)?;
    let to = parse_path(path, PathKind::Forward).ok_or(ParseError::BadRecipient)?;
    if let Some(param) = params.split([' ', '\t']).find(|p| !p.is_empty()) {
        return Err(ParseError::UnknownParameter(param_keyword(param)));
    }
    Ok(Command::Rcpt { to })
}

fn parse_bdat(args: &str) -> Result<Command, ParseError> {
    let mut words = args.split([' ', '\t']).filter(|w| !w.is_empty());
    let size = words.next().ok_or(ParseError::BadChunk)?;
    if size.is_empty() || size.len() > 19 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadChunk);
    }
    let size: u64 = size.parse().map_err(|_| ParseError::BadChunk)?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::BadChunk),
    };
    if words.next().is_some() {
        return Err(ParseError::BadChunk);
    }
    Ok(Command::Bdat { size, last })
}

fn param_keyword(param: &str) -> String {
    param
        .split('=')
        .next()
        .unwrap_or("")
        .chars()
        .take(32)
        .collect::<String>()
        .to_ascii_uppercase()
}

fn parse_mail_params(text: &str) -> Result<MailParams, ParseError> {
    let mut params = MailParams::default();
    for param in text.split([' ', '\t']).filter(|p| !p.is_empty()) {
        let (keyword, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        let valid_keyword = keyword
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && keyword
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_keyword {
            return Err(ParseError::BadParameter(param.chars().take(32).collect()));
        }
        let keyword = keyword.to_ascii_uppercase();
        let bad = || ParseError::BadParameter(keyword.clone());
        match (keyword.as_str(), value) {
            ("SIZE", Some(v)) if params.size.is_none() => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                // A number too large for u64 is certainly over any limit; saturate so the size check answers 552.
                params.size = Some(v.parse().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) if params.body.is_none() => {
                params.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                    BodyType::SevenBit
                } else if v.eq_ignore_ascii_case("8BITMIME") {
                    BodyType::EightBitMime
                } else {
                    return Err(ParseError::UnknownParameter(format!(
                        "BODY={}",
                        v.chars().take(16).collect::<String>()
                    )));
                });
            }
            ("SMTPUTF8", None) if !params.smtputf8 => params.smtputf8 = true,
            ("SIZE" | "BODY" | "SMTPUTF8", _) => return Err(bad()),
            _ => return Err(ParseError::UnknownParameter(keyword)),
        }
    }
    Ok(params)
}

/// Whether the path is a reverse-path (MAIL FROM, may be `<>`) or a forward-path (RCPT TO, may be `<postmaster>`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Reverse,
    Forward,
}

/// Splits `<path> rest` into the text inside the brackets and the rest. A `>` inside a quoted local part does not
/// end the path. Without brackets, the path is the first word (lenient, as many MTAs are).
fn split_path(input: &str) -> Option<(&str, &str)> {
    let Some(inner) = input.strip_prefix('<') else {
        let end = input.find([' ', '\t']).unwrap_or(input.len());
        let word = &input[..end];
        if word.is_empty() || word.contains(['<', '>']) {
            return None;
        }
        return Some((word, &input[end..]));
    };
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == '>' && !in_quotes {
            let rest = &inner[i + 1..];
            // Parameters must be separated from the path by a space.
            if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
                return None;
            }
            return Some((&inner[..i], rest));
        }
    }
    None
}

fn parse_path(text: &str, kind: PathKind) -> Option<Path> {
    if text.is_empty() {
        return (kind == PathKind::Reverse).then(Path::null);
    }
    if kind == PathKind::Forward && text.eq_ignore_ascii_case("postmaster") {
        return Some(Path {
            address: text.to_string(),
            source_route: false,
        });
    }
    let (mailbox, source_route) = if text.starts_with('@') {
        (strip_source_route(text)?, true)
    } else {
        (text, false)
    };
    if mailbox.len() > MAX_ADDRESS_LENGTH || !valid_mailbox(mailbox) {
        return None;
    }
    Some(Path {
        address: mailbox.to_string(),
        source_route,
    })
}

/// Removes `@one,@two:` from the front, checking each route domain.
fn strip_source_route(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        rest = rest.strip_prefix('@')?;
        let end = domain_end(rest)?;
        if !valid_domain(&rest[..end]) {
            return None;
        }
        match rest[end..].chars().next()? {
            ',' => rest = &rest[end + 1..],
            ':' => return Some(&rest[end + 1..]),
            _ => return None,
        }
    }
}

/// Where a route domain ends: at `,` or `:`, except inside an address literal (IPv6 literals contain `:`).
fn domain_end(text: &str) -> Option<usize> {
    if text.starts_with('[') {
        return text.find(']').map(|i| i + 1);
    }
    text.find([',', ':'])
}

fn valid_mailbox(mailbox: &str) -> bool {
    let Some((local, domain)) = split_mailbox(mailbox) else {
        return false;
    };
    valid_local_part(local) && valid_domain(domain)
}

/// Splits at the `@` that follows the local part (a quoted local part may itself contain `@`).
fn split_mailbox(mailbox: &str) -> Option<(&str, &str)> {
    if mailbox.starts_with('"') {
        let mut escaped = false;
        for (i, c) in mailbox.char_indices().skip(1) {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                let rest = &mailbox[i + 1..];
                return rest
                    .strip_prefix('@')
                    .map(|domain| (&mailbox[..=i], domain));
            }
        }
        return None;
    }
    mailbox.rsplit_once('@')
}

fn valid_local_part(local: &str) -> bool {
    if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        let mut escaped = false;
        for c in quoted.chars() {
            if escaped {
                if !(' '..='~').contains(&c) {
                    return false;
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || (c.is_ascii() && !(' '..='~').contains(&c)) {
                return false;
            }
        }
        return !escaped;
    }
    !local.is_empty() && local.chars().all(|c| is_atext(c) || c == '.')
}

/// RFC 5322 atext, plus any non-ASCII character (RFC 6531 UTF-8 local parts).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn valid_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > 255 {
        return false;
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let Some(inner) = literal.strip_suffix(']') else {
            return false;
        };
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| (33..=126).contains(&b) && !b"[]\\".contains(&b));
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || c == '-'
                    || c == '_'
                    || (!c.is_ascii() && !c.is_control())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(line: &str) -> (Path, MailParams) {
        match parse(line) {
            Ok(Command::Mail { from, params }) => (from, params),
            other => panic!("expected MAIL, got {other:?}"),
        }
    }

    fn rcpt(line: &str) -> Result<Path, ParseError> {
        parse(line).map(|c| match c {
            Command::Rcpt { to } => to,
            other => panic!("expected RCPT, got {other:?}"),
        })
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            parse("ehlo client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(
            parse("HeLo client").unwrap(),
            Command::Helo("client".into())
        );
        assert_eq!(parse("data").unwrap(), Command::Data);
        assert_eq!(parse("Quit").unwrap(), Command::Quit);
        assert_eq!(parse("starttls").unwrap(), Command::StartTls);
        assert_eq!(parse("NOOP whatever").unwrap(), Command::Noop);
    }

    #[test]
    fn ehlo_without_a_name_is_a_syntax_error() {
        assert_eq!(parse("EHLO").unwrap_err().reply().code, 501);
        assert_eq!(parse("EHLO   ").unwrap_err().reply().code, 501);
    }

    #[test]
    fn mail_from_parses_address_and_parameters() {
        let (from, params) = mail("MAIL FROM:<Alice@Example.COM> SIZE=1000 BODY=8bitmime SMTPUTF8");
        assert_eq!(from.address, "Alice@Example.COM");
        assert!(!from.source_route);
        assert_eq!(
            params,
            MailParams {
                size: Some(1000),
                body: Some(BodyType::EightBitMime),
                smtputf8: true
            }
        );
    }

    #[test]
    fn mail_from_accepts_the_null_sender_and_a_space_after_the_colon() {
        let (from, params) = mail("MAIL FROM: <>");
        assert!(from.is_null());
        assert_eq!(params, MailParams::default());
    }

    #[test]
    fn source_route_is_flagged_and_stripped() {
        let (from, _) = mail("MAIL FROM:<@relay.one,@[10.0.0.1]:user@example.com>");
        assert_eq!(from.address, "user@example.com");
        assert!(from.source_route);
        let to = rcpt("RCPT TO:<@[IPv6:2001:db8::1]:bob@example.org>").unwrap();
        assert_eq!(to.address, "bob@example.org");
        assert!(to.source_route);
    }

    #[test]
    fn quoted_local_part_may_contain_specials() {
        let to = rcpt(r#"RCPT TO:<"john > doe\"@x"@example.com>"#).unwrap();
        assert_eq!(to.address, r#""john > doe\"@x"@example.com"#);
        assert_eq!(to.domain(), "example.com");
    }

    #[test]
    fn address_literals_are_accepted() {
        assert_eq!(
            rcpt("RCPT TO:<user@[192.0.2.1]>").unwrap().address,
            "user@[192.0.2.1]"
        );
    }

    #[test]
    fn utf8_addresses_parse_and_report_non_ascii() {
        let to = rcpt("RCPT TO:<jösé@bücher.example>").unwrap();
        assert!(!to.is_ascii());
    }

    #[test]
    fn rcpt_to_postmaster_without_domain_is_accepted() {
        assert_eq!(rcpt("RCPT TO:<Postmaster>").unwrap().address, "Postmaster");
        assert_eq!(
            rcpt("RCPT TO:<someone>").unwrap_err(),
            ParseError::BadRecipient
        );
    }

    #[test]
    fn null_recipient_is_rejected() {
        assert_eq!(
            rcpt("RCPT TO:<>").unwrap_err().reply().to_string(),
            "501 5.1.3 bad recipient address syntax"
        );
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for line in [
            "MAIL FROM:<user@>",
            "MAIL FROM:<@example.com>",
            "MAIL FROM:<user@exa mple.com>",
            "MAIL FROM:<us er@example.com>",
            "MAIL FROM:<user@example..com>",
            "MAIL FROM:<user@example.com",
            "MAIL FROM:<user@example.com>SIZE=1",
            "MAIL FROM:<\"unterminated@example.com>",
        ] {
            assert_eq!(parse(line).unwrap_err(), ParseError::BadSender, "{line}");
        }
    }

    #[test]
    fn bare_address_without_brackets_is_tolerated() {
        let (from, _) = mail("MAIL FROM:user@example.com");
        assert_eq!(from.address, "user@example.com");
    }

    #[test]
    fn unknown_mail_parameters_get_555() {
        let reply = parse("MAIL FROM:<a@b.example> RET=HDRS")
            .unwrap_err()
            .reply();
        assert_eq!(reply.to_string(), "555 5.5.4 unsupported parameter RET");
        assert_eq!(
            parse("MAIL FROM:<a@b.example> BODY=BINARYMIME")
                .unwrap_err()
                .reply()
                .code,
            555
        );
        assert_eq!(
            parse("RCPT TO:<a@b.example> NOTIFY=NEVER")
                .unwrap_err()
                .reply()
                .code,
            555
        );
    }

    #[test]
    fn repeated_or_malformed_parameters_get_501() {
        assert_eq!(
            parse("MAIL FROM:<a@b.example> SIZE=1 SIZE=2")
                .unwrap_err()
                .reply()
                .code,
            501
        );
        assert_eq!(
            parse("MAIL FROM:<a@b.example> SIZE=ten")
                .unwrap_err()
                .reply()
                .code,
            501
        );
        assert_eq!(
            parse("MAIL FROM:<a@b.example> SMTPUTF8=yes")
                .unwrap_err()
                .reply()
                .code,
            501
        );
    }

    #[test]
    fn oversized_size_parameter_saturates() {
        let (_, params) = mail("MAIL FROM:<a@b.example> SIZE=99999999999999999999999999");
        assert_eq!(params.size, Some(u64::MAX));
    }

    #[test]
    fn bdat_parses_size_and_last() {
        assert_eq!(
            parse("BDAT 100").unwrap(),
            Command::Bdat {
                size: 100,
                last: false
            }
        );
        assert_eq!(
            parse("bdat 0 last").unwrap(),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 10 FIRST",
            "BDAT 10 LAST more",
            "BDAT 99999999999999999999",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err, ParseError::BadChunk, "{bad}");
            assert!(err.closes_session());
        }
    }

    #[test]
    fn control_characters_in_commands_are_rejected() {
        assert_eq!(
            parse("MAIL FROM:<a@b.example>\0").unwrap_err(),
            ParseError::InvalidCharacters
        );
        assert_eq!(parse("NOOP \r").unwrap_err(), ParseError::InvalidCharacters);
    }

    #[test]
    fn web_requests_are_forbidden_commands() {
        let err = parse("GET / HTTP/1.1").unwrap_err();
        assert!(err.closes_session());
        assert_eq!(err.reply().code, 521);
    }

    #[test]
    fn unknown_verbs_get_500() {
        assert_eq!(
            parse("XYZZY").unwrap_err().reply().to_string(),
            "500 5.5.2 command not recognized"
        );
    }

    #[test]
    fn commands_without_arguments_refuse_extra_text() {
        assert_eq!(parse("DATA now").unwrap_err().reply().code, 501);
        assert_eq!(parse("QUIT please").unwrap_err().reply().code, 501);
    }

    #[test]
    fn path_from_str_round_trips_through_display() {
        let path: Path = "<user@example.com>".parse().unwrap();
        assert_eq!(path.to_string(), "<user@example.com>");
        assert!("<user@example.com> extra".parse::<Path>().is_err());
    }
}
