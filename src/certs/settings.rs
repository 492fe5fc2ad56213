//! The `certs` section of the configuration.

use std::str::FromStr;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::Lifetimes;

/// Where the serving certificates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertsMode {
    /// `self-managed` when running in a pod (`KUBERNETES_SERVICE_HOST` is
    /// set), otherwise `files`, generating a self-signed CA and serving
    /// certificate into `certDir` when it holds none (a laptop).
    #[default]
    Auto,
    /// The Lease holder keeps Secret `devenv-manager-tls`; every replica
    /// serves from it.
    SelfManaged,
    /// `tls.crt`/`tls.key` from `certDir` (cert-manager, or your own),
    /// reloaded when they change. Never generated.
    Files,
}

impl FromStr for CertsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CertsMode::Auto),
            "self-managed" => Ok(CertsMode::SelfManaged),
            "files" => Ok(CertsMode::Files),
            other => Err(format!(
                "{other:?} is not a mode: auto, self-managed or files"
            )),
        }
    }
}

/// What `auto` resolved to for this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SelfManaged,
    Files { generate_when_missing: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CertsConfig {
    pub mode: CertsMode,
    /// The manager's own namespace: where Secret `devenv-manager-tls` and the
    /// certificate Lease live, and the namespace part of the serving
    /// certificate's service names.
    pub namespace: String,
    /// Durations (`43800h`, `90m`, `30s`).
    pub ca_lifetime: String,
    pub serving_lifetime: String,
    /// How long a CA rotation keeps both CAs trusted before switching the
    /// serving certificate, and again before dropping the old CA.
    pub rotation_overlap: String,
}

impl Default for CertsConfig {
    fn default() -> Self {
        CertsConfig {
            mode: CertsMode::Auto,
            namespace: super::startup::DEFAULT_NAMESPACE.into(),
            ca_lifetime: "43800h".into(),
            serving_lifetime: "2160h".into(),
            rotation_overlap: "10m".into(),
        }
    }
}

fn duration(key: &str, text: &str) -> Result<SignedDuration, (String, String)> {
    let parsed = SignedDuration::from_str(text)
        .map_err(|e| (key.to_string(), format!("{text:?} is not a duration: {e}")))?;
    if parsed <= SignedDuration::ZERO {
        return Err((key.to_string(), format!("{text:?} must be positive")));
    }
    Ok(parsed)
}

impl CertsConfig {
    /// This process's certificate source; `in_pod` is whether
    /// `KUBERNETES_SERVICE_HOST` is set.
    pub fn source(&self, in_pod: bool) -> Source {
        match self.mode {
            CertsMode::SelfManaged => Source::SelfManaged,
            CertsMode::Files => Source::Files {
                generate_when_missing: false,
            },
            CertsMode::Auto if in_pod => Source::SelfManaged,
            CertsMode::Auto => Source::Files {
                generate_when_missing: true,
            },
        }
    }

    /// The lifetimes, checked: a serving certificate shorter than its CA, an
    /// overlap shorter than a third of a serving certificate's life (the
    /// rotation must finish before the serving certificate is due again).
    /// Errors name the key (without the `certs.` prefix).
    pub fn lifetimes(&self) -> Result<Lifetimes, (String, String)> {
        let lifetimes = Lifetimes {
            ca: duration("caLifetime", &self.ca_lifetime)?,
            serving: duration("servingLifetime", &self.serving_lifetime)?,
            overlap: duration("rotationOverlap", &self.rotation_overlap)?,
        };
        if lifetimes.serving >= lifetimes.ca {
            return Err((
                "servingLifetime".into(),
                format!(
                    "{} must be shorter than caLifetime ({})",
                    self.serving_lifetime, self.ca_lifetime
                ),
            ));
        }
        if lifetimes.overlap * 3 > lifetimes.serving {
            return Err((
                "rotationOverlap".into(),
                format!(
                    "{} must be at most a third of servingLifetime ({})",
                    self.rotation_overlap, self.serving_lifetime
                ),
            ));
        }
        Ok(lifetimes)
    }

    pub fn validate(&self) -> Result<(), (String, String)> {
        crate::names::check_dns1123_label(&self.namespace)
            .map_err(|e| ("namespace".to_string(), e.to_string()))?;
        self.lifetimes().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_five_years_ninety_days_ten_minutes() {
        let l = CertsConfig::default().lifetimes().unwrap();
        assert_eq!(l.ca, SignedDuration::from_hours(24 * 365 * 5));
        assert_eq!(l.serving, SignedDuration::from_hours(24 * 90));
        assert_eq!(l.overlap, SignedDuration::from_mins(10));
    }

    #[test]
    fn durations_take_hours_minutes_seconds() {
        let c = CertsConfig {
            ca_lifetime: "2m".into(),
            serving_lifetime: "30s".into(),
            rotation_overlap: "1h".into(),
            ..CertsConfig::default()
        };
        assert_eq!(c.lifetimes().unwrap_err().0, "rotationOverlap");
        let c = CertsConfig {
            rotation_overlap: "5s".into(),
            ..c
        };
        assert_eq!(
            c.lifetimes().unwrap().serving,
            SignedDuration::from_secs(30)
        );
    }

    #[test]
    fn bad_durations_name_their_key() {
        for (key, c) in [
            (
                "caLifetime",
                CertsConfig {
                    ca_lifetime: "five years".into(),
                    ..CertsConfig::default()
                },
            ),
            (
                "servingLifetime",
                CertsConfig {
                    serving_lifetime: "-1h".into(),
                    ..CertsConfig::default()
                },
            ),
            (
                "servingLifetime",
                CertsConfig {
                    serving_lifetime: "50000h".into(),
                    ..CertsConfig::default()
                },
            ),
        ] {
            assert_eq!(c.validate().unwrap_err().0, key);
        }
    }

    #[test]
    fn auto_is_self_managed_only_in_a_pod() {
        let c = CertsConfig::default();
        assert_eq!(c.source(true), Source::SelfManaged);
        assert_eq!(
            c.source(false),
            Source::Files {
                generate_when_missing: true
            }
        );
        let files = CertsConfig {
            mode: CertsMode::Files,
            ..c
        };
        assert_eq!(
            files.source(true),
            Source::Files {
                generate_when_missing: false
            }
        );
        assert_eq!("self-managed".parse(), Ok(CertsMode::SelfManaged));
        assert!("SelfManaged".parse::<CertsMode>().is_err());
    }
}
