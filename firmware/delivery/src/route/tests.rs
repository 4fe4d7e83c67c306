use super::*;

use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

fn hp(s: &str) -> HostPort {
    s.parse().unwrap()
}

fn route(pattern: &str, hosts: &[&str]) -> Route {
    Route {
        domain: pattern.parse().unwrap(),
        hosts: hosts.iter().map(|h| hp(h)).collect(),
    }
}

/// A router whose DNS server is never asked (every host is an IP literal).
fn router_without_dns(routes: Vec<Route>, default_route: Vec<HostPort>) -> Router {
    let routing = RoutingConfig {
        routes,
        default_route,
        smtp_port: 25,
    };
    let dns = DnsConfig {
        servers: vec!["127.0.0.1:9".parse().unwrap()],
        ..DnsConfig::default()
    };
    Router::new(routing, dns).unwrap()
}

fn addrs(hop: &NextHop) -> Vec<String> {
    hop.candidates.iter().map(|c| c.addr.to_string()).collect()
}

#[test]
fn host_port_parses_names_ipv4_and_bracketed_ipv6() {
    assert_eq!(
        hp("Relay.Example.COM.:587"),
        HostPort {
            host: "relay.example.com".into(),
            port: 587
        }
    );
    assert_eq!(
        hp("10.0.0.5:25"),
        HostPort {
            host: "10.0.0.5".into(),
            port: 25
        }
    );
    assert_eq!(
        hp("[::1]:25"),
        HostPort {
            host: "::1".into(),
            port: 25
        }
    );
    assert_eq!(hp("[::1]:25").to_string(), "[::1]:25");
    assert_eq!(
        hp("10.0.0.5:25").ip(),
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)))
    );
}

#[test]
fn host_port_rejects_missing_port_bare_ipv6_port_zero_and_junk() {
    for bad in [
        "relay.example.com",
        "::1:25",
        "relay:0",
        "relay:99999",
        "[::1]25",
        "bad host:25",
        ":25",
        "[nonsense]:25",
    ] {
        assert!(bad.parse::<HostPort>().is_err(), "{bad} should not parse");
    }
}

#[test]
fn domain_pattern_parses_exact_and_wildcard_in_lower_case() {
    assert_eq!(
        "Example.COM.".parse::<DomainPattern>().unwrap(),
        DomainPattern::Exact("example.com".into())
    );
    let wildcard: DomainPattern = "*.Example.com".parse().unwrap();
    assert_eq!(wildcard, DomainPattern::Wildcard("example.com".into()));
    assert_eq!(wildcard.to_string(), "*.example.com");
    for bad in ["*", "*example.com", "a.*.example.com", "", "exa mple.com"] {
        assert!(
            bad.parse::<DomainPattern>().is_err(),
            "{bad} should not parse"
        );
    }
}

#[test]
fn wildcard_matches_subdomains_only_not_the_parent_domain() {
    let pattern: DomainPattern = "*.example.com".parse().unwrap();
    assert!(pattern.matches("mail.example.com"));
    assert!(pattern.matches("a.b.Example.COM."));
    assert!(!pattern.matches("example.com"));
    assert!(!pattern.matches("badexample.com"));
    assert!(!pattern.matches("example.com.evil.org"));
}

#[test]
fn hand_built_wildcard_with_star_prefix_matches_the_same_domains() {
    let pattern = DomainPattern::Wildcard("*.example.com".into());
    assert!(pattern.matches("mail.example.com"));
    assert!(!pattern.matches("example.com"));
    assert_eq!(pattern.to_string(), "*.example.com");
}

