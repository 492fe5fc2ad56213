//! Stamps the build with its git commit and date for `GET /api/v1/version`.
//!
//! `DEVENV_GIT_COMMIT` and `DEVENV_BUILD_DATE` (set by CI or the Dockerfile,
//! where there is no `.git`) win; otherwise the commit comes from `git` and the
//! date from `SOURCE_DATE_EPOCH` or the time this script ran. Missing pieces
//! become "unknown": a build never fails for want of version information.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    for var in [
        "DEVENV_GIT_COMMIT",
        "DEVENV_BUILD_DATE",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // Re-run when HEAD moves (a commit, a checkout), not on every source edit.
    // Only files that exist: cargo re-runs a script on every build when a
    // file it watches is missing (a fresh clone has no `packed-refs`), and
    // with it recompiles the crate.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    for file in watched.into_iter().flatten() {
        if std::path::Path::new(&file).exists() {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if git(&["rev-parse", "--git-dir"]).is_none() {
        // No repository (a source tarball, the Docker build): nothing to
        // watch, so run once instead of on every build.
        println!("cargo:rerun-if-changed=build.rs");
    }

    let commit = std::env::var("DEVENV_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    let date = std::env::var("DEVENV_BUILD_DATE").ok().unwrap_or_else(|| {
        let seconds = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            });
        rfc3339(seconds)
    });
    println!("cargo:rustc-env=DEVENV_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=DEVENV_BUILD_DATE={date}");
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(seconds: u64) -> String {
    let seconds = i64::try_from(seconds).unwrap_or(0);
    jiff::Timestamp::from_second(seconds)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
