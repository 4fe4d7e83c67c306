//! Next-hop routing: routing list → default route → MX records.
//!
//! The order mirrors Postfix's `transport_maps` → `relayhost` → DNS: an admin's explicit route always
//! wins, a smart host catches everything else, and only without either do we ask DNS.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_resolver::TokioAsyncResolver;
use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::op::ResponseCode;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::DeliveryError;

/// A host (name or IP literal) and a TCP port, written `host:port` or `[IPv6]:port`.
///
/// Parses from and serialises to that string form, so it can appear directly in TOML
/// (`hosts = ["10.0.0.5:25", "[2001:db8::5]:25", "relay.example.com:587"]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    /// Host name (lower case, no trailing dot) or IP address literal (without brackets).
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl HostPort {
    /// The IP address when `host` is an IP literal; `None` for a host name that needs DNS.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for HostPort {
    type Err = DeliveryError;

    fn from_str(s: &str) -> Result<HostPort, DeliveryError> {
        let s = s.trim();
        let invalid =
            |why: &str| DeliveryError::InvalidRouting(format!("\"{s}\" is not host:port: {why}"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest.split_once(']').ok_or_else(|| invalid("missing ']'"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| invalid("missing :port after ']'"))?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| invalid("not an IP address inside [ ]"))?;
            (ip.to_string(), port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| invalid("missing :port"))?;
            if host.contains(':') {
                return Err(invalid("write IPv6 addresses in brackets, e.g. [::1]:25"));
            }
            (normalize_domain(host), port)
        };
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(invalid("port 0 is not allowed"));
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(&host) {
            return Err(invalid("not a valid host name or IP address"));
        }
        Ok(HostPort { host, port })
    }
}

impl TryFrom<String> for HostPort {
    type Error = DeliveryError;
    fn try_from(s: String) -> Result<HostPort, DeliveryError> {
        s.parse()
    }
}

impl From<HostPort> for String {
    fn from(hp: HostPort) -> String {
        hp.to_string()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Which recipient domains a [`Route`] applies to.
///
/// Parses from `"example.com"` (that domain only) or `"*.example.com"` (its sub-domains only, not
/// `example.com` itself — list both to cover both). Parsing lower-cases and drops a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DomainPattern {
    /// Exactly this domain.
    Exact(String),
    /// Every sub-domain of this domain. Holds the parent domain (`"example.com"` for
    /// `"*.example.com"`); a leading `"*."` is tolerated if the value is built by hand.
    Wildcard(String),
}

impl DomainPattern {
    /// Whether `domain` (any case, trailing dot allowed) is covered by this pattern.
    pub fn matches(&self, domain: &str) -> bool {
        let domain = normalize_domain(domain);
        match self {
            DomainPattern::Exact(d) => normalize_domain(d) == domain,
            DomainPattern::Wildcard(parent) => {
                let parent = wildcard_parent(parent);
                domain.len() > parent.len() + 1
                    && domain.ends_with(&parent)
                    && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
            }
        }
    }
}

fn wildcard_parent(parent: &str) -> String {
    normalize_domain(parent.strip_prefix("*.").unwrap_or(parent))
}

impl FromStr for DomainPattern {
    type Err = DeliveryError;

    fn from_str(s: &str) -> Result<DomainPattern, DeliveryError> {
        let normalized = normalize_domain(s);
        let invalid = |why: &str| {
            DeliveryError::InvalidRouting(format!("\"{s}\" is not a domain pattern: {why}"))
        };
        let (parent, wildcard) = match normalized.strip_prefix("*.") {
            Some(parent) => (parent.to_string(), true),
            None => (normalized.clone(), false),
        };
        if parent.contains('*') {
            return Err(invalid(
                "'*' is only allowed as \"*.\" at the start, e.g. *.example.com",
            ));
        }
        if !is_host_name(&parent) {
            return Err(invalid("not a valid domain name"));
        }
        Ok(if wildcard {
            DomainPattern::Wildcard(parent)
        } else {
            DomainPattern::Exact(parent)
        })
    }
}

impl TryFrom<String> for DomainPattern {
    type Error = DeliveryError;
    fn try_from(s: String) -> Result<DomainPattern, DeliveryError> {
        s.parse()
    }
}

impl From<DomainPattern> for String {
    fn from(p: DomainPattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Wildcard(parent) => write!(f, "*.{}", wildcard_parent(parent)),
        }
    }
}

/// One entry of the routing list: mail for `domain` goes to `hosts`, never to MX.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The recipient domains this route covers.
    pub domain: DomainPattern,
    /// Where to deliver, most preferred first; names are resolved via A/AAAA.
    pub hosts: Vec<HostPort>,
}