#[test]
fn routing_config_deserializes_from_toml_strings() {
    let config: RoutingConfig = toml::from_str(
        r#"
        default_route = ["relay.example.net:2525"]
        [[routes]]
        domain = "*.example.com"
        hosts = ["10.0.0.5:25", "[2001:db8::5]:25"]
        "#,
    )
    .unwrap();
    assert_eq!(config.smtp_port, 25);
    assert_eq!(config.default_route, vec![hp("relay.example.net:2525")]);
    assert_eq!(
        config.routes[0].domain,
        DomainPattern::Wildcard("example.com".into())
    );
    assert_eq!(config.routes[0].hosts[1], hp("[2001:db8::5]:25"));
    assert!(toml::from_str::<RoutingConfig>(r#"default_route = ["no-port"]"#).is_err());
}

#[test]
fn router_rejects_a_route_without_hosts() {
    let routing = RoutingConfig {
        routes: vec![Route {
            domain: "example.com".parse().unwrap(),
            hosts: vec![],
        }],
        ..RoutingConfig::default()
    };
    let dns = DnsConfig {
        servers: vec!["127.0.0.1:9".parse().unwrap()],
        ..DnsConfig::default()
    };
    assert!(matches!(
        Router::new(routing, dns),
        Err(DeliveryError::InvalidRouting(_))
    ));
}

#[test]
fn router_can_be_built_outside_a_tokio_runtime() {
    let dns = DnsConfig {
        servers: vec!["127.0.0.1:9".parse().unwrap()],
        ..DnsConfig::default()
    };
    assert!(Router::new(RoutingConfig::default(), dns).is_ok());
}

#[test]
fn route_errors_carry_their_enhanced_codes_and_permanence() {
    assert_eq!(RouteError::NullMx("x".into()).enhanced(), "5.1.10");
    assert_eq!(RouteError::NoSuchDomain("x".into()).enhanced(), "5.1.2");
    assert_eq!(RouteError::Temporary("x".into()).enhanced(), "4.4.3");
    assert!(RouteError::NullMx("x".into()).is_permanent());
    assert!(RouteError::NoSuchDomain("x".into()).is_permanent());
    assert!(!RouteError::Temporary("x".into()).is_permanent());
}

#[tokio::test]
async fn exact_route_beats_wildcard_route_whatever_the_order() {
    let router = router_without_dns(
        vec![
            route("*.example.com", &["10.0.0.1:25"]),
            route("mail.example.com", &["10.0.0.2:25"]),
        ],
        vec![],
    );
    let hop = router.next_hop("MAIL.example.com").await.unwrap();
    assert_eq!(hop.key, "route:mail.example.com");
    assert_eq!(addrs(&hop), ["10.0.0.2:25"]);
}

#[tokio::test]
async fn longest_wildcard_wins() {
    let router = router_without_dns(
        vec![
            route("*.example.com", &["10.0.0.1:25"]),
            route("*.eu.example.com", &["10.0.0.2:25"]),
        ],
        vec![],
    );
    let hop = router.next_hop("paris.eu.example.com").await.unwrap();
    assert_eq!(hop.key, "route:*.eu.example.com");
    assert_eq!(addrs(&hop), ["10.0.0.2:25"]);
    let hop = router.next_hop("us.example.com").await.unwrap();
    assert_eq!(hop.key, "route:*.example.com");
}

#[tokio::test]
async fn route_beats_default_route_and_default_route_beats_mx() {
    let router = router_without_dns(
        vec![route("example.com", &["10.0.0.1:25", "[::1]:2525"])],
        vec![hp("192.0.2.1:587")],
    );
    let hop = router.next_hop("example.com").await.unwrap();
    assert_eq!(addrs(&hop), ["10.0.0.1:25", "[::1]:2525"]);
    // The wildcard-free route does not cover sub-domains; they go to the default route, never to DNS.
    let hop = router.next_hop("sub.example.com").await.unwrap();
    assert_eq!(hop.key, "default");
    assert_eq!(addrs(&hop), ["192.0.2.1:587"]);
    assert_eq!(hop.candidates[0].host, "192.0.2.1");
}

#[tokio::test]
async fn localhost_route_host_resolves_to_loopback_without_asking_dns() {
    let router = router_without_dns(vec![], vec![hp("localhost:2525")]);
    let hop = router.next_hop("example.com").await.unwrap();
    assert_eq!(hop.candidates[0].addr, "127.0.0.1:2525".parse().unwrap());
    assert_eq!(hop.candidates[0].host, "localhost");
}

#[tokio::test]
async fn address_literal_domain_is_delivered_to_that_address() {
    let router = router_without_dns(vec![], vec![]);
    let hop = router.next_hop("[127.0.0.1]").await.unwrap();
    assert_eq!(addrs(&hop), ["127.0.0.1:25"]);
    let hop = router.next_hop("[IPv6:::1]").await.unwrap();
    assert_eq!(addrs(&hop), ["[::1]:25"]);
}

#[test]
fn mx_records_are_ordered_by_preference() {
    let records = vec![
        (20, "b.example.".to_string()),
        (5, "c.example.".to_string()),
        (10, "A.Example.".to_string()),
    ];
    assert_eq!(
        interpret_mx(records, &mut rand::thread_rng()),
        MxAnswer::Hosts(vec![
            "c.example".into(),
            "a.example".into(),
            "b.example".into()
        ])
    );
}

#[test]
fn single_mx_pointing_to_root_is_a_null_mx() {
    assert_eq!(
        interpret_mx(vec![(0, ".".into())], &mut rand::thread_rng()),
        MxAnswer::NullMx
    );
}

#[test]
fn root_mx_next_to_real_mx_hosts_is_ignored() {
    let records = vec![(0, ".".to_string()), (10, "mx.example.".to_string())];
    assert_eq!(
        interpret_mx(records, &mut rand::thread_rng()),
        MxAnswer::Hosts(vec!["mx.example".into()])
    );
}

#[test]
fn no_mx_records_means_implicit_mx() {
    assert_eq!(
        interpret_mx(vec![], &mut rand::thread_rng()),
        MxAnswer::Implicit
    );
}

#[test]
fn equal_preference_mx_hosts_come_in_varying_order() {
    let records: Vec<(u16, String)> = (1..=4).map(|i| (10, format!("mx{i}.example."))).collect();
    let mut firsts = HashSet::new();
    for _ in 0..64 {
        let MxAnswer::Hosts(hosts) = interpret_mx(records.clone(), &mut rand::thread_rng()) else {
            panic!()
        };
        assert_eq!(hosts.len(), 4);
        firsts.insert(hosts[0].clone());
    }
    assert!(
        firsts.len() > 1,
        "the same MX host came first 64 times: not shuffled"
    );
}

/// A dnsmasq instance on 127.0.0.1:<free port>, killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(records: &[&str]) -> Dnsmasq {
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let port = free_port();
        let mut child = Command::new(binary)
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                // Names under .test are answered from the records below, NXDOMAIN otherwise.
                "--local=/test/",
            ])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start dnsmasq ({binary}: {e}); these tests need it: install dnsmasq-base (apt-get install dnsmasq-base)")
            });
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dnsmasq exited at start-up ({status}); check the arguments with `dnsmasq --test`"
                );
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not listen on {addr} within 10s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq { child, addr }
    }

    fn router(&self, routing: RoutingConfig) -> Router {
        let dns = DnsConfig {
            servers: vec![self.addr],
            timeout: Duration::from_secs(2),
            attempts: 1,
        };
        Router::new(routing, dns).unwrap()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on loopback right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

fn mx_routing() -> RoutingConfig {
    RoutingConfig {
        smtp_port: 2525,
        ..RoutingConfig::default()
    }
}

#[tokio::test]
async fn mx_hosts_are_tried_in_preference_order_with_ipv4_first() {
    let dns = Dnsmasq::start(&[
        "--mx-host=pref.test,mx-b.test,20",
        "--mx-host=pref.test,mx-a.test,10",
        "--host-record=mx-a.test,127.0.0.1,::1",
        "--host-record=mx-b.test,127.0.0.2",
    ]);
    let hop = dns
        .router(mx_routing())
        .next_hop("Pref.Test.")
        .await
        .unwrap();
    assert_eq!(hop.key, "mx:pref.test");
    let got: Vec<(String, String)> = hop
        .candidates
        .iter()
        .map(|c| (c.host.clone(), c.addr.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("mx-a.test".to_string(), "127.0.0.1:2525".to_string()),
            ("mx-a.test".to_string(), "[::1]:2525".to_string()),
            ("mx-b.test".to_string(), "127.0.0.2:2525".to_string()),
        ]
    );
}

#[tokio::test]
async fn equal_preference_mx_hosts_are_shuffled_between_lookups() {
    let dns = Dnsmasq::start(&[
        "--mx-host=eq.test,e1.test,10",
        "--mx-host=eq.test,e2.test,10",
        "--mx-host=eq.test,e3.test,10",
        "--mx-host=eq.test,e4.test,10",
        "--host-record=e1.test,127.0.1.1",
        "--host-record=e2.test,127.0.1.2",
        "--host-record=e3.test,127.0.1.3",
        "--host-record=e4.test,127.0.1.4",
    ]);
    let router = dns.router(mx_routing());
    let mut firsts = HashSet::new();
    for _ in 0..24 {
        let hop = router.next_hop("eq.test").await.unwrap();
        assert_eq!(hop.candidates.len(), 4);
        firsts.insert(hop.candidates[0].host.clone());
    }
    assert!(
        firsts.len() > 1,
        "one MX host always came first: {firsts:?}"
    );
}

#[tokio::test]
async fn null_mx_domain_is_reported_as_null_mx() {
    let dns = Dnsmasq::start(&["--mx-host=nullmx.test,.,0"]);
    let err = dns
        .router(mx_routing())
        .next_hop("nullmx.test")
        .await
        .unwrap_err();
    assert_eq!(err, RouteError::NullMx("nullmx.test".into()));
    assert!(err.is_permanent());
}

#[tokio::test]
async fn domain_without_mx_falls_back_to_its_own_address_records() {
    let dns = Dnsmasq::start(&["--host-record=plain.test,127.0.0.3"]);
    let hop = dns
        .router(mx_routing())
        .next_hop("plain.test")
        .await
        .unwrap();
    assert_eq!(hop.key, "mx:plain.test");
    assert_eq!(
        hop.candidates,
        vec![Candidate {
            host: "plain.test".into(),
            addr: "127.0.0.3:2525".parse().unwrap()
        }]
    );
}

#[tokio::test]
async fn nonexistent_domain_is_no_such_domain() {
    let dns = Dnsmasq::start(&["--host-record=plain.test,127.0.0.3"]);
    let err = dns
        .router(mx_routing())
        .next_hop("nosuch.test")
        .await
        .unwrap_err();
    assert_eq!(err, RouteError::NoSuchDomain("nosuch.test".into()));
}

#[tokio::test]
async fn refused_dns_answer_is_temporary() {
    // dnsmasq has no upstream for names outside .test and refuses them, like a broken resolver would.
    let dns = Dnsmasq::start(&[]);
    let err = dns
        .router(mx_routing())
        .next_hop("example.org")
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
}

#[tokio::test]
async fn unanswered_dns_query_is_temporary() {
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let dns = DnsConfig {
        servers: vec![silent.local_addr().unwrap()],
        timeout: Duration::from_millis(200),
        attempts: 0,
    };
    let router = Router::new(mx_routing(), dns).unwrap();
    let err = router.next_hop("example.test").await.unwrap_err();
    assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
}

#[tokio::test]
async fn route_host_names_are_resolved_through_dns() {
    let dns = Dnsmasq::start(&["--host-record=relay.test,127.0.0.9"]);
    let routing = RoutingConfig {
        routes: vec![route("example.com", &["relay.test:2526"])],
        ..mx_routing()
    };
    let hop = dns.router(routing).next_hop("example.com").await.unwrap();
    assert_eq!(
        hop.candidates,
        vec![Candidate {
            host: "relay.test".into(),
            addr: "127.0.0.9:2526".parse().unwrap()
        }]
    );
}

#[tokio::test]
async fn unresolvable_route_host_is_temporary_not_a_bounce() {
    let dns = Dnsmasq::start(&[]);
    let routing = RoutingConfig {
        default_route: vec![hp("gone.test:25")],
        ..mx_routing()
    };
    let err = dns
        .router(routing)
        .next_hop("example.com")
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
}
