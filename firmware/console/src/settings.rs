//! What the console writes: the network settings, the whole first-boot setup, and the files
//! they become (systemd-networkd file, resolv.conf, one-line OS settings, the gateway config).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use portcullis_delivery::HostPort;
use portcullis_gateway::config::{Config, ConfigError, Overrides};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, TableLike, value};

use crate::password::PasswordHashString;
use crate::store::{Changes, DataRoot, MODE_PRIVATE, MODE_PUBLIC, StoreError};

/// Port of the DNS servers written into the gateway config.
const DNS_PORT: u16 = 53;
/// Where the gateway accepts mail: port 25 on every IPv4 address.
const SMTP_LISTEN: &str = "0.0.0.0:25";
/// Where the web console will listen (HTTPS on every address).
const CONSOLE_LISTEN: &str = "0.0.0.0:443";
/// The hardware watchdog the image provides.
const WATCHDOG_DEVICE: &str = "/dev/watchdog0";
/// The hardware watchdog's timeout on the appliance (see the unit's `WatchdogSec`).
const WATCHDOG_TIMEOUT: &str = "30s";
/// First line of every file the console owns, so an admin poking around knows where it came from.
const WRITTEN_BY: &str =
    "# Written by the Portcullis serial console (portcullis console); edits here are replaced.";

/// Why a set of settings could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file could not be staged or renamed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gateway would refuse the configuration (a bug in the console, or a hand edit).
    #[error("the gateway configuration would be invalid: {0}")]
    Config(#[from] ConfigError),
    /// The existing gateway configuration is not TOML the console can edit.
    #[error("{file}: cannot edit the gateway configuration: {message}")]
    Unreadable {
        /// The configuration file.
        file: String,
        /// Why.
        message: String,
    },
}

/// Static addressing of the appliance's Ethernet port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetwork {
    /// The appliance's address with its prefix length.
    pub address: IpNet,
    /// The default gateway, inside `address`'s subnet.
    pub gateway: IpAddr,
    /// One to three name servers.
    pub dns: Vec<IpAddr>,
}

/// How the appliance's first Ethernet NIC is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Address, gateway and DNS from DHCP.
    Dhcp,
    /// Typed in at the console.
    Static(StaticNetwork),
}

impl Network {
    /// The systemd-networkd file `10-portcullis.network` (matches the first Ethernet NIC).
    pub fn networkd_file(&self) -> String {
        let mut text = format!("{WRITTEN_BY}\n[Match]\nName=en* eth*\n\n[Network]\n");
        match self {
            Network::Dhcp => text.push_str("DHCP=yes\n"),
            Network::Static(s) => {
                text.push_str(&format!("Address={}\nGateway={}\n", s.address, s.gateway));
                for dns in &s.dns {
                    text.push_str(&format!("DNS={dns}\n"));
                }
            }
        }
        text
    }

    /// Reads back a file written by [`Network::networkd_file`]; `None` if it is not one.
    pub fn from_networkd_file(text: &str) -> Option<Network> {
        let (mut dhcp, mut address, mut gateway, mut dns) = (false, None, None, Vec::new());
        for line in text.lines().map(str::trim) {
            let Some((key, val)) = line.split_once('=') else {
                continue;
            };
            let val = val.trim();
            match key.trim() {
                "DHCP" => dhcp = matches!(val, "yes" | "ipv4" | "ipv6" | "true"),
                "Address" => address = val.parse::<IpNet>().ok(),
                "Gateway" => gateway = val.parse::<IpAddr>().ok(),
                "DNS" => dns.extend(
                    val.split_whitespace()
                        .filter_map(|d| d.parse::<IpAddr>().ok()),
                ),
                _ => {}
            }
        }
        match (dhcp, address, gateway) {
            (true, _, _) => Some(Network::Dhcp),
            (false, Some(address), Some(gateway)) => Some(Network::Static(StaticNetwork {
                address,
                gateway,
                dns,
            })),
            _ => None,
        }
    }

    /// `resolv.conf` for static addressing; `None` with DHCP (the image then uses resolved's stub).
    pub fn resolv_conf(&self) -> Option<String> {
        match self {
            Network::Dhcp => None,
            Network::Static(s) => {
                let mut text = format!("{WRITTEN_BY}\n");
                for dns in &s.dns {
                    text.push_str(&format!("nameserver {dns}\n"));
                }
                Some(text)
            }
        }
    }