/// How recipient domains map to next hops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// The routing list; see [`Router::next_hop`] for precedence.
    pub routes: Vec<Route>,
    /// Smart host(s) for every domain without a route; empty means "use MX records".
    pub default_route: Vec<HostPort>,
    /// Port for hosts found through MX or A/AAAA records (25 unless testing).
    pub smtp_port: u16,
}

impl Default for RoutingConfig {
    fn default() -> RoutingConfig {
        RoutingConfig {
            routes: Vec::new(),
            default_route: Vec::new(),
            smtp_port: 25,
        }
    }
}

/// Which DNS servers the router asks, and how patiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Recursive resolvers to use (UDP and TCP on the given ports); empty means `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one answer (default 5 s).
    pub timeout: Duration,
    /// How many times to retry a query that got no answer (default 2).
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

/// Where to deliver mail for one domain: the addresses to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The per-destination concurrency key: `"route:<pattern>"`, `"default"` or `"mx:<domain>"`.
    pub key: String,
    /// Addresses to try, most preferred first; never empty when returned by [`Router::next_hop`].
    pub candidates: Vec<Candidate>,
}

/// One address to try: the host name it came from (for logs and reply texts) and the socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The host name (MX target, route host) or the IP literal as written.
    pub host: String,
    /// The address and port to connect to.
    pub addr: SocketAddr,
}

impl fmt::Display for Candidate {
    /// Postfix style `mx.example.com[192.0.2.1]:25`, the form admins grep for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]:{}", self.host, self.addr.ip(), self.addr.port())
    }
}

/// Why no next hop could be found for a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Holds the domain. Permanent, 5.1.10.
    #[error("domain {0} does not accept mail (null MX record, RFC 7505)")]
    NullMx(String),
    /// The domain does not exist in DNS (NXDOMAIN) or has neither MX nor address records. Holds the
    /// domain. Permanent, 5.1.2.
    #[error("domain {0} not found in DNS: it has no MX, A or AAAA records")]
    NoSuchDomain(String),
    /// DNS failed in a way that may heal (timeout, SERVFAIL, unresolvable relay host). Holds the
    /// description. Temporary, 4.4.3.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

impl RouteError {
    /// Whether the recipients should bounce now rather than wait for a retry.
    pub fn is_permanent(&self) -> bool {
        matches!(self, RouteError::NullMx(_) | RouteError::NoSuchDomain(_))
    }

    /// The RFC 3463 enhanced status code for DSNs and logs.
    pub fn enhanced(&self) -> &'static str {
        match self {
            RouteError::NullMx(_) => "5.1.10",
            RouteError::NoSuchDomain(_) => "5.1.2",
            RouteError::Temporary(_) => "4.4.3",
        }
    }
}

