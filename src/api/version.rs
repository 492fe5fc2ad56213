//! `GET /api/v1/version`: what is running. The commit and date are stamped by
//! `build.rs`.

use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "Version")]
pub struct VersionInfo {
    #[schemars(example = &"0.1.0")]
    pub version: &'static str,
    #[schemars(example = &"f6d52c0a1b2c")]
    pub git_commit: &'static str,
    #[schemars(extend("format" = "date-time"))]
    pub build_date: &'static str,
}

impl VersionInfo {
    pub fn get() -> VersionInfo {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("DEVENV_GIT_COMMIT"),
            build_date: env!("DEVENV_BUILD_DATE"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_stamped() {
        let v = VersionInfo::get();
        assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
        assert!(!v.git_commit.is_empty());
        // RFC 3339, UTC: 2025-01-02T03:04:05Z
        assert_eq!(v.build_date.len(), 20, "{}", v.build_date);
        assert!(v.build_date.ends_with('Z'), "{}", v.build_date);
    }
}