    /// The name servers the gateway should ask (none with DHCP: it reads the system's).
    pub fn dns_servers(&self) -> &[IpAddr] {
        match self {
            Network::Dhcp => &[],
            Network::Static(s) => &s.dns,
        }
    }

    /// Stages the network file and resolv.conf (or its removal with DHCP).
    pub fn stage(&self, root: &DataRoot, changes: &mut Changes) -> Result<(), StoreError> {
        changes.write(
            &root.network_file(),
            self.networkd_file().as_bytes(),
            MODE_PUBLIC,
        )?;
        match self.resolv_conf() {
            Some(text) => changes.write(&root.resolv_conf(), text.as_bytes(), MODE_PUBLIC)?,
            None => changes.remove(&root.resolv_conf()),
        }
        Ok(())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Dhcp => f.write_str("DHCP"),
            Network::Static(s) => write!(f, "static {} via {}", s.address, s.gateway),
        }
    }
}

/// Everything the first-boot wizard asks, validated, with the password already hashed.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The host name (one label).
    pub hostname: String,
    /// The network settings.
    pub network: Network,
    /// The web console admin password, hashed.
    pub admin_password_hash: PasswordHashString,
    /// The internal mail server that gets the mail for the local domains.
    pub mail_server: HostPort,
    /// The domains the appliance accepts mail for.
    pub local_domains: Vec<String>,
    /// Client networks that may relay (send to any domain).
    pub relay_networks: Vec<IpNet>,
    /// The time zone (`UTC` or a zoneinfo name).
    pub timezone: String,
    /// NTP servers; empty means none.
    pub ntp_servers: Vec<String>,
}

impl Setup {
    /// Stages every file of the setup, `setup-complete` (holding `finished_at`) last. The
    /// gateway config is validated with the gateway's own loader before anything is staged.
    pub fn stage(&self, root: &DataRoot, finished_at: &str) -> Result<Changes, SettingsError> {
        let config_file = root.config_file();
        let config = GatewayConfig::for_setup(self, &root.data_dir())
            .render(&config_file.display().to_string())?;
        let mut changes = Changes::new();
        let line = |s: &str| format!("{s}\n");
        changes.write(
            &root.hostname_file(),
            line(&self.hostname).as_bytes(),
            MODE_PUBLIC,
        )?;
        changes.write(
            &root.timezone_file(),
            line(&self.timezone).as_bytes(),
            MODE_PUBLIC,
        )?;
        changes.write(
            &root.ntp_file(),
            line(&self.ntp_servers.join(" ")).as_bytes(),
            MODE_PUBLIC,
        )?;
        self.network.stage(root, &mut changes)?;
        changes.write(&config_file, config.as_bytes(), MODE_PRIVATE)?;
        changes.write(
            &root.setup_complete_file(),
            line(finished_at).as_bytes(),
            MODE_PUBLIC,
        )?;
        Ok(changes)
    }
}

/// The gateway configuration file as the console writes and edits it: a TOML document, so an
/// edit (DNS servers, the password hash) keeps every other key and comment as it was.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    doc: DocumentMut,
}

impl GatewayConfig {
    /// The configuration for a fresh setup: everything at its default except what the wizard
    /// asked for, the appliance's listen addresses and its hardware watchdog.
    pub fn for_setup(setup: &Setup, data_dir: &Path) -> GatewayConfig {
        let mut doc = DocumentMut::new();
        let mut server = Table::new();
        server.decor_mut().set_prefix(format!(
            "{WRITTEN_BY}\n# Every key is described in docs/configuration.md; keys not set here take their defaults.\n\n"
        ));
        server["data_dir"] = value(data_dir.display().to_string());
        doc["server"] = Item::Table(server);
        let mut config = GatewayConfig { doc };
        config
            .section("smtp")
            .insert("listen", value(Array::from_iter([SMTP_LISTEN])));
        let relay = config.section("relay");
        relay.insert(
            "local_domains",
            value(Array::from_iter(setup.local_domains.iter())),
        );
        relay.insert(
            "relay_networks",
            value(Array::from_iter(
                setup.relay_networks.iter().map(|n| n.to_string()),
            )),
        );
        let mut routes = ArrayOfTables::new();
        for domain in &setup.local_domains {
            let mut route = Table::new();
            route["domain"] = value(domain.as_str());
            route["hosts"] = value(Array::from_iter([setup.mail_server.to_string()]));
            routes.push(route);
        }
        let mut delivery = Table::new();
        // Only `[[delivery.routes]]` headers, no empty `[delivery]` above them.
        delivery.set_implicit(true);
        delivery.insert("routes", Item::ArrayOfTables(routes));
        config.doc.insert("delivery", Item::Table(delivery));
        config.set_dns_servers(setup.network.dns_servers());
        config
            .section("console")
            .insert("listen", value(CONSOLE_LISTEN));
        config.set_admin_password_hash(&setup.admin_password_hash);
        let watchdog = config.section("watchdog");
        watchdog.insert("device", value(WATCHDOG_DEVICE));
        // Shorter than the service's WatchdogSec (60 s): a hung gateway must reset the board,
        // not merely be restarted by systemd, which would reopen and re-arm the device.
        watchdog.insert("timeout", value(WATCHDOG_TIMEOUT));
        config
    }

