//! The running gateway's own report (health, queues, definitions), asked over its control
//! socket with the gateway's client, and put in a few short lines.

use std::path::Path;
use std::time::Duration;

use portcullis_gateway::control::{self, ClientError, Request, Response};
use serde_json::Value;

/// Longest wait for the gateway's answer; a wedged gateway must not freeze the console.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the gateway behind `socket` for its status; the error says why there is no answer.
pub fn gateway_status(socket: &Path, timeout: Duration) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control client: {e}"))?;
    let answer = runtime.block_on(async {
        tokio::time::timeout(timeout, control::request(socket, &Request::Status)).await
    });
    match answer {
        Err(_) => Err(format!(
            "the gateway did not answer within {} s",
            timeout.as_secs()
        )),
        Ok(Err(ClientError::NotRunning(_))) => Err("the gateway is not running".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Response::Refused { message })) => Err(message),
        Ok(Ok(Response::Ok { data, .. })) => Ok(data),
    }
}

/// The status as `label: value` lines (labels padded to `width`).
pub fn describe(data: &Value, width: usize) -> Vec<String> {
    let line = |label: &str, value: String| format!("{:<width$}{value}", format!("{label}:"));
    let mut lines = Vec::new();
    let healthy = data["healthy"].as_bool().unwrap_or(false);
    lines.push(line(
        "Health",
        format!(
            "{}, up {} s, version {}",
            if healthy { "healthy" } else { "UNHEALTHY" },
            data["uptime_seconds"],
            data["version"].as_str().unwrap_or("?")
        ),
    ));
    let q = &data["queues"];
    lines.push(line(
        "Queues",
        format!(
            "incoming {}, deferred {}, hold {}",
            q["incoming"], q["deferred"], q["hold"]
        ),
    ));
    let defs = &data["definitions"];
    lines.push(line(
        "Definitions",
        if defs.is_null() {
            "none installed (built-in test signature only)".into()
        } else {
            format!(
                "version {}, expires {}",
                defs["version"],
                defs["expires"].as_str().unwrap_or("?")
            )
        },
    ));
    let troubled: Vec<String> = data["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"].as_str() != Some("running"))
        .map(|p| {
            format!(
                "{} ({})",
                p["name"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !troubled.is_empty() {
        lines.push(line("Not running", troubled.join(", ")));
    }
    for (flag, text) in [
        ("delivery_paused", "delivery is paused"),
        (
            "rejecting_incoming",
            "new mail is refused (ctl reject-incoming)",
        ),
        ("disk_floor", "disk almost full: new mail is refused"),
    ] {
        if data[flag].as_bool() == Some(true) {
            lines.push(line("Note", text.into()));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gateway_is_reported_as_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let e = gateway_status(&dir.path().join("control.sock"), STATUS_TIMEOUT).unwrap_err();
        assert!(e.contains("not running"), "{e}");
    }

    #[test]
    fn a_gateway_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = gateway_status(&path, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
    }

    #[test]
    fn describe_names_queues_definitions_and_troubled_parts() {
        let data = serde_json::json!({
            "healthy": false, "uptime_seconds": 42, "version": "0.1.0",
            "queues": {"incoming": 1, "deferred": 2, "hold": 3},
            "definitions": {"version": 7, "expires": "2030-01-01T00:00:00Z"},
            "parts": [{"name": "smtp", "state": "running"}, {"name": "delivery", "state": "restarting"}],
            "delivery_paused": true, "rejecting_incoming": false, "disk_floor": false,
        });
        let text = describe(&data, 14).join("\n");
        assert!(text.contains("Health:       UNHEALTHY, up 42 s"), "{text}");
        assert!(
            text.contains("Queues:       incoming 1, deferred 2, hold 3"),
            "{text}"
        );
        assert!(
            text.contains("Definitions:  version 7, expires 2030"),
            "{text}"
        );
        assert!(
            text.contains("Not running:  delivery (restarting)"),
            "{text}"
        );
        assert!(text.contains("delivery is paused"), "{text}");
        let none = describe(&serde_json::json!({"definitions": null}), 14).join("\n");
        assert!(none.contains("none installed"), "{none}");
    }
}