/// Finds the [`NextHop`] for recipient domains. Cheap to clone; clones share the DNS cache.
#[derive(Clone)]
pub struct Router {
    routing: RoutingConfig,
    resolver: TokioAsyncResolver,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Checks the routing list and builds the DNS resolver (from `dns.servers`, or from
    /// `/etc/resolv.conf` when that list is empty). Does no network I/O.
    pub fn new(routing: RoutingConfig, dns: DnsConfig) -> Result<Router, DeliveryError> {
        if routing.smtp_port == 0 {
            return Err(DeliveryError::InvalidRouting(
                "smtp_port must not be 0".into(),
            ));
        }
        for route in &routing.routes {
            if route.hosts.is_empty() {
                return Err(DeliveryError::InvalidRouting(format!(
                    "the route for {} lists no hosts",
                    route.domain
                )));
            }
        }
        if dns.timeout.is_zero() {
            return Err(DeliveryError::InvalidDns(
                "timeout must be longer than 0s".into(),
            ));
        }
        let (config, mut opts) = if dns.servers.is_empty() {
            let (config, mut opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DeliveryError::SystemDns(e.to_string()))?;
            // Relay hosts named in /etc/hosts should work as they do for every other program.
            opts.use_hosts_file = true;
            (config, opts)
        } else {
            let mut config = ResolverConfig::new();
            for server in &dns.servers {
                for protocol in [Protocol::Udp, Protocol::Tcp] {
                    let mut ns = NameServerConfig::new(*server, protocol);
                    // These are the admin's own resolvers: an NXDOMAIN from them is the answer.
                    ns.trust_negative_responses = true;
                    config.add_name_server(ns);
                }
            }
            let mut opts = ResolverOpts::default();
            opts.use_hosts_file = false;
            (config, opts)
        };
        opts.timeout = dns.timeout;
        opts.attempts = dns.attempts;
        opts.edns0 = true;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        let resolver = TokioAsyncResolver::tokio(config, opts);
        Ok(Router { routing, resolver })
    }

    /// The routing configuration this router was built with.
    pub fn routing(&self) -> &RoutingConfig {
        &self.routing
    }

    /// Routing list (exact beats wildcard; longest wildcard wins) → default route → MX (preference order,
    /// equal preference shuffled, A/AAAA of each MX host; no MX → A/AAAA of the domain; null MX → NullMx).
    /// Hosts named in routes are resolved A/AAAA too.
    ///
    /// Within one host, IPv4 addresses come before IPv6 ones: many DMZs have no IPv6 route, and a
    /// dead IPv6 path would otherwise cost a connect timeout per message.
    pub async fn next_hop(&self, domain: &str) -> Result<NextHop, RouteError> {
        let domain = normalize_domain(domain);
        let hop = if let Some(route) = select_route(&self.routing.routes, &domain) {
            let key = format!("route:{}", route.domain);
            let candidates = self.resolve_hosts(&route.hosts, &key).await?;
            NextHop { key, candidates }
        } else if !self.routing.default_route.is_empty() {
            let key = "default".to_string();
            let candidates = self
                .resolve_hosts(&self.routing.default_route, &key)
                .await?;
            NextHop { key, candidates }
        } else if let Some(ip) = address_literal(&domain) {
            let addr = SocketAddr::new(ip, self.routing.smtp_port);
            NextHop {
                key: format!("mx:{domain}"),
                candidates: vec![Candidate {
                    host: ip.to_string(),
                    addr,
                }],
            }
        } else {
            NextHop {
                key: format!("mx:{domain}"),
                candidates: self.mx_candidates(&domain).await?,
            }
        };
        debug!(domain = %domain, next_hop = %hop.key, candidates = hop.candidates.len(), "next hop found");
        Ok(hop)
    }

    /// Resolves configured route hosts. Any failure is temporary: a relay host that does not resolve is
    /// a configuration or DNS problem, never a reason to bounce the recipient.
    async fn resolve_hosts(
        &self,
        hosts: &[HostPort],
        key: &str,
    ) -> Result<Vec<Candidate>, RouteError> {
        let mut candidates = Vec::new();
        let mut last_error = None;
        for hp in hosts {
            match self.addresses(&hp.host).await {
                Ok(ips) => candidates.extend(ips.into_iter().map(|ip| Candidate {
                    host: hp.host.clone(),
                    addr: SocketAddr::new(ip, hp.port),
                })),
                Err(e) => {
                    warn!(next_hop = %key, host = %hp.host, error = %e.describe(&hp.host), "route host does not resolve");
                    last_error = Some(e.describe(&hp.host));
                }
            }
        }
        let candidates = dedup(candidates);
        if candidates.is_empty() {
            let why = last_error.unwrap_or_else(|| "no hosts configured".into());
            return Err(RouteError::Temporary(format!(
                "no host of {key} has an address: {why}"
            )));
        }
        Ok(candidates)
    }

    async fn mx_candidates(&self, domain: &str) -> Result<Vec<Candidate>, RouteError> {
        let records = match self.resolver.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => lookup
                .iter()
                .map(|mx| (mx.preference(), mx.exchange().to_ascii()))
                .collect::<Vec<_>>(),
            Err(e) => match LookupFailure::from(&e) {
                LookupFailure::NxDomain => {
                    return Err(RouteError::NoSuchDomain(domain.to_string()));
                }
                LookupFailure::NoData => Vec::new(),
                LookupFailure::Temporary(why) => {
                    return Err(RouteError::Temporary(format!(
                        "MX lookup for {domain} failed: {why}"
                    )));
                }
            },
        };
        // Bound first: a ThreadRng temporary in the match scrutinee would live across the awaits
        // below and make this future !Send.
        let answer = interpret_mx(records, &mut rand::thread_rng());
        match answer {
            MxAnswer::NullMx => Err(RouteError::NullMx(domain.to_string())),
            MxAnswer::Implicit => self.implicit_mx(domain).await,
            MxAnswer::Hosts(hosts) => {
                let mut candidates = Vec::new();
                let mut last_error = None;
                for host in &hosts {
                    match self.addresses(host).await {
                        Ok(ips) => candidates.extend(ips.into_iter().map(|ip| Candidate {
                            host: host.clone(),
                            addr: SocketAddr::new(ip, self.routing.smtp_port),
                        })),
                        Err(e) => {
                            debug!(domain = %domain, mx = %host, error = %e.describe(host), "MX host does not resolve");
                            last_error = Some(e.describe(host));
                        }
                    }
                }
                let candidates = dedup(candidates);
                if candidates.is_empty() {
                    // Temporary on purpose: a broken MX host usually gets fixed, and bouncing on it
                    // would turn a DNS mishap at the receiver into lost mail.
                    let why = last_error.unwrap_or_default();
                    return Err(RouteError::Temporary(format!(
                        "no MX host of {domain} has an address: {why}"
                    )));
                }
                Ok(candidates)
            }
        }
    }