    /// The top-level table `name`, made a `[name]` section if it is missing.
    fn section(&mut self, name: &str) -> &mut dyn TableLike {
        if !self.doc.get(name).is_some_and(Item::is_table_like) {
            self.doc.insert(name, Item::Table(Table::new()));
        }
        match self.doc.get_mut(name).and_then(Item::as_table_like_mut) {
            Some(table) => table,
            None => unreachable!("{name} was just made a table"),
        }
    }

    /// Reads the configuration at `path` for editing.
    pub fn load(path: &Path) -> Result<GatewayConfig, SettingsError> {
        let unreadable = |message: String| SettingsError::Unreadable {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|e| unreadable(e.to_string().trim().replace('\n', " ")))?;
        Ok(GatewayConfig { doc })
    }

    /// Sets `[dns] servers` (port 53); with none, removes the key so the gateway reads the
    /// system's resolv.conf.
    pub fn set_dns_servers(&mut self, servers: &[IpAddr]) {
        if servers.is_empty() {
            if let Some(dns) = self.doc.get_mut("dns").and_then(Item::as_table_like_mut) {
                dns.remove("servers");
            }
            return;
        }
        let servers = Array::from_iter(
            servers
                .iter()
                .map(|ip| SocketAddr::new(*ip, DNS_PORT).to_string()),
        );
        self.section("dns").insert("servers", value(servers));
    }

    /// Sets `[console] admin_password_hash`.
    pub fn set_admin_password_hash(&mut self, hash: &PasswordHashString) {
        self.section("console")
            .insert("admin_password_hash", value(hash.as_str()));
    }

    /// The TOML text, after the gateway's own loader accepted it (`file` names it in errors).
    pub fn render(&self, file: &str) -> Result<String, ConfigError> {
        let text = self.doc.to_string();
        Config::parse(&text, file, &Overrides::default())?;
        Ok(text)
    }

