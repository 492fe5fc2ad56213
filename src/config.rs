//! Configuration: a YAML file where every key is optional, docs/configuration.md defaults,
//! and environment overrides for the common keys.
//!
//! Errors name the offending key (`webhook.bind: invalid socket address ...`),
//! so a typo in a ConfigMap is found from the first log line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::quantity::Quantity;
use crate::server::limits::{self, Limits};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub webhook: WebhookConfig,
    pub api: ApiConfig,
    pub metrics: PlainListener,
    pub log_level: String,
    pub devenv: DevenvConfig,
    pub operator: OperatorConfig,
    pub certs: crate::certs::CertsConfig,
}

/// The webhook's listener, and what the request bodies in flight may hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub bind: SocketAddr,
    pub cert_dir: PathBuf,
    /// Bytes of AdmissionReview bodies buffered at once, over all
    /// connections (a Kubernetes quantity: `32Mi`). A body is read only with
    /// its bytes reserved from this budget.
    pub max_body_bytes_in_flight: String,
    /// How long a request may wait for room in that budget before it gets
    /// 503 with `Retry-After`.
    pub body_budget_wait_seconds: f64,
    /// How long a client may take to send its body once the head arrived.
    pub body_timeout_seconds: f64,
    pub limits: Limits,
}

/// The pod API's listener and its protection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiConfig {
    pub bind: SocketAddr,
    pub cert_dir: PathBuf,
    /// Sustained requests per second one developer may make (token bucket).
    pub developer_requests_per_second: f64,
    /// Requests one developer may make in a burst above the sustained rate.
    pub developer_burst: u32,
    /// Failed authentications per minute allowed from one client address;
    /// past it, unknown tokens from that address are refused without a
    /// TokenReview, so junk tokens cannot flood the API server.
    pub failed_auths_per_minute: f64,
    pub failed_auth_burst: u32,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PlainListener {
    pub bind: SocketAddr,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DevenvConfig {
    pub manager_url: String,
    pub audience: String,
    pub token_expiration_seconds: i64,
    pub token_mount_path: String,
    pub namespaces: Vec<String>,
    pub service_account_prefix: String,
    pub reserved_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OperatorConfig {
    pub namespace: String,
    #[serde(deserialize_with = "default_quota_over_spec_defaults")]
    pub default_resource_quota: QuotaConfig,
    #[serde(deserialize_with = "max_quota_over_spec_defaults")]
    pub max_resource_quota: QuotaConfig,
    pub default_network_policy: NetworkPolicyConfig,
    pub default_vault_role: String,
    /// The operator's request budget: at most this many of its writes are
    /// in flight at once, and as many LearnerSpaces are reconciled at once
    /// (docs/performance.md says how it sits with the API server's priority
    /// and fairness).
    pub max_in_flight_writes: usize,
}

/// Past this many in flight, one client holds more of a default API server's
/// concurrency (600 seats, 245 of them for service accounts) than is fair.
pub const MAX_IN_FLIGHT_WRITES_LIMIT: usize = 200;

/// Quota amounts. Quantities are kept as the strings the user wrote (they are
/// validated at load time) so that rendered objects show them unchanged.
/// In a file every key is optional: a quota given in part keeps the defaults
/// of the keys it leaves out (those of `defaultResourceQuota` or of
/// `maxResourceQuota`, whichever it is).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaConfig {
    pub cpu: String,
    pub memory: String,
    /// `requests.storage`: what the learner's volume claims may request.
    pub storage: String,
    /// `requests.ephemeral-storage` and `limits.ephemeral-storage`: the
    /// node disk the learner's containers may use (writable layers, logs,
    /// `emptyDir`).
    pub ephemeral_storage: String,
    pub pods: i64,
    pub services: i64,
    pub secrets: i64,
    pub configmaps: i64,
}

/// A quota as written in a file, every key optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuotaKeys {
    cpu: Option<String>,
    memory: Option<String>,
    storage: Option<String>,
    ephemeral_storage: Option<String>,
    pods: Option<i64>,
    services: Option<i64>,
    secrets: Option<i64>,
    configmaps: Option<i64>,
}

