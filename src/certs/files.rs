//! `files` mode: the CA bundle published to devenv pods is `ca.crt` of the
//! pod API's certificate directory, re-read when it changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the CA file is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Sends each new content of the CA file on `bundle` until `shutdown`.
pub async fn follow_ca_file(
    path: PathBuf,
    bundle: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
) {
    let mut ca = CaFile::new(path);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pem = ca.read();
        bundle.send_if_modified(|current| {
            let changed = pem.is_some() && *current != pem;
            if changed {
                current.clone_from(&pem);
            }
            changed
        });
    }
}

/// The CA file, re-read when its modification time or size changes.
struct CaFile {
    path: PathBuf,
    stamp: Option<(std::time::SystemTime, u64)>,
    pem: Option<String>,
    warned: bool,
}

impl CaFile {
    fn new(path: PathBuf) -> Self {
        CaFile {
            path,
            stamp: None,
            pem: None,
            warned: false,
        }
    }

    fn read(&mut self) -> Option<String> {
        let stamp = stamp(&self.path);
        if stamp.is_some() && stamp == self.stamp {
            return self.pem.clone();
        }
        match std::fs::read_to_string(&self.path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                self.stamp = stamp;
                self.pem = Some(pem);
                self.warned = false;
            }
            result => {
                if !self.warned {
                    let why =
                        result.map_or_else(|e| e.to_string(), |_| "no PEM certificate".into());
                    warn!(path = %self.path.display(), error = %why, "no CA certificate to publish to devenv pods; they must be given the CA another way");
                    self.warned = true;
                }
            }
        }
        self.pem.clone()
    }
}

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let mut ca = CaFile::new(path.clone());
        assert_eq!(ca.read(), None);
        let first = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, first).unwrap();
        assert_eq!(ca.read().as_deref(), Some(first));
        let second = "-----BEGIN CERTIFICATE-----\nBB\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, second).unwrap();
        assert_eq!(ca.read().as_deref(), Some(second));
        // A half-written file keeps the last good CA.
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(ca.read().as_deref(), Some(second));
    }
}
