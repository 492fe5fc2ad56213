//! Names: DNS-1123 labels, developers behind service accounts, and the names
//! the operator derives from a learner id. Pure functions shared by the
//! webhook, the operator and the pod API.

use std::sync::OnceLock;

use regex::Regex;
use sha2::{Digest, Sha256};

use crate::config::DevenvConfig;

/// Prefix of every learner namespace.
pub const LEARNER_NAMESPACE_PREFIX: &str = "aivo-learner-";

/// A regular expression stated once: the CRD schema carries its source as a
/// `pattern` (checked by the API server), the webhook and the rest of the
/// manager match with it, so the two can never disagree.
pub struct Pattern {
    /// Anchored (`^...$`), in the RE2 subset both Kubernetes and `regex` read.
    pub source: &'static str,
    compiled: OnceLock<Regex>,
}

impl Pattern {
    pub const fn new(source: &'static str) -> Self {
        Pattern {
            source,
            compiled: OnceLock::new(),
        }
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.compiled
            .get_or_init(|| Regex::new(self.source).expect("a pattern of the crate compiles"))
            .is_match(text)
    }

    /// The pattern without its anchors, as messages show it.
    pub fn unanchored(&self) -> &'static str {
        self.source.trim_start_matches('^').trim_end_matches('$')
    }
}

/// The longest DNS-1123 label.
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// A DNS-1123 label's characters (RFC 1123, as Kubernetes uses it for
/// namespace and label-like names); the length is [`DNS1123_LABEL_MAX_LEN`].
pub static DNS1123_LABEL: Pattern = Pattern::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");

/// Checks a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending
/// alphanumeric.
pub fn check_dns1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > DNS1123_LABEL_MAX_LEN {
        return Err(format!(
            "{name:?} is longer than {DNS1123_LABEL_MAX_LEN} characters"
        ));
    }
    if !DNS1123_LABEL.is_match(name) {
        return Err(format!(
            "{name:?} is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

pub fn is_dns1123_label(name: &str) -> bool {
    check_dns1123_label(name).is_ok()
}

/// The developer a service account name stands for: `devenv-alice` gives
/// `alice`, when `alice` is a valid DNS-1123 label and not a reserved name.
pub fn developer_from_service_account<'a>(config: &DevenvConfig, sa: &'a str) -> Option<&'a str> {
    let developer = sa.strip_prefix(config.service_account_prefix.as_str())?;
    if !is_dns1123_label(developer) || config.reserved_names.iter().any(|r| r == developer) {
        return None;
    }
    Some(developer)
}

/// The developer behind an authenticated username,
/// `system:serviceaccount:{ns}:devenv-{developer}` with `{ns}` one of the devenv
/// namespaces. Returns the namespace and the developer.
pub fn developer_from_username<'a>(
    config: &DevenvConfig,
    username: &'a str,
) -> Option<(&'a str, &'a str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, sa) = rest.split_once(':')?;
    if !config.namespaces.iter().any(|n| n == namespace) {
        return None;
    }
    Some((namespace, developer_from_service_account(config, sa)?))
}

/// `sanitized-hash8` for a learner id: lower-cased, every run of characters
/// outside `[a-z0-9]` made one `-`, trimmed of `-`, cut so that the namespace
/// (`aivo-learner-` + this) fits in 63 characters; then the first 8 hex digits
/// of SHA-256 of the exact id, so ids that sanitize alike still differ.
pub fn learner_suffix(learner_id: &str) -> String {
    let mut sanitized = String::with_capacity(learner_id.len());
    let mut pending_dash = false;
    for c in learner_id.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !sanitized.is_empty() {
                sanitized.push('-');
            }
            pending_dash = false;
            sanitized.push(c);
        } else {
            pending_dash = true;
        }
    }
    // 63 - "aivo-learner-" (13) - "-" (1) - 8 hex digits = 41.
    let budget = DNS1123_LABEL_MAX_LEN - LEARNER_NAMESPACE_PREFIX.len() - 1 - 8;
    sanitized.truncate(budget);
    let sanitized = sanitized.trim_end_matches('-');
    let hash = hex::encode(Sha256::digest(learner_id.as_bytes()));
    format!("{sanitized}-{}", &hash[..8])
}

