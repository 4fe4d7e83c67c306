//! Checks for every answer the console accepts.
//!
//! Each check turns what the admin typed into a typed value or an [`Invalid`] whose text is shown
//! after `! ` before the question is asked again, so the text says what is wrong and what a
//! right answer looks like, in one line of at most 78 characters.

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use portcullis_delivery::{DomainPattern, HostPort};

/// Shortest admin password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest admin password accepted (argon2 takes more, but nobody types more on a serial line).
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Most name servers a resolv.conf uses (glibc's MAXNS).
pub const MAX_DNS_SERVERS: usize = 3;
/// Most NTP servers accepted.
pub const MAX_NTP_SERVERS: usize = 8;
/// The SMTP port used when the internal mail server is given without one.
pub const DEFAULT_SMTP_PORT: u16 = 25;

/// An answer that cannot be used; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid<T>(text: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(text.into()))
}

/// What the admin typed, in quotes for a message: control characters shown as `?` and cut so
/// the message still fits one line.
fn quoted(text: &str) -> String {
    const MAX: usize = 24;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.chars().count() <= MAX {
        format!("\"{clean}\"")
    } else {
        let head: String = clean.chars().take(MAX - 3).collect();
        format!("\"{head}...\"")
    }
}

/// Splits a list typed with commas and/or spaces.
fn items(text: &str) -> Vec<&str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The appliance's host name: one RFC 1123 label (letters, digits, hyphens), lower-cased.
pub fn hostname(text: &str) -> Result<String, Invalid> {
    let name = text.trim().to_ascii_lowercase();
    if name.contains('.') {
        return invalid("give the short name without dots, e.g. gw1");
    }
    if !is_label(&name) {
        return invalid("use 1-63 letters, digits and hyphens, not starting or ending with -");
    }
    Ok(name)
}

/// One DNS label: 1-63 ASCII letters, digits and hyphens, no hyphen at either end.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A fully written DNS name (`mail.example.org`, or one label), at most 253 characters.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_label)
}

/// How the appliance gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// From a DHCP server.
    Dhcp,
    /// Typed in: address, gateway, DNS servers.
    Static,
}

/// `dhcp` or `static` (or their first letter).
pub fn network_mode(text: &str) -> Result<NetworkMode, Invalid> {
    match text.trim().to_ascii_lowercase().as_str() {
        "dhcp" | "d" => Ok(NetworkMode::Dhcp),
        "static" | "s" => Ok(NetworkMode::Static),
        _ => invalid("answer dhcp or static"),
    }
}

