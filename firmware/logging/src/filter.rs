//! Log levels per component: the mapping from Portcullis component names to tracing targets, and the
//! directive set behind the run-time adjustable filter.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::LoggingError;

/// A part of Portcullis whose log level can be set on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// The inbound SMTP server (`portcullis_smtp`).
    Smtp,
    /// The spool and queue state (`portcullis_queue`).
    Queue,
    /// Routing and the outbound SMTP client (`portcullis_delivery`).
    Delivery,
    /// Content scanning (`portcullis_scan`).
    Scan,
    /// Definitions updates (`portcullis_defs`).
    Defs,
    /// The web console (`portcullis_web`).
    Console,
    /// The control socket (`portcullis_gateway::control`).
    Control,
    /// Task supervision and the watchdog (`portcullis_gateway::supervise`).
    Supervise,
    /// The gateway wiring, policy and scheduler (`portcullis_gateway`).
    Gateway,
    /// The virus scanner (`portcullis_av`).
    Av,
    /// SMTP conversation transcripts (`smtp_transcript`), so they can be silenced without touching `smtp`.
    Transcript,
}

impl Component {
    /// Every component, in the order they are documented.
    pub const ALL: [Component; 11] = [
        Component::Smtp,
        Component::Queue,
        Component::Delivery,
        Component::Scan,
        Component::Defs,
        Component::Console,
        Component::Control,
        Component::Supervise,
        Component::Gateway,
        Component::Av,
        Component::Transcript,
    ];

    /// The name used in the configuration and in `set_levels`, e.g. `smtp`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Smtp => "smtp",
            Component::Queue => "queue",
            Component::Delivery => "delivery",
            Component::Scan => "scan",
            Component::Defs => "defs",
            Component::Console => "console",
            Component::Control => "control",
            Component::Supervise => "supervise",
            Component::Gateway => "gateway",
            Component::Av => "av",
            Component::Transcript => "transcript",
        }
    }

    /// The tracing target (crate or module path) whose events belong to this component.
    pub fn target(self) -> &'static str {
        match self {
            Component::Smtp => "portcullis_smtp",
            Component::Queue => "portcullis_queue",
            Component::Delivery => "portcullis_delivery",
            Component::Scan => "portcullis_scan",
            Component::Defs => "portcullis_defs",
            Component::Console => "portcullis_web",
            Component::Control => "portcullis_gateway::control",
            Component::Supervise => "portcullis_gateway::supervise",
            Component::Gateway => "portcullis_gateway",
            Component::Av => "portcullis_av",
            Component::Transcript => "smtp_transcript",
        }
    }

    /// The component a component name denotes, if any.
    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The component an event target belongs to: the most specific mapping wins, so
    /// `portcullis_gateway::control::socket` is `control`, not `gateway`.
    pub fn of_target(target: &str) -> Option<Component> {
        Component::ALL
            .into_iter()
            .filter(|c| {
                let prefix = c.target();
                target == prefix
                    || target
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with("::"))
            })
            .max_by_key(|c| c.target().len())
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much to log: a level and everything more severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The name as written in configuration and directives.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The directives currently in force: a default level, a level per target, and any advanced EnvFilter
/// directives (span or field filters) kept verbatim.
///
/// Kept as a map rather than a string so that raising one component later replaces its earlier setting instead
/// of piling up contradicting directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    default: String,
    targets: BTreeMap<String, String>,
    advanced: Vec<String>,
}

impl Directives {
    /// The directives of the `[log]` configuration.
    pub(crate) fn from_config(level: LogLevel, components: &BTreeMap<Component, LogLevel>) -> Self {
        Directives {
            default: level.name().to_string(),
            targets: components
                .iter()
                .map(|(c, l)| (c.target().to_string(), l.name().to_string()))
                .collect(),
            advanced: Vec::new(),
        }
    }

    /// Applies comma-separated directives on top of these. Each is `LEVEL`, `COMPONENT=LEVEL`, `TARGET=LEVEL`,
    /// a bare `TARGET` (everything from it) or an advanced EnvFilter directive with `[span{field}]`.
    pub(crate) fn apply(&mut self, text: &str) -> Result<(), LoggingError> {
        let mut next = self.clone();
        for directive in split_directives(text) {
            let bad = |reason: &str| LoggingError::BadDirective {
                directive: directive.to_string(),
                reason: reason.to_string(),
            };
            if directive.contains('[') {
                EnvFilter::builder()
                    .parse(directive)
                    .map_err(|e| bad(&e.to_string()))?;
                next.advanced.retain(|d| d != directive);
                next.advanced.push(directive.to_string());
                continue;
            }
            let (name, level) = match directive.split_once('=') {
                Some((name, level)) => (name.trim(), Some(level.trim())),
                None if LevelFilter::from_str(directive).is_ok() => {
                    next.default = directive.to_ascii_lowercase();
                    continue;
                }
                None => (directive, None),
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(bad("expected COMPONENT=LEVEL or TARGET=LEVEL"));
            }
            let level = match level {
                Some(level) => {
                    LevelFilter::from_str(level).map_err(|_| {
                        bad("the level must be one of off, error, warn, info, debug, trace")
                    })?;
                    level.to_ascii_lowercase()
                }
                None => "trace".to_string(),
            };
            let target = Component::from_name(name).map_or(name, |c| c.target());
            next.targets.insert(target.to_string(), level);
        }
        *self = next;
        Ok(())
    }