impl QuotaKeys {
    fn over(self, defaults: QuotaConfig) -> QuotaConfig {
        QuotaConfig {
            cpu: self.cpu.unwrap_or(defaults.cpu),
            memory: self.memory.unwrap_or(defaults.memory),
            storage: self.storage.unwrap_or(defaults.storage),
            ephemeral_storage: self.ephemeral_storage.unwrap_or(defaults.ephemeral_storage),
            pods: self.pods.unwrap_or(defaults.pods),
            services: self.services.unwrap_or(defaults.services),
            secrets: self.secrets.unwrap_or(defaults.secrets),
            configmaps: self.configmaps.unwrap_or(defaults.configmaps),
        }
    }
}

fn default_quota_over_spec_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<QuotaConfig, D::Error> {
    Ok(QuotaKeys::deserialize(d)?.over(OperatorConfig::default().default_resource_quota))
}

fn max_quota_over_spec_defaults<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<QuotaConfig, D::Error> {
    Ok(QuotaKeys::deserialize(d)?.over(OperatorConfig::default().max_resource_quota))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NetworkPolicyConfig {
    pub egress_deny: bool,
    pub allowed_namespaces: Vec<String>,
}

fn default_cert_dir() -> PathBuf {
    PathBuf::from("certs")
}

fn default_object_count() -> i64 {
    100
}

fn listen(addr: &str) -> SocketAddr {
    // Constant, well-formed literals: parsing cannot fail.
    addr.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            webhook: WebhookConfig::default(),
            api: ApiConfig::default(),
            metrics: PlainListener::default(),
            log_level: "info".to_string(),
            devenv: DevenvConfig::default(),
            operator: OperatorConfig::default(),
            certs: crate::certs::CertsConfig::default(),
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            bind: listen("0.0.0.0:8443"),
            cert_dir: default_cert_dir(),
            max_body_bytes_in_flight: "32Mi".into(),
            body_budget_wait_seconds: 1.0,
            body_timeout_seconds: 10.0,
            limits: Limits::default(),
        }
    }
}

impl WebhookConfig {
    /// `maxBodyBytesInFlight` in bytes; validated by [`Config::validate`].
    pub fn body_budget_bytes(&self) -> usize {
        Quantity::parse(&self.max_body_bytes_in_flight)
            .map(|q| usize::try_from(q.value()).unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: listen("0.0.0.0:8080"),
            cert_dir: default_cert_dir(),
            developer_requests_per_second: 20.0,
            developer_burst: 40,
            failed_auths_per_minute: 30.0,
            failed_auth_burst: 10,
            limits: Limits::default(),
        }
    }
}

impl Default for PlainListener {
    fn default() -> Self {
        PlainListener {
            bind: listen("0.0.0.0:9090"),
            limits: Limits::default(),
        }
    }
}

impl Default for DevenvConfig {
    fn default() -> Self {
        DevenvConfig {
            manager_url: "https://devenv-manager.devenv-system.svc.cluster.local:8080".into(),
            audience: "devenv-manager".into(),
            token_expiration_seconds: 3600,
            token_mount_path: "/var/run/secrets/tokens".into(),
            namespaces: vec!["devenv".into()],
            service_account_prefix: "devenv-".into(),
            reserved_names: vec!["manager".into(), "user-template".into()],
        }
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: "aivo-system".into(),
            default_resource_quota: QuotaConfig {
                cpu: "2".into(),
                memory: "4Gi".into(),
                storage: "10Gi".into(),
                ephemeral_storage: "10Gi".into(),
                pods: 10,
                services: 5,
                secrets: 10,
                configmaps: 10,
            },
            max_resource_quota: QuotaConfig {
                cpu: "16".into(),
                memory: "64Gi".into(),
                storage: "500Gi".into(),
                ephemeral_storage: "100Gi".into(),
                pods: 100,
                services: default_object_count(),
                secrets: default_object_count(),
                configmaps: default_object_count(),
            },
            default_network_policy: NetworkPolicyConfig::default(),
            default_vault_role: "learner-default".into(),
            max_in_flight_writes: 32,
        }
    }
}

