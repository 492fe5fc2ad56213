//! The `devenv` CLI against the running server.

use std::process::Command;

use serde_json::Value;

use super::{DEVENV, Fixture, pod_names};

struct Cli<'a> {
    f: &'a Fixture,
    token_file: std::path::PathBuf,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(DEVENV)
            .args(args)
            .env(
                "DEVENV_MANAGER_URL",
                format!("https://localhost:{}", self.f.server.api.port()),
            )
            .env("DEVENV_TOKEN_FILE", &self.token_file)
            .env("DEVENV_MANAGER_CA", self.f.server.cert_dir.join("ca.crt"))
            .output()
            .expect("devenv runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

// Multi-threaded: the CLI runs as a blocking child process while the server
// it talks to keeps running on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devenv_cli_lists_gets_and_deletes() {
    let Some(f) = Fixture::new("podapi-cli").await else {
        return;
    };
    let alice = f.developer("alice").await;
    f.pod("ws-0", Some("alice"), "devenv-alice").await;
    f.pod("ws-1", Some("alice"), "devenv-alice").await;
    f.pod("bobs", Some("bob"), "devenv-bob").await;
    f.wait_for_list(&alice, &["ws-0", "ws-1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{alice}\n")).unwrap();
    let cli = Cli { f: &f, token_file };
    let ns = f.ns.as_str();

    // list, as a table and as JSON; blocking process calls off the runtime.
    let (code, out, err) = tokio::task::block_in_place(|| cli.run(&["pods", "list", "--remote"]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(ns) && lines[1].contains("ws-0") && lines[1].contains("Pending"),
        "{out}"
    );
    assert!(!out.contains("bobs"), "{out}");

    let (code, out, err) = tokio::task::block_in_place(|| {
        cli.run(&["pods", "list", "--remote", "-n", ns, "-o", "json"])
    });
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod_names(&list), ["ws-0", "ws-1"]);

    // get, both ways.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli.run(&["pods", "get", "ws-1", "--remote", "-n", ns]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME ") && out.contains("ws-1"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| {
        cli.run(&["pods", "get", "ws-1", "--remote", "-n", ns, "-o", "json"])
    });
    assert_eq!(code, 0);
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod["name"], "ws-1");
    assert_eq!(pod["developer"], "alice");

    // Another's pod: one clear line, exit 1.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli.run(&["pods", "get", "bobs", "--remote", "-n", ns]));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found") && err.contains("404"), "{err}");

    // delete.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli.run(&["pods", "delete", "ws-0", "--remote", "-n", ns]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("pod {ns}/ws-0")), "{out}");
    f.wait_for_list(&alice, &["ws-1"]).await;

    // Usage and setup errors.
    let (code, _, err) = tokio::task::block_in_place(|| cli.run(&["pods", "list"]));
    assert_eq!(code, 2);
    assert!(err.contains("--remote"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        let missing = Cli {
            f: &f,
            token_file: "/nonexistent/token".into(),
        };
        missing.run(&["pods", "list", "--remote"])
    });
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/token"), "{err}");
    f.stop().await;
}