/// The appliance's own address with its prefix length, e.g. `192.0.2.10/24` or `2001:db8::10/64`.
pub fn interface_address(text: &str) -> Result<IpNet, Invalid> {
    let text = text.trim();
    let Some((addr, prefix)) = text.split_once('/') else {
        return invalid("add the prefix length, e.g. 192.0.2.10/24");
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return invalid(format!("{} is not an IPv4 or IPv6 address", quoted(addr)));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix.parse::<u8>() {
        Ok(p) if (1..=max).contains(&p) => p,
        _ => {
            return invalid(format!(
                "the prefix length must be a number from 1 to {max}"
            ));
        }
    };
    let net = IpNet::new(ip, prefix).map_err(|_| Invalid("not a valid prefix".into()))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return invalid(format!("{ip} cannot be the appliance's address"));
    }
    if let IpNet::V4(v4) = net
        && prefix <= 30
        && (v4.addr() == v4.network() || v4.addr() == v4.broadcast())
    {
        return invalid(format!(
            "{ip} is the network or broadcast address of {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The default gateway: an address of the same family inside the appliance's subnet.
pub fn gateway(text: &str, own: &IpNet) -> Result<IpAddr, Invalid> {
    let text = text.trim();
    let Ok(ip) = text.parse::<IpAddr>() else {
        return invalid(format!("{} is not an IP address", quoted(text)));
    };
    if !own.contains(&ip) {
        return invalid(format!(
            "{ip} is outside the appliance's subnet {}",
            own.trunc()
        ));
    }
    if ip == own.addr() {
        return invalid("the gateway cannot be the appliance's own address");
    }
    if let IpNet::V4(v4) = own
        && own.prefix_len() <= 30
        && (IpAddr::V4(v4.network()) == ip || IpAddr::V4(v4.broadcast()) == ip)
    {
        return invalid(format!("{ip} is the network or broadcast address"));
    }
    Ok(ip)
}

/// One to three name servers as IP addresses, separated by commas or spaces.
pub fn dns_servers(text: &str) -> Result<Vec<IpAddr>, Invalid> {
    let list = items(text);
    if list.is_empty() {
        return invalid("give at least one DNS server address");
    }
    if list.len() > MAX_DNS_SERVERS {
        return invalid(format!("at most {MAX_DNS_SERVERS} DNS servers"));
    }
    let mut servers = Vec::new();
    for item in list {
        let Ok(ip) = item.parse::<IpAddr>() else {
            return invalid(format!("{} is not an IP address", quoted(item)));
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return invalid(format!("{ip} cannot be a DNS server"));
        }
        if !servers.contains(&ip) {
            servers.push(ip);
        }
    }
    Ok(servers)
}

/// An admin password: 10 to 128 characters, no control characters. Taken as typed (spaces at
/// either end count), because trimming would silently change it.
pub fn password(text: &str) -> Result<String, Invalid> {
    let chars = text.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return invalid(format!(
            "too short: use at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return invalid(format!(
            "too long: use at most {MAX_PASSWORD_CHARS} characters"
        ));
    }
    if text.chars().any(char::is_control) {
        return invalid("control characters are not allowed in the password");
    }
    Ok(text.to_string())
}

/// The internal mail server as `host[:port]` (port 25 when left out; IPv6 in brackets with a
/// port, or bare without one).
pub fn mail_server(text: &str) -> Result<HostPort, Invalid> {
    let text = text.trim();
    if text.is_empty() {
        return invalid("give the host name or address, e.g. 192.0.2.25 or mail.example.org:25");
    }
    let with_port = if let Ok(ip) = text.parse::<IpAddr>() {
        match ip {
            IpAddr::V4(v4) => format!("{v4}:{DEFAULT_SMTP_PORT}"),
            IpAddr::V6(v6) => format!("[{v6}]:{DEFAULT_SMTP_PORT}"),
        }
    } else if text.starts_with('[') && text.ends_with(']') {
        format!("{text}:{DEFAULT_SMTP_PORT}")
    } else if text.contains(':') {
        text.to_string()
    } else {
        format!("{text}:{DEFAULT_SMTP_PORT}")
    };
    let server = with_port.parse::<HostPort>().map_err(|_| {
        Invalid(format!(
            "{} is not host[:port], e.g. mail.example.org:25",
            quoted(text)
        ))
    })?;
    if server.host.parse::<IpAddr>().is_err() && !is_dns_name(&server.host) {
        return invalid(format!("{} is not a valid host name", quoted(&server.host)));
    }
    if server
        .ip()
        .is_some_and(|ip| ip.is_unspecified() || ip.is_multicast())
    {
        return invalid(format!("{} cannot be a mail server", server.host));
    }
    Ok(server)
}

/// Local domains: at least one, separated by commas or spaces; `*.example.org` stands for every
/// sub-domain. Lower-cased, trailing dots dropped, duplicates removed.
pub fn local_domains(text: &str) -> Result<Vec<String>, Invalid> {
    let list = items(text);
    if list.is_empty() {
        return invalid("give at least one domain, e.g. example.org");
    }
    let mut domains = Vec::new();
    for item in list {
        let lower = item.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let parent = name.strip_prefix("*.").unwrap_or(name);
        let plausible = is_dns_name(parent)
            && parent.contains('.')
            && !parent
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
        if !plausible || name.parse::<DomainPattern>().is_err() {
            return invalid(format!(
                "{} is not a domain like example.org or *.example.org",
                quoted(item)
            ));
        }
        let domain = name.to_string();
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(domains)
}

/// Networks allowed to relay through the appliance: CIDR networks or single addresses,
/// separated by commas or spaces. Host bits are cleared; the whole Internet is refused.
pub fn relay_networks(text: &str) -> Result<Vec<IpNet>, Invalid> {
    let list = items(text);
    if list.is_empty() {
        return invalid("give at least one network, e.g. 192.0.2.25/32");
    }
    let mut networks = Vec::new();
    for item in list {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return invalid(format!(
                        "{} is not a network like 192.0.2.0/24 or an address",
                        quoted(item)
                    ));
                }
            },
        };
        if net.prefix_len() == 0 {
            return invalid(format!(
                "{item} is the whole Internet: that makes an open relay"
            ));
        }
        if !networks.contains(&net) {
            networks.push(net);
        }
    }
    Ok(networks)
}

/// A time zone that exists in the time zone database at `zoneinfo` (`UTC` always exists).
pub fn timezone(text: &str, zoneinfo: &Path) -> Result<String, Invalid> {
    let name = text.trim();
    if name.eq_ignore_ascii_case("utc") {
        return Ok("UTC".into());
    }
    let well_formed = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        });
    if !well_formed || !is_zone_file(&zoneinfo.join(name)) {
        return invalid(format!(
            "unknown time zone {}; e.g. Europe/Berlin or UTC",
            quoted(name)
        ));
    }
    Ok(name.to_string())
}