impl Default for NetworkPolicyConfig {
    fn default() -> Self {
        NetworkPolicyConfig {
            egress_deny: true,
            allowed_namespaces: vec!["aivo-system".into(), "aivo-shared".into()],
        }
    }
}

/// Sets one key of the configuration from an environment variable's value.
type EnvSetter = fn(&mut Config, String) -> Result<(), String>;

/// The environment variables that override the file, in the order applied,
/// and the keys they set (docs/configuration.md lists the same).
pub const ENV_OVERRIDES: &[(&str, &str, EnvSetter)] = &[
    ("WEBHOOK_BIND", "webhook.bind", |c, v| {
        c.webhook.bind = socket_address(&v)?;
        Ok(())
    }),
    ("API_BIND", "api.bind", |c, v| {
        c.api.bind = socket_address(&v)?;
        Ok(())
    }),
    ("METRICS_BIND", "metrics.bind", |c, v| {
        c.metrics.bind = socket_address(&v)?;
        Ok(())
    }),
    ("CERT_DIR", "webhook.certDir and api.certDir", |c, v| {
        c.webhook.cert_dir = PathBuf::from(&v);
        c.api.cert_dir = PathBuf::from(v);
        Ok(())
    }),
    ("CERTS_MODE", "certs.mode", |c, v| {
        c.certs.mode = v.parse()?;
        Ok(())
    }),
    ("LOG_LEVEL", "logLevel", |c, v| {
        c.log_level = v;
        Ok(())
    }),
    ("DEVENV_MANAGER_URL", "devenv.managerUrl", |c, v| {
        c.devenv.manager_url = v;
        Ok(())
    }),
    ("DEVENV_AUDIENCE", "devenv.audience", |c, v| {
        c.devenv.audience = v;
        Ok(())
    }),
    (
        "DEVENV_NAMESPACES",
        "devenv.namespaces (comma-separated)",
        |c, v| {
            c.devenv.namespaces = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            Ok(())
        },
    ),
    ("OPERATOR_NAMESPACE", "operator.namespace", |c, v| {
        c.operator.namespace = v;
        Ok(())
    }),
];

fn socket_address(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|e| format!("{value:?} is not a socket address: {e}"))
}