/// Whether a learner id sanitizes to something non-empty.
pub fn sanitizes_to_non_empty(learner_id: &str) -> bool {
    learner_id
        .chars()
        .flat_map(char::to_lowercase)
        .any(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

pub fn learner_namespace(learner_id: &str) -> String {
    format!("{LEARNER_NAMESPACE_PREFIX}{}", learner_suffix(learner_id))
}

pub fn tombstone_name(learner_id: &str) -> String {
    format!("tombstone-{}", learner_suffix(learner_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "devenv", "a-b", "0", "a1", &"x".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn developers_from_service_accounts() {
        let c = DevenvConfig::default();
        assert_eq!(
            developer_from_service_account(&c, "devenv-alice"),
            Some("alice")
        );
        assert_eq!(
            developer_from_service_account(&c, "devenv-eywalker"),
            Some("eywalker")
        );
        assert_eq!(
            developer_from_service_account(&c, "devenv-a-b"),
            Some("a-b")
        );
        for not in [
            "default",
            "devenv-",
            "devenv-manager",
            "devenv-user-template",
            "devenv-Alice",
            "devenv--x",
            "devenv-x-",
            "devenv-a.b",
            "xdevenv-alice",
        ] {
            assert_eq!(developer_from_service_account(&c, not), None, "{not}");
        }
    }

    #[test]
    fn developers_from_usernames() {
        let c = DevenvConfig::default();
        assert_eq!(
            developer_from_username(&c, "system:serviceaccount:devenv:devenv-alice"),
            Some(("devenv", "alice"))
        );
        for not in [
            "system:serviceaccount:other:devenv-alice",
            "system:serviceaccount:devenv:devenv-manager",
            "system:serviceaccount:devenv:devenv-user-template",
            "system:serviceaccount:devenv:default",
            "system:serviceaccount:devenv",
            "alice",
            "system:node:devenv-alice",
            "system:serviceaccount:devenv:devenv-alice:extra",
        ] {
            assert_eq!(developer_from_username(&c, not), None, "{not}");
        }
    }

    #[test]
    fn learner_namespaces_follow_the_spec() {
        let ns = learner_namespace("john.doe");
        assert!(ns.starts_with("aivo-learner-john-doe-"), "{ns}");
        assert_eq!(ns.len(), "aivo-learner-john-doe-".len() + 8);
        assert_ne!(learner_namespace("John.Doe"), ns);
        assert!(learner_namespace("John.Doe").starts_with("aivo-learner-john-doe-"));
        assert_eq!(
            learner_suffix("--a..b--"),
            format!("a-b-{}", &hex::encode(Sha256::digest(b"--a..b--"))[..8])
        );
        let long = learner_namespace(&"a.".repeat(100));
        assert!(long.len() <= 63 && is_dns1123_label(&long), "{long}");
        assert!(tombstone_name("john.doe").starts_with("tombstone-john-doe-"));
        assert!(!sanitizes_to_non_empty("..@@"));
        assert!(sanitizes_to_non_empty("._a"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any learner id the webhook accepts names a valid, stable namespace.
        #[test]
        fn learner_namespaces_are_valid_labels(id in "[A-Za-z0-9._@-]{1,128}") {
            prop_assume!(sanitizes_to_non_empty(&id));
            let ns = learner_namespace(&id);
            prop_assert!(is_dns1123_label(&ns), "{}", ns);
            prop_assert!(ns.starts_with(LEARNER_NAMESPACE_PREFIX));
            prop_assert_eq!(&ns, &learner_namespace(&id));
            let tombstone = tombstone_name(&id);
            prop_assert!(tombstone.len() <= 63);
        }

        /// Distinct ids give distinct names, even when they sanitize alike.
        #[test]
        fn distinct_ids_give_distinct_namespaces(a in "[A-Za-z0-9._@-]{1,40}", b in "[A-Za-z0-9._@-]{1,40}") {
            prop_assume!(a != b && sanitizes_to_non_empty(&a) && sanitizes_to_non_empty(&b));
            prop_assert_ne!(learner_namespace(&a), learner_namespace(&b));
        }
    }
}