/// A compiled zone (TZif magic), not a directory such as `Europe` or a table such as `zone.tab`.
fn is_zone_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"TZif"
}

/// NTP servers as host names or addresses, separated by commas or spaces; may be empty.
pub fn ntp_servers(text: &str) -> Result<Vec<String>, Invalid> {
    let list = items(text);
    if list.len() > MAX_NTP_SERVERS {
        return invalid(format!("at most {MAX_NTP_SERVERS} NTP servers"));
    }
    let mut servers = Vec::new();
    for item in list {
        let server = host(item)?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(servers)
}

/// A host to talk to: an IP address or a DNS name (never something that looks like an option).
pub fn host(text: &str) -> Result<String, Invalid> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if !text.starts_with('-') && is_dns_name(text) {
        return Ok(text.to_ascii_lowercase());
    }
    invalid(format!(
        "{} is not a host name or IP address, e.g. 192.0.2.1",
        quoted(text)
    ))
}

/// `y`/`yes` or `n`/`no`, any case.
pub fn yes_no(text: &str) -> Result<bool, Invalid> {
    match text.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(true),
        "n" | "no" => Ok(false),
        _ => invalid("answer y or n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<T: std::fmt::Debug>(r: Result<T, Invalid>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn hostname_accepts_one_label_and_lowercases_it() {
        assert_eq!(hostname("gw1").unwrap(), "gw1");
        assert_eq!(hostname(" Mail-GW ").unwrap(), "mail-gw");
        assert_eq!(hostname(&"a".repeat(63)).unwrap().len(), 63);
    }

    #[test]
    fn hostname_refuses_dots_hyphen_ends_bad_characters_and_overlong_labels() {
        assert!(msg(hostname("gw1.example.org")).contains("without dots"));
        for bad in ["", "-gw", "gw-", "gw_1", "gw 1", "gw!", &"a".repeat(64)] {
            assert!(hostname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn network_mode_takes_words_or_first_letters() {
        assert_eq!(network_mode("DHCP").unwrap(), NetworkMode::Dhcp);
        assert_eq!(network_mode("s").unwrap(), NetworkMode::Static);
        assert!(network_mode("manual").is_err());
    }

    #[test]
    fn interface_address_needs_a_prefix_and_a_usable_host_address() {
        assert_eq!(
            interface_address("192.0.2.10/24").unwrap().to_string(),
            "192.0.2.10/24"
        );
        assert_eq!(
            interface_address("2001:db8::10/64").unwrap().to_string(),
            "2001:db8::10/64"
        );
        assert!(interface_address("192.0.2.10/32").is_ok());
        assert!(msg(interface_address("192.0.2.10")).contains("prefix length"));
        assert!(msg(interface_address("192.0.2.10/33")).contains("1 to 32"));
        assert!(msg(interface_address("2001:db8::1/129")).contains("1 to 128"));
        assert!(interface_address("192.0.2.10/0").is_err());
        assert!(msg(interface_address("192.0.2.300/24")).contains("not an IPv4"));
        assert!(msg(interface_address("192.0.2.0/24")).contains("network or broadcast"));
        assert!(msg(interface_address("192.0.2.255/24")).contains("network or broadcast"));
        assert!(interface_address("127.0.0.1/8").is_err());
        assert!(interface_address("0.0.0.0/8").is_err());
        assert!(interface_address("224.0.0.1/4").is_err());
    }

    #[test]
    fn gateway_must_be_inside_the_subnet_and_not_the_box_itself() {
        let own = interface_address("192.0.2.10/24").unwrap();
        assert_eq!(
            gateway("192.0.2.1", &own).unwrap(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert!(msg(gateway("198.51.100.1", &own)).contains("outside the appliance's subnet"));
        assert!(msg(gateway("192.0.2.10", &own)).contains("own address"));
        assert!(msg(gateway("192.0.2.255", &own)).contains("broadcast"));
        assert!(gateway("2001:db8::1", &own).is_err(), "other family");
        assert!(msg(gateway("router", &own)).contains("not an IP address"));
        let own6 = interface_address("2001:db8::10/64").unwrap();
        assert!(gateway("2001:db8::1", &own6).is_ok());
    }

    #[test]
    fn dns_servers_are_one_to_three_addresses_in_any_separator() {
        assert_eq!(dns_servers("192.0.2.1").unwrap().len(), 1);
        assert_eq!(
            dns_servers("192.0.2.1, 192.0.2.2 2001:db8::53")
                .unwrap()
                .len(),
            3
        );
        assert_eq!(dns_servers("192.0.2.1 192.0.2.1").unwrap().len(), 1);
        assert!(msg(dns_servers("")).contains("at least one"));
        assert!(msg(dns_servers("1.1.1.1 1.0.0.1 8.8.8.8 8.8.4.4")).contains("at most 3"));
        assert!(msg(dns_servers("dns.example.org")).contains("not an IP address"));
        assert!(dns_servers("0.0.0.0").is_err());
    }

    #[test]
    fn password_needs_ten_characters_and_is_kept_exactly_as_typed() {
        assert_eq!(password(" ten chars ").unwrap(), " ten chars ");
        assert!(msg(password("short")).contains("at least 10"));
        assert!(password("ääääääääää").is_ok(), "10 characters, 20 bytes");
        assert!(msg(password(&"x".repeat(129))).contains("at most 128"));
        assert!(msg(password("with\ttab12345")).contains("control"));
    }

    #[test]
    fn mail_server_defaults_to_port_25_and_takes_names_and_ipv6() {
        let s = mail_server("192.0.2.25").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("192.0.2.25", 25));
        let s = mail_server("Mail.Example.org:2525").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("mail.example.org", 2525));
        assert_eq!(mail_server("2001:db8::25").unwrap().port, 25);
        assert_eq!(mail_server("[2001:db8::25]").unwrap().port, 25);
        assert_eq!(mail_server("[2001:db8::25]:587").unwrap().port, 587);
        for bad in [
            "",
            "192.0.2.25:0",
            "192.0.2.25:99999",
            "mail server",
            "host:port",
            "0.0.0.0",
            "-x",
        ] {
            assert!(mail_server(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn local_domains_accept_lists_and_wildcards_and_refuse_non_domains() {
        assert_eq!(
            local_domains("Example.org, *.example.org  example.net.").unwrap(),
            vec!["example.org", "*.example.org", "example.net"]
        );
        assert_eq!(local_domains("example.org example.org").unwrap().len(), 1);
        assert!(msg(local_domains("")).contains("at least one"));
        for bad in [
            "localhost",
            "exa mple",
            "*example.org",
            "a.*.example.org",
            "ex_ample.org",
            "192.0.2.1",
            "-x.org",
            "user@example.org",
        ] {
            assert!(local_domains(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn relay_networks_take_addresses_and_cidrs_but_never_the_whole_internet() {
        let n = relay_networks("192.0.2.25, 10.1.2.3/16 2001:db8::/48").unwrap();
        let shown: Vec<String> = n.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["192.0.2.25/32", "10.1.0.0/16", "2001:db8::/48"]);
        assert!(msg(relay_networks("0.0.0.0/0")).contains("open relay"));
        assert!(relay_networks("::/0").is_err());
        assert!(relay_networks("").is_err());
        assert!(relay_networks("mail.example.org").is_err());
    }

    #[test]
    fn timezone_must_exist_in_the_zoneinfo_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Europe")).unwrap();
        std::fs::write(dir.path().join("Europe/Berlin"), b"TZif2\0\0\0").unwrap();
        std::fs::write(dir.path().join("zone.tab"), b"# table").unwrap();
        assert_eq!(
            timezone("Europe/Berlin", dir.path()).unwrap(),
            "Europe/Berlin"
        );
        assert_eq!(timezone("utc", dir.path()).unwrap(), "UTC");
        for bad in [
            "Europe/Berln",
            "Europe",
            "zone.tab",
            "../etc/passwd",
            "/Europe/Berlin",
            "Europe//Berlin",
            "",
        ] {
            assert!(
                msg(timezone(bad, dir.path())).contains("unknown time zone"),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn ntp_servers_may_be_empty_or_names_and_addresses() {
        assert!(ntp_servers("").unwrap().is_empty());
        assert_eq!(
            ntp_servers("0.debian.pool.ntp.org, 192.0.2.123").unwrap(),
            vec!["0.debian.pool.ntp.org", "192.0.2.123"]
        );
        assert!(ntp_servers("ntp_server").is_err());
        assert!(ntp_servers(&"a ".repeat(9)).is_err());
    }

    #[test]
    fn host_refuses_option_lookalikes() {
        assert_eq!(host("192.0.2.1").unwrap(), "192.0.2.1");
        assert_eq!(host("Mail.Example.org").unwrap(), "mail.example.org");
        assert!(host("-f").is_err());
        assert!(host("a b").is_err());
        assert!(host("").is_err());
    }

    #[test]
    fn yes_no_reads_y_and_n_in_any_case() {
        assert!(yes_no("Y").unwrap());
        assert!(yes_no("yes").unwrap());
        assert!(!yes_no("n").unwrap());
        assert!(yes_no("maybe").is_err());
    }

    #[test]
    fn every_message_fits_one_serial_line() {
        let dir = tempfile::tempdir().unwrap();
        let own = interface_address("192.0.2.10/24").unwrap();
        let long = "x".repeat(40);
        let messages = [
            msg(hostname(&"x".repeat(70))),
            msg(interface_address(&format!("{long}/24"))),
            msg(gateway("198.51.100.1", &own)),
            msg(password("x")),
            msg(mail_server(&long.replace('x', " "))),
            msg(local_domains(&long)),
            msg(relay_networks(&long)),
            msg(timezone(&long, dir.path())),
            msg(host(&long.replace('x', "!"))),
        ];
        for m in messages {
            assert!(m.len() <= 78, "{} characters: {m}", m.len());
        }
    }
}