impl Config {
    /// Loads the file (if any), applies the environment, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses YAML; the error names the key path of the first bad value.
    pub fn from_yaml(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
            let text = e.to_string();
            format!(
                "not valid YAML: {}",
                text.lines().next().unwrap_or_default()
            )
        })?;
        if value.is_null() {
            return Ok(Config::default());
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
    }

    /// Every listener's bounds, and the webhook's body budget: it must hold
    /// at least one review of the largest size accepted.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let invalid = |(key, message): (String, String)| ConfigError::Invalid { key, message };
        self.webhook
            .limits
            .validate("webhook.limits")
            .map_err(invalid)?;
        self.api.limits.validate("api.limits").map_err(invalid)?;
        self.metrics
            .limits
            .validate("metrics.limits")
            .map_err(invalid)?;
        let w = &self.webhook;
        for (key, value) in [
            ("webhook.bodyBudgetWaitSeconds", w.body_budget_wait_seconds),
            ("webhook.bodyTimeoutSeconds", w.body_timeout_seconds),
        ] {
            limits::check_seconds(value).map_err(|m| invalid((key.into(), m)))?;
        }
        let budget = Quantity::parse(&w.max_body_bytes_in_flight)
            .map_err(|e| invalid(("webhook.maxBodyBytesInFlight".into(), e.to_string())))?;
        if budget.value() < crate::webhook::MAX_REVIEW_BYTES as i64 {
            return Err(invalid((
                "webhook.maxBodyBytesInFlight".into(),
                format!(
                    "{} must hold at least one review of the largest size accepted (3Mi)",
                    w.max_body_bytes_in_flight
                ),
            )));
        }
        Ok(())
    }

    /// Applies environment overrides; `lookup` is `std::env::var` outside tests.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (var, _key, set) in ENV_OVERRIDES {
            if let Some(value) = lookup(var) {
                set(self, value).map_err(|message| ConfigError::Env { var, message })?;
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: names, quantities, bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        self.validate_listeners()?;
        self.certs
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key: format!("certs.{key}"),
                message,
            })?;
        let d = &self.devenv;
        if d.audience.is_empty() {
            return Err(invalid("devenv.audience", "must not be empty".into()));
        }
        if d.manager_url.starts_with("http://") {
            // Devenv pods send their tokens to this URL.
            return Err(invalid(
                "devenv.managerUrl",
                format!(
                    "{:?} is plain http: devenv pods would send their tokens in clear text; use https://",
                    d.manager_url
                ),
            ));
        }
        if !d.manager_url.starts_with("https://") {
            return Err(invalid(
                "devenv.managerUrl",
                format!("{:?} is not an https URL", d.manager_url),
            ));
        }
        if !(600..=86_400 * 2).contains(&d.token_expiration_seconds) {
            // The API server refuses projected tokens under 10 minutes.
            return Err(invalid(
                "devenv.tokenExpirationSeconds",
                format!(
                    "{} is outside 600..=172800 (Kubernetes needs at least 600)",
                    d.token_expiration_seconds
                ),
            ));
        }
        if !d.token_mount_path.starts_with('/') || d.token_mount_path.contains(':') {
            return Err(invalid(
                "devenv.tokenMountPath",
                format!("{:?} must be an absolute path", d.token_mount_path),
            ));
        }
        if d.namespaces.is_empty() {
            return Err(invalid(
                "devenv.namespaces",
                "must name at least one namespace".into(),
            ));
        }
        for (i, ns) in d.namespaces.iter().enumerate() {
            if let Err(e) = crate::names::check_dns1123_label(ns) {
                return Err(invalid(&format!("devenv.namespaces[{i}]"), e));
            }
        }
        if d.service_account_prefix.is_empty() {
            return Err(invalid(
                "devenv.serviceAccountPrefix",
                "must not be empty".into(),
            ));
        }
        let api = &self.api;
        for (key, rate) in [
            (
                "api.developerRequestsPerSecond",
                api.developer_requests_per_second,
            ),
            ("api.failedAuthsPerMinute", api.failed_auths_per_minute),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(invalid(key, format!("{rate} must be a positive number")));
            }
        }
        for (key, burst) in [
            ("api.developerBurst", api.developer_burst),
            ("api.failedAuthBurst", api.failed_auth_burst),
        ] {
            if burst == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        let in_flight = self.operator.max_in_flight_writes;
        if !(1..=MAX_IN_FLIGHT_WRITES_LIMIT).contains(&in_flight) {
            return Err(invalid(
                "operator.maxInFlightWrites",
                format!("{in_flight} must be from 1 to {MAX_IN_FLIGHT_WRITES_LIMIT}"),
            ));
        }
        if let Err(e) = crate::names::check_dns1123_label(&self.operator.namespace) {
            return Err(invalid("operator.namespace", e));
        }
        for (key, quota) in [
            (
                "operator.defaultResourceQuota",
                &self.operator.default_resource_quota,
            ),
            (
                "operator.maxResourceQuota",
                &self.operator.max_resource_quota,
            ),
        ] {
            for (field, text) in [
                ("cpu", &quota.cpu),
                ("memory", &quota.memory),
                ("storage", &quota.storage),
                ("ephemeralStorage", &quota.ephemeral_storage),
            ] {
                match Quantity::parse(text) {
                    Ok(q) if q.is_positive() => {}
                    Ok(_) => {
                        return Err(invalid(
                            &format!("{key}.{field}"),
                            "must be greater than zero".into(),
                        ));
                    }
                    Err(e) => return Err(invalid(&format!("{key}.{field}"), e.to_string())),
                }
            }
            for (field, n) in [
                ("pods", quota.pods),
                ("services", quota.services),
                ("secrets", quota.secrets),
                ("configmaps", quota.configmaps),
            ] {
                if n < 0 {
                    return Err(invalid(
                        &format!("{key}.{field}"),
                        "must not be negative".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_spec_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.webhook.bind.to_string(), "0.0.0.0:8443");
        assert_eq!(c.api.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(c.metrics.bind.to_string(), "0.0.0.0:9090");
        assert_eq!(c.devenv.namespaces, ["devenv"]);
        assert_eq!(c.devenv.reserved_names, ["manager", "user-template"]);
        assert_eq!(c.operator.default_resource_quota.memory, "4Gi");
        assert_eq!(c.operator.max_resource_quota.pods, 100);
        assert!(c.operator.default_network_policy.egress_deny);
        c.validate().unwrap();
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_yaml(
            "devenv:\n  namespaces: [devenv, sandbox]\nwebhook:\n  bind: 127.0.0.1:9443\n",
        )
        .unwrap();
        assert_eq!(c.devenv.namespaces, ["devenv", "sandbox"]);
        assert_eq!(c.devenv.audience, "devenv-manager");
        assert_eq!(c.webhook.bind.to_string(), "127.0.0.1:9443");
        assert_eq!(c.webhook.cert_dir, PathBuf::from("certs"));
    }

    #[test]
    fn a_quota_given_in_part_keeps_the_other_defaults() {
        let c = Config::from_yaml(
            "operator:\n  defaultResourceQuota: {cpu: \"1\"}\n  maxResourceQuota: {ephemeralStorage: 20Gi}\n",
        )
        .unwrap();
        let d = &c.operator.default_resource_quota;
        assert_eq!((d.cpu.as_str(), d.memory.as_str()), ("1", "4Gi"));
        assert_eq!(d.ephemeral_storage, "10Gi");
        let m = &c.operator.max_resource_quota;
        assert_eq!(
            (m.cpu.as_str(), m.ephemeral_storage.as_str()),
            ("16", "20Gi")
        );
        assert_eq!(m.pods, 100);
        c.validate().unwrap();
        let err =
            Config::from_yaml("operator:\n  maxResourceQuota: {ephemeral: 1Gi}\n").unwrap_err();
        assert!(err.contains("ephemeral"), "{err}");
        let mut bad = Config::default();
        bad.operator.max_resource_quota.ephemeral_storage = "0".into();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("operator.maxResourceQuota.ephemeralStorage:"),
            "{err}"
        );
    }

    #[test]
    fn api_limits_have_defaults_and_can_be_set() {
        let c = Config::from_yaml("api:\n  bind: 127.0.0.1:8080\n  developerBurst: 5\n").unwrap();
        assert_eq!(c.api.developer_burst, 5);
        assert_eq!(c.api.developer_requests_per_second, 20.0);
        assert_eq!(c.api.failed_auth_burst, 10);
        assert_eq!(c.api.cert_dir, PathBuf::from("certs"));
        c.validate().unwrap();
    }

    #[test]
    fn listener_sections_given_in_part_keep_their_defaults() {
        let c = Config::from_yaml(
            "webhook:\n  certDir: /tls\n  limits:\n    idleTimeoutSeconds: 5\napi:\n  developerBurst: 3\nmetrics:\n  limits:\n    maxConnections: 7\n",
        )
        .unwrap();
        assert_eq!(c.webhook.bind.to_string(), "0.0.0.0:8443");
        assert_eq!(c.webhook.cert_dir, PathBuf::from("/tls"));
        assert_eq!(c.webhook.limits.idle_timeout_seconds, 5.0);
        assert_eq!(c.webhook.limits.max_connections, 512);
        assert_eq!(c.webhook.body_budget_bytes(), 32 * 1024 * 1024);
        assert_eq!(c.api.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(c.api.developer_burst, 3);
        assert_eq!(c.api.limits, Limits::default());
        assert_eq!(c.metrics.bind.to_string(), "0.0.0.0:9090");
        assert_eq!(c.metrics.limits.max_connections, 7);
        c.validate().unwrap();
    }

    #[test]
    fn listener_limits_are_validated_by_key() {
        let c =
            Config::from_yaml("metrics:\n  limits:\n    requestHeaderTimeoutSeconds: 0\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("metrics.limits.requestHeaderTimeoutSeconds:"),
            "{err}"
        );
        let c = Config::from_yaml("webhook:\n  maxBodyBytesInFlight: 1Mi\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("webhook.maxBodyBytesInFlight:"), "{err}");
        let c = Config::from_yaml("webhook:\n  maxBodyBytesInFlight: lots\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::from_yaml("webhook:\n  bodyTimeoutSeconds: -1\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("webhook.bodyTimeoutSeconds:"), "{err}");
        let err = Config::from_yaml("api:\n  limits:\n    maxConections: 3\n").unwrap_err();
        assert!(err.contains("maxConections"), "{err}");
    }

    #[test]
    fn the_operator_write_budget_is_bounded() {
        let c = Config::from_yaml("operator:\n  maxInFlightWrites: 64\n").unwrap();
        assert_eq!(c.operator.max_in_flight_writes, 64);
        c.validate().unwrap();
        assert_eq!(Config::default().operator.max_in_flight_writes, 32);
        for bad in [0, MAX_IN_FLIGHT_WRITES_LIMIT + 1] {
            let mut c = Config::default();
            c.operator.max_in_flight_writes = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with("operator.maxInFlightWrites:"), "{err}");
        }
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::from_yaml("webhook:\n  bind: not-an-address\n").unwrap_err();
        assert!(err.starts_with("webhook.bind:"), "{err}");
        let err = Config::from_yaml("devenv:\n  tokenExpirationSeconds: soon\n").unwrap_err();
        assert!(err.starts_with("devenv.tokenExpirationSeconds:"), "{err}");
        let err = Config::from_yaml("devenv:\n  audiance: x\n").unwrap_err();
        assert!(err.contains("audiance"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.operator.max_resource_quota.memory = "lots".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("operator.maxResourceQuota.memory:"),
            "{err}"
        );

        let mut c = Config::default();
        c.devenv.namespaces = vec!["Dev_Env".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("devenv.namespaces[0]:"), "{err}");

        let mut c = Config::default();
        c.devenv.token_expiration_seconds = 60;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("tokenExpirationSeconds")
        );

        let mut c = Config::default();
        c.devenv.manager_url = "http://devenv-manager.devenv-system.svc:8080".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("devenv.managerUrl: ") && err.contains("clear text"),
            "{err}"
        );
        c.devenv.manager_url = "ftp://m".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("not an https URL"), "{err}");

        let mut c = Config::default();
        c.api.developer_requests_per_second = 0.0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("api.developerRequestsPerSecond:"), "{err}");
        let mut c = Config::default();
        c.api.failed_auth_burst = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("api.failedAuthBurst:"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = Config::default();
        c.apply_env(|name| match name {
            "WEBHOOK_BIND" => Some("127.0.0.1:1".into()),
            "DEVENV_NAMESPACES" => Some("a, b,,c".into()),
            "LOG_LEVEL" => Some("debug".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.webhook.bind.to_string(), "127.0.0.1:1");
        assert_eq!(c.devenv.namespaces, ["a", "b", "c"]);
        assert_eq!(c.log_level, "debug");

        let err = Config::default()
            .apply_env(|name| (name == "API_BIND").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable API_BIND:")
        );
    }
}