    /// Stages the configuration at `path` (validated, root-only).
    pub fn stage(&self, path: &Path, changes: &mut Changes) -> Result<(), SettingsError> {
        let text = self.render(&path.display().to_string())?;
        changes.write(path, text.as_bytes(), MODE_PRIVATE)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn static_network() -> Network {
        Network::Static(StaticNetwork {
            address: "192.0.2.10/24".parse().unwrap(),
            gateway: "192.0.2.1".parse().unwrap(),
            dns: vec![
                "192.0.2.1".parse().unwrap(),
                "2001:db8::53".parse().unwrap(),
            ],
        })
    }

    pub(crate) fn setup(network: Network) -> Setup {
        Setup {
            hostname: "gw1".into(),
            network,
            admin_password_hash: PasswordHashString::new("correct horse battery").unwrap(),
            mail_server: "192.0.2.25:25".parse().unwrap(),
            local_domains: vec!["example.org".into(), "*.example.org".into()],
            relay_networks: vec!["192.0.2.25/32".parse().unwrap()],
            timezone: "UTC".into(),
            ntp_servers: vec![],
        }
    }

    #[test]
    fn static_network_file_names_address_gateway_and_each_dns_server() {
        let text = static_network().networkd_file();
        assert!(text.contains("[Match]\nName=en* eth*\n"), "{text}");
        assert!(
            text.contains(
                "[Network]\nAddress=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.1\nDNS=2001:db8::53\n"
            ),
            "{text}"
        );
        assert!(!text.contains("DHCP"));
        let resolv = static_network().resolv_conf().unwrap();
        assert!(resolv.ends_with("nameserver 192.0.2.1\nnameserver 2001:db8::53\n"));
    }

    #[test]
    fn dhcp_network_file_says_dhcp_and_has_no_resolv_conf() {
        let text = Network::Dhcp.networkd_file();
        assert!(text.ends_with("[Network]\nDHCP=yes\n"), "{text}");
        assert!(Network::Dhcp.resolv_conf().is_none());
    }

    #[test]
    fn network_files_read_back_to_the_same_settings() {
        for n in [Network::Dhcp, static_network()] {
            assert_eq!(Network::from_networkd_file(&n.networkd_file()), Some(n));
        }
        assert_eq!(Network::from_networkd_file("[Match]\nName=x\n"), None);
    }

    #[test]
    fn setup_config_passes_the_gateway_loader_and_sets_only_what_was_asked() {
        let s = setup(static_network());
        let text = GatewayConfig::for_setup(&s, Path::new("/var/lib/portcullis/data"))
            .render("portcullis.toml")
            .unwrap();
        let c = Config::parse(&text, "t", &Overrides::default()).unwrap();
        assert_eq!(c.smtp.listen, vec!["0.0.0.0:25".parse().unwrap()]);
        assert_eq!(c.relay.local_domains, ["example.org", "*.example.org"]);
        assert_eq!(
            c.relay.relay_networks,
            vec!["192.0.2.25/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(c.delivery.routes.len(), 2);
        assert_eq!(c.delivery.routes[1].domain, "*.example.org");
        assert_eq!(c.delivery.routes[0].hosts, ["192.0.2.25:25"]);
        assert!(c.delivery.default_route.is_empty(), "outbound goes by MX");
        assert_eq!(
            c.dns.servers,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(c.console.listen, "0.0.0.0:443".parse().unwrap());
        let hash = c.console.admin_password_hash.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(c.watchdog.device, Path::new("/dev/watchdog0"));
        assert_eq!(c.watchdog.timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.server.data_dir, Path::new("/var/lib/portcullis/data"));
        let defaults = Config::parse("", "t", &Overrides::default()).unwrap();
        assert_eq!(c.smtp.max_sessions, defaults.smtp.max_sessions);
        assert_eq!(c.queue.retry_schedule, defaults.queue.retry_schedule);
        assert!(text.starts_with(WRITTEN_BY), "{text}");
        assert!(
            !text.contains("[delivery]\n"),
            "routes need no empty table: {text}"
        );
    }

    #[test]
    fn dhcp_setup_leaves_dns_to_the_system() {
        let text = GatewayConfig::for_setup(&setup(Network::Dhcp), Path::new("/d"))
            .render("t")
            .unwrap();
        let c = Config::parse(&text, "t", &Overrides::default()).unwrap();
        assert!(c.dns.servers.is_empty());
    }

    #[test]
    fn editing_keeps_other_keys_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(
            &path,
            "# my note\n[smtp]\nlisten = [\"0.0.0.0:25\"]\nmax_sessions = 7 # busy\n\n[dns]\nservers = [\"192.0.2.1:53\"]\ntimeout = \"3s\"\n",
        )
        .unwrap();
        let mut config = GatewayConfig::load(&path).unwrap();
        config.set_dns_servers(&["198.51.100.53".parse().unwrap()]);
        let hash = PasswordHashString::new("0123456789").unwrap();
        config.set_admin_password_hash(&hash);
        let text = config.render("t").unwrap();
        assert!(text.contains("# my note\n"), "{text}");
        assert!(text.contains("max_sessions = 7 # busy"), "{text}");
        assert!(text.contains("timeout = \"3s\""), "{text}");
        assert!(text.contains("servers = [\"198.51.100.53:53\"]"), "{text}");
        assert!(text.contains(hash.as_str()));
        config.set_dns_servers(&[]);
        let text = config.render("t").unwrap();
        assert!(!text.contains("servers"), "{text}");
        assert!(text.contains("timeout = \"3s\""), "{text}");
    }

    #[test]
    fn an_unparsable_config_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, "[smtp\n").unwrap();
        let e = GatewayConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("portcullis.toml"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn stage_writes_setup_complete_last() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::new(dir.path());
        let changes = setup(static_network())
            .stage(&root, "2024-01-01T00:00:00Z")
            .unwrap();
        let targets = changes.targets();
        assert_eq!(targets.last(), Some(&root.setup_complete_file().as_path()));
        assert!(targets.contains(&root.resolv_conf().as_path()));
        assert!(!root.is_setup_complete());
        changes.commit().unwrap();
        assert!(root.is_setup_complete());
        assert_eq!(
            std::fs::read_to_string(root.ntp_file()).unwrap(),
            "\n",
            "empty NTP list: one empty line"
        );
    }
}