    /// The filter these directives describe.
    pub(crate) fn to_filter(&self) -> Result<EnvFilter, LoggingError> {
        let text = self.to_string();
        EnvFilter::builder()
            .parse(&text)
            .map_err(|e| LoggingError::BadDirective {
                directive: text,
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for Directives {
    /// The equivalent EnvFilter string, e.g. `info,portcullis_smtp=debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.default)?;
        for (target, level) in &self.targets {
            write!(f, ",{target}={level}")?;
        }
        for directive in &self.advanced {
            write!(f, ",{directive}")?;
        }
        Ok(())
    }
}

/// Splits at commas outside `[...]` and `{...}`, where field filters may contain commas of their own.
fn split_directives(text: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_maps_to_its_crate_target() {
        let expected = [
            ("smtp", "portcullis_smtp"),
            ("queue", "portcullis_queue"),
            ("delivery", "portcullis_delivery"),
            ("scan", "portcullis_scan"),
            ("defs", "portcullis_defs"),
            ("console", "portcullis_web"),
            ("control", "portcullis_gateway::control"),
            ("supervise", "portcullis_gateway::supervise"),
            ("gateway", "portcullis_gateway"),
            ("av", "portcullis_av"),
            ("transcript", "smtp_transcript"),
        ];
        for (name, target) in expected {
            let component = Component::from_name(name).unwrap();
            assert_eq!(component.target(), target, "{name}");
            assert_eq!(component.name(), name);
        }
        assert_eq!(Component::from_name("portcullis_smtp"), None);
    }

    #[test]
    fn event_targets_belong_to_the_most_specific_component() {
        assert_eq!(
            Component::of_target("portcullis_smtp::session"),
            Some(Component::Smtp)
        );
        assert_eq!(
            Component::of_target("portcullis_gateway::control::socket"),
            Some(Component::Control)
        );
        assert_eq!(
            Component::of_target("portcullis_gateway::app"),
            Some(Component::Gateway)
        );
        assert_eq!(Component::of_target("portcullis_smtpx"), None);
        assert_eq!(Component::of_target("hyper"), None);
    }

    #[test]
    fn config_levels_become_target_directives() {
        let components = BTreeMap::from([
            (Component::Smtp, LogLevel::Debug),
            (Component::Control, LogLevel::Trace),
        ]);
        let directives = Directives::from_config(LogLevel::Warn, &components);
        assert_eq!(
            directives.to_string(),
            "warn,portcullis_gateway::control=trace,portcullis_smtp=debug"
        );
        directives.to_filter().unwrap();
    }

    #[test]
    fn component_names_and_raw_directives_are_both_accepted() {
        let mut directives = Directives::from_config(LogLevel::Info, &BTreeMap::new());
        directives
            .apply("smtp=debug, queue=trace,hyper=warn,debug,my_crate[conn{peer=1}]=trace")
            .unwrap();
        assert_eq!(
            directives.to_string(),
            "debug,hyper=warn,portcullis_queue=trace,portcullis_smtp=debug,my_crate[conn{peer=1}]=trace"
        );
        directives.to_filter().unwrap();
    }

    #[test]
    fn a_later_setting_replaces_the_earlier_one_for_the_same_component() {
        let mut directives = Directives::from_config(
            LogLevel::Info,
            &BTreeMap::from([(Component::Smtp, LogLevel::Warn)]),
        );
        directives.apply("smtp=trace").unwrap();
        assert_eq!(directives.to_string(), "info,portcullis_smtp=trace");
    }

    #[test]
    fn a_bad_directive_is_rejected_and_changes_nothing() {
        let mut directives = Directives::from_config(LogLevel::Info, &BTreeMap::new());
        let before = directives.clone();
        let error = directives.apply("smtp=debug,queue=loud").unwrap_err();
        assert!(error.to_string().contains("queue=loud"), "{error}");
        assert_eq!(directives, before);
        assert!(directives.apply("two words=debug").is_err());
    }
}
