//! Relay control: which recipients a client may send to.
//!
//! The rule is the classic one: anyone may send to our local domains; only clients in the
//! relay networks may send anywhere else. Everything else is `554 5.7.1 relay access denied`,
//! so the box is never an open relay, whatever else is misconfigured.

use std::net::IpAddr;

use ipnet::IpNet;
use portcullis_smtp::Reply;

/// A domain or a `*.domain` wildcard, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatcher {
    /// Exactly this domain.
    Exact(String),
    /// Any sub-domain of this domain (not the domain itself).
    SubdomainsOf(String),
}

impl DomainMatcher {
    /// Parses `example.com` or `*.example.com`; `None` if it is not a plausible domain.
    pub fn parse(s: &str) -> Option<DomainMatcher> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
            });
        if !valid {
            return None;
        }
        Some(if wild {
            DomainMatcher::SubdomainsOf(name)
        } else {
            DomainMatcher::Exact(name)
        })
    }

    /// Whether `domain` (already lower-cased) matches.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainMatcher::Exact(d) => domain == d,
            DomainMatcher::SubdomainsOf(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// The relay decision for one recipient.
#[derive(Debug, Clone)]
pub struct RelayPolicy {
    local_domains: Vec<DomainMatcher>,
    relay_networks: Vec<IpNet>,
    reject_chars: Vec<char>,
}

impl RelayPolicy {
    /// Builds the policy from validated configuration values.
    pub fn new(
        local_domains: &[String],
        relay_networks: &[IpNet],
        reject_chars: &str,
    ) -> RelayPolicy {
        RelayPolicy {
            local_domains: local_domains
                .iter()
                .filter_map(|d| DomainMatcher::parse(d))
                .collect(),
            relay_networks: relay_networks.to_vec(),
            reject_chars: reject_chars.chars().collect(),
        }
    }

    /// Whether the client may relay to any domain.
    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.relay_networks.iter().any(|n| n.contains(&ip))
    }

    /// Whether a domain is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.local_domains.iter().any(|m| m.matches(&d))
    }

    /// Checks an address's form: refused characters and missing domains.
    pub fn check_address(&self, address: &str) -> Result<(), Reply> {
        if let Some(c) = address.chars().find(|c| self.reject_chars.contains(c)) {
            return Err(Reply::new(
                553,
                "5.1.3",
                format!(
                    "address contains a refused character '{c}' (no %-hack or bang-path routing)"
                ),
            ));
        }
        Ok(())
    }

    /// Decides whether `client` may send to `rcpt`.
    pub fn check_recipient(&self, client: IpAddr, rcpt: &str) -> Result<(), Reply> {
        self.check_address(rcpt)?;
        let Some((_, domain)) = rcpt.rsplit_once('@') else {
            return Err(Reply::new(
                501,
                "5.1.3",
                "recipient address must be fully qualified (user@domain)",
            ));
        };
        if domain.is_empty() {
            return Err(Reply::new(
                501,
                "5.1.3",
                "recipient address has an empty domain",
            ));
        }
        if self.is_local_domain(domain) || self.is_relay_client(client) {
            Ok(())
        } else {
            Err(Reply::new(554, "5.7.1", "relay access denied"))
        }
    }
}

/// IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) are judged by their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str]) -> RelayPolicy {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        RelayPolicy::new(&["example.com".into(), "*.example.org".into()], &nets, "!%")
    }

    #[test]
    fn wildcard_matches_subdomains_but_not_the_domain_itself() {
        let m = DomainMatcher::parse("*.example.org").unwrap();
        assert!(m.matches("mail.example.org"));
        assert!(m.matches("a.b.example.org"));
        assert!(!m.matches("example.org"));
        assert!(!m.matches("badexample.org"));
    }

    #[test]
    fn outside_client_may_send_to_local_domain_only() {
        let p = policy(&["10.0.0.0/8"]);
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(p.check_recipient(outside, "u@Example.COM").is_ok());
        assert!(p.check_recipient(outside, "u@x.example.org").is_ok());
        let e = p.check_recipient(outside, "u@elsewhere.net").unwrap_err();
        assert_eq!(e.code, 554);
        assert!(e.to_string().contains("5.7.1"));
    }

    #[test]
    fn relay_network_client_may_send_anywhere() {
        let p = policy(&["10.0.0.0/8"]);
        assert!(
            p.check_recipient("10.1.2.3".parse().unwrap(), "u@elsewhere.net")
                .is_ok()
        );
        assert!(
            p.check_recipient("::ffff:10.1.2.3".parse().unwrap(), "u@elsewhere.net")
                .is_ok()
        );
    }

    #[test]
    fn percent_hack_and_bang_paths_are_refused_even_for_local_domains() {
        let p = policy(&[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            p.check_recipient(ip, "u%other.net@example.com")
                .unwrap_err()
                .code,
            553
        );
        assert_eq!(
            p.check_recipient(ip, "other.net!u@example.com")
                .unwrap_err()
                .code,
            553
        );
    }
}