    /// RFC 5321 §5.1: without MX records the domain itself is the mail host.
    async fn implicit_mx(&self, domain: &str) -> Result<Vec<Candidate>, RouteError> {
        match self.addresses(domain).await {
            Ok(ips) => Ok(ips
                .into_iter()
                .map(|ip| Candidate {
                    host: domain.to_string(),
                    addr: SocketAddr::new(ip, self.routing.smtp_port),
                })
                .collect()),
            Err(LookupFailure::NxDomain | LookupFailure::NoData) => {
                Err(RouteError::NoSuchDomain(domain.to_string()))
            }
            Err(LookupFailure::Temporary(why)) => Err(RouteError::Temporary(format!(
                "address lookup for {domain} failed: {why}"
            ))),
        }
    }

    /// A and AAAA records of a host (IPv4 first), or the address itself for an IP literal.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupFailure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = self
            .resolver
            .lookup_ip(fqdn(host))
            .await
            .map_err(|e| LookupFailure::from(&e))?;
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        if ips.is_empty() {
            return Err(LookupFailure::NoData);
        }
        Ok(ips)
    }
}

/// How a DNS query failed, in the terms routing cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LookupFailure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no records of the asked type.
    NoData,
    /// No usable answer: timeout, SERVFAIL, REFUSED, network error.
    Temporary(String),
}

