//! What one client may hold of a listener: connections, HTTP/2 streams, and
//! the time to finish a handshake, send a request or sit idle. The same
//! settings (and defaults) for the webhook, the pod API and the probes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `webhook.limits`, `api.limits`, `metrics.limits` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections at once; one more is closed as soon as it is
    /// accepted (a kube-apiserver keeps a handful per webhook).
    pub max_connections: usize,
    /// HTTP/2 streams in flight on one connection (the API server's HTTP/2
    /// client opens another connection when it needs more).
    pub max_concurrent_streams: u32,
    /// From TCP accept to a finished TLS handshake.
    pub handshake_timeout_seconds: f64,
    /// From the connection's start (or the end of its previous request) to a
    /// complete request head: bounds a connection that never sends anything,
    /// sends only the HTTP/2 preface, or dribbles its headers.
    pub request_header_timeout_seconds: f64,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout_seconds: f64,
    /// HTTP/2 PING interval; a peer that does not answer within the same
    /// time is disconnected.
    pub keep_alive_interval_seconds: f64,
    /// On shutdown, how long open requests may finish before connections
    /// are closed.
    pub drain_timeout_seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_concurrent_streams: 32,
            handshake_timeout_seconds: 5.0,
            request_header_timeout_seconds: 10.0,
            idle_timeout_seconds: 60.0,
            keep_alive_interval_seconds: 20.0,
            drain_timeout_seconds: 20.0,
        }
    }
}

impl Limits {
    pub fn handshake_timeout(&self) -> Duration {
        seconds(self.handshake_timeout_seconds)
    }

    pub fn request_header_timeout(&self) -> Duration {
        seconds(self.request_header_timeout_seconds)
    }

    pub fn idle_timeout(&self) -> Duration {
        seconds(self.idle_timeout_seconds)
    }

    pub fn keep_alive_interval(&self) -> Duration {
        seconds(self.keep_alive_interval_seconds)
    }

    pub fn drain_timeout(&self) -> Duration {
        seconds(self.drain_timeout_seconds)
    }

    /// Every bound must be set: a zero or negative value would turn a bound
    /// off or close every connection at once. Errors name the key under
    /// `prefix` (`webhook.limits`).
    pub fn validate(&self, prefix: &str) -> Result<(), (String, String)> {
        if self.max_connections == 0 {
            return Err((
                format!("{prefix}.maxConnections"),
                "must be at least 1".into(),
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err((
                format!("{prefix}.maxConcurrentStreams"),
                "must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("handshakeTimeoutSeconds", self.handshake_timeout_seconds),
            (
                "requestHeaderTimeoutSeconds",
                self.request_header_timeout_seconds,
            ),
            ("idleTimeoutSeconds", self.idle_timeout_seconds),
            ("keepAliveIntervalSeconds", self.keep_alive_interval_seconds),
            ("drainTimeoutSeconds", self.drain_timeout_seconds),
        ] {
            check_seconds(value).map_err(|reason| (format!("{prefix}.{key}"), reason))?;
        }
        Ok(())
    }
}

/// A positive, finite number of seconds of at most a day.
pub fn check_seconds(value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(())
    } else {
        Err(format!(
            "{value} must be a number of seconds above 0 and at most 86400"
        ))
    }
}

/// Seconds from the configuration as a `Duration`; only called on validated
/// values, so the conversion cannot fail.
pub fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounded() {
        let limits = Limits::default();
        limits.validate("webhook.limits").unwrap();
        assert_eq!(limits.request_header_timeout(), Duration::from_secs(10));
        assert_eq!(limits.handshake_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn zero_and_nonsense_name_the_key() {
        let limits = Limits {
            idle_timeout_seconds: 0.0,
            ..Limits::default()
        };
        let (key, _) = limits.validate("api.limits").unwrap_err();
        assert_eq!(key, "api.limits.idleTimeoutSeconds");
        let limits = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert_eq!(
            limits.validate("metrics.limits").unwrap_err().0,
            "metrics.limits.maxConnections"
        );
        assert!(check_seconds(f64::NAN).is_err());
        assert!(check_seconds(f64::INFINITY).is_err());
        assert!(check_seconds(0.25).is_ok());
        assert_eq!(seconds(0.25), Duration::from_millis(250));
    }
}