impl LookupFailure {
    fn describe(&self, host: &str) -> String {
        match self {
            LookupFailure::NxDomain => format!("{host}: host not found (NXDOMAIN)"),
            LookupFailure::NoData => format!("{host}: no A or AAAA records"),
            LookupFailure::Temporary(why) => format!("{host}: {why}"),
        }
    }
}

impl From<&ResolveError> for LookupFailure {
    fn from(err: &ResolveError) -> LookupFailure {
        match err.kind() {
            ResolveErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
                ResponseCode::NXDomain => LookupFailure::NxDomain,
                ResponseCode::NoError => LookupFailure::NoData,
                other => LookupFailure::Temporary(format!("DNS server answered {other}")),
            },
            ResolveErrorKind::Timeout => LookupFailure::Temporary("DNS query timed out".into()),
            _ => LookupFailure::Temporary(err.to_string()),
        }
    }
}

/// What a domain's MX records tell us to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MxAnswer {
    /// Every MX record points to "." (RFC 7505): the domain takes no mail.
    NullMx,
    /// No MX records: use the domain's own address records.
    Implicit,
    /// MX host names in the order to try them.
    Hosts(Vec<String>),
}

/// Orders MX records: lowest preference first, equal preferences in random order so that load spreads
/// as RFC 5321 §5.1 asks. Records pointing to the root (".") are dropped; if only such records exist
/// the domain has a null MX.
fn interpret_mx(records: Vec<(u16, String)>, rng: &mut impl rand::Rng) -> MxAnswer {
    if records.is_empty() {
        return MxAnswer::Implicit;
    }
    let mut hosts: Vec<(u16, String)> = records
        .into_iter()
        .map(|(pref, host)| (pref, normalize_domain(&host)))
        .filter(|(_, host)| !host.is_empty())
        .collect();
    if hosts.is_empty() {
        return MxAnswer::NullMx;
    }
    // Shuffle first, then a stable sort: equal preferences keep their random relative order.
    hosts.shuffle(rng);
    hosts.sort_by_key(|(pref, _)| *pref);
    let mut seen = HashSet::new();
    MxAnswer::Hosts(
        hosts
            .into_iter()
            .map(|(_, host)| host)
            .filter(|host| seen.insert(host.clone()))
            .collect(),
    )
}

/// Exact match first; otherwise the wildcard with the longest parent domain. Ties go to the earlier entry.
fn select_route<'a>(routes: &'a [Route], domain: &str) -> Option<&'a Route> {
    if let Some(route) = routes
        .iter()
        .find(|r| matches!(r.domain, DomainPattern::Exact(_)) && r.domain.matches(domain))
    {
        return Some(route);
    }
    routes
        .iter()
        .filter_map(|r| match &r.domain {
            DomainPattern::Wildcard(parent) if r.domain.matches(domain) => {
                Some((wildcard_parent(parent).len(), r))
            }
            _ => None,
        })
        .fold(None, |best: Option<(usize, &Route)>, (len, r)| match best {
            Some((best_len, _)) if best_len >= len => best,
            _ => Some((len, r)),
        })
        .map(|(_, r)| r)
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3) as used in `user@[192.0.2.1]`.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = match inner.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ipv6:") => &inner[5..],
        _ => inner,
    };
    inner.parse().ok()
}

fn dedup(candidates: Vec<Candidate>) -> Vec<Candidate> {
    let mut seen = HashSet::new();
    candidates
        .into_iter()
        .filter(|c| seen.insert(c.addr))
        .collect()
}

/// A fully qualified name, so the resolver never appends search domains from resolv.conf.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Lower case, no surrounding white space, no trailing dot.
pub(crate) fn normalize_domain(s: &str) -> String {
    s.trim().trim_end_matches('.').to_lowercase()
}

/// Letters, digits, hyphens, underscores (seen in real relay names) and non-ASCII (IDNA) in dot-separated
/// labels of at most 63 bytes.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests;
