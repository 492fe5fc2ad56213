//! The `devenv-manager` binary: `admit`, the generated artefacts, and `serve`
//! started and stopped the way Kubernetes does it (SIGTERM).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");
const DEVENV: &str = env!("CARGO_BIN_EXE_devenv");

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn admit_mutates_workloads_on_multi_document_yaml() {
    let out = run(
        &["admit", "-f", "examples/manifests.yaml", "-n", "devenv"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> =
        devenv_manager::yaml::from_yaml_stream(&text(&out.stdout)).unwrap();
    assert_eq!(docs.len(), 4);
    let sts = &docs[0]["spec"]["template"];
    assert_eq!(sts["metadata"]["labels"]["developer"], "eywalker");
    assert_eq!(sts["spec"]["volumes"][0]["name"], "devenv-manager-token");
    assert!(
        docs[1]["metadata"].get("labels").is_none(),
        "non-devenv pod untouched"
    );
    let cron = &docs[2]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        cron["spec"]["containers"][0]["env"][0]["name"],
        "DEVENV_MANAGER_URL"
    );
    assert_eq!(docs[3]["kind"], "LearnerSpace");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("mutated StatefulSet devenv/devenv-eywalker"),
        "{stderr}"
    );
}

#[test]
fn admit_reports_every_denial_and_exits_1() {
    let manifests = r#"
apiVersion: v1
kind: Pod
metadata: {name: spoof, namespace: devenv, labels: {developer: bob}}
spec:
  serviceAccountName: devenv-alice
  containers:
    - name: c
      image: x
      volumeMounts: [{name: mine, mountPath: /var/run/secrets/tokens}]
---
apiVersion: aivo.dev/v1
kind: LearnerSpace
metadata: {name: bad, namespace: aivo-system}
spec:
  learnerId: "no spaces"
  resourceQuota: {memory: 1Ti}
  extra: true
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ok, namespace: devenv}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      serviceAccountName: devenv-alice
      containers: [{name: c, image: x}]
"#;
    let out = run(&["admit", "-f", "-"], Some(manifests));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for expected in [
        "DENIED Pod devenv/spoof:",
        "  - metadata.labels.developer: names developer \"bob\"",
        "  - spec.containers[0].volumeMounts[0]: mounts volume \"mine\"",
        "DENIED LearnerSpace aivo-system/bad:",
        "  - spec.learnerId: ",
        "  - spec.resourceQuota.memory: \"1Ti\" exceeds the maximum of 64Gi",
        "warning: LearnerSpace aivo-system/bad: spec.extra: unknown field, ignored",
        "2 of 3 object(s) denied",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in\n{stderr}"
        );
    }
    // The allowed object is still printed, mutated.
    let docs: Vec<serde_json::Value> =
        devenv_manager::yaml::from_yaml_stream(&text(&out.stdout)).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0]["spec"]["template"]["metadata"]["labels"]["developer"],
        "alice"
    );
}

#[test]
fn admit_names_a_bad_file() {
    let out = run(&["admit", "-f", "does/not/exist.yaml"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does/not/exist.yaml"));
    let out = run(&["admit", "-f", "-"], Some("a: [unclosed"));
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn committed_crd_matches_the_rust_types() {
    let out = run(&["crd"], None);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml"))
            .unwrap();
    assert_eq!(
        text(&out.stdout),
        committed,
        "deploy/crd.yaml is stale: run `devenv-manager crd > deploy/crd.yaml`"
    );
}

#[test]
fn committed_webhook_configuration_matches_the_generator() {
    let out = run(&["webhook-config"], None);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook-config/webhooks.yaml"),
    )
    .unwrap();
    assert_eq!(
        text(&out.stdout),
        committed,
        "webhook-config/webhooks.yaml is stale: run `devenv-manager webhook-config > webhook-config/webhooks.yaml`"
    );
}

#[test]
fn webhook_config_fills_the_ca_bundle_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let certs = devenv_manager::tls::generate(&["localhost".into()]).unwrap();
    certs.write(dir.path()).unwrap();
    let ca = dir.path().join("ca.crt");
    let out = run(
        &[
            "webhook-config",
            "--ca-file",
            ca.to_str().unwrap(),
            "--url",
            "https://127.0.0.1:9443",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> =
        devenv_manager::yaml::from_yaml_stream(&text(&out.stdout)).unwrap();
    assert_eq!(docs.len(), 2);
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(certs.ca_pem.as_bytes());
    for (doc, path) in docs.iter().zip(["/mutate/pods", "/validate/learnerspaces"]) {
        let client = &doc["webhooks"][0]["clientConfig"];
        assert_eq!(client["caBundle"], expected.as_str());
        assert_eq!(client["url"], format!("https://127.0.0.1:9443{path}"));
        assert!(client.get("service").is_none());
    }
    let bad = run(&["webhook-config", "--ca-file", "Cargo.toml"], None);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("no PEM certificate"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "devenv:\n  namespaces: [Not_Valid]\n").unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("devenv.namespaces[0]"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_refuses_a_clear_text_manager_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "devenv:\n  managerUrl: http://devenv-manager.devenv-system.svc:8080\n",
    )
    .unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()], None);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("devenv.managerUrl") && stderr.contains("clear text"),
        "{stderr}"
    );
    // The environment override is held to the same rule.
    let mut env = Command::new(BIN);
    env.arg("serve")
        .current_dir(dir.path())
        .env("DEVENV_MANAGER_URL", "http://manager:8080");
    let out = env.output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("devenv.managerUrl"));
}

/// `devenv` with a plain http:// URL: exit 1, one line on standard error,
/// nothing sent (the token file is never even read), nothing on stdout.
#[test]
fn devenv_refuses_a_clear_text_manager_url_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "header.payload.signature").unwrap();
    let devenv = |args: &[&str], url: &str| {
        Command::new(DEVENV)
            .args(args)
            .env("DEVENV_MANAGER_URL", url)
            .env("DEVENV_TOKEN_FILE", &token)
            .env_remove("DEVENV_MANAGER_CA")
            .output()
            .unwrap()
    };
    for args in [
        &["pods", "list", "--remote"][..],
        &["pods", "delete", "ws-0", "--remote", "-n", "devenv"][..],
    ] {
        let out = devenv(args, "http://devenv-manager.devenv-system.svc:8080");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("devenv: refusing to send your token in clear text to http://devenv-manager.devenv-system.svc:8080"),
            "{stderr}"
        );
    }
    // --insecure-http lets the same URL through (to a port nobody listens
    // on: the error is now the connection).
    let closed = std::net::TcpListener::bind("127.0.0.2:0")
        .map(|l| l.local_addr().unwrap().port())
        .unwrap_or(9);
    let url = format!("http://127.0.0.2:{closed}");
    let out = devenv(&["pods", "list", "--remote"], &url);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the manager"),
        "loopback http is allowed: {stderr}"
    );
    let out = devenv(
        &["pods", "list", "--remote", "--insecure-http"],
        "http://manager.invalid:8080",
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the manager") && !stderr.contains("clear text"),
        "{stderr}"
    );
}

#[test]
fn serve_runs_with_no_config_and_no_cluster_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("WEBHOOK_BIND", "127.0.0.1:0")
        .env("API_BIND", "127.0.0.1:0")
        .env("METRICS_BIND", "127.0.0.1:0")
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let mut webhook_addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if let Some(addr) = entry["webhook_addr"].as_str() {
            webhook_addr = Some(addr.to_string());
            break;
        }
    }
    let addr = webhook_addr.expect("serve logs where it listens");
    assert!(
        dir.path().join("certs/ca.crt").exists(),
        "certificates generated in ./certs"
    );

    // A real review over TLS, trusting the generated CA.
    let port = addr.rsplit(':').next().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let pem = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        let body = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/admission-review-pod.json"),
        )
        .unwrap();
        client
            .post(format!("https://localhost:{port}/mutate/pods"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful exit on SIGTERM: {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("shutdown signal received")),
        "{rest:?}"
    );
}

#[test]
fn render_prints_every_object_of_the_readme_example() {
    let out = run(&["render", "-f", "deploy/examples/learnerspace.yaml"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: Vec<serde_json::Value> =
        devenv_manager::yaml::from_yaml_stream(&text(&out.stdout)).unwrap();
    let kinds: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    let namespace = devenv_manager::names::learner_namespace("john.doe");
    assert_eq!(kinds[0], ("Namespace", namespace.as_str()));
    for expected in [
        ("NetworkPolicy", "deny-all"),
        ("NetworkPolicy", "allow-egress-dns"),
        ("ResourceQuota", "learner-quota"),
        ("LimitRange", "learner-limits"),
        ("ServiceAccount", "learner"),
        ("RoleBinding", "learner"),
        ("ConfigMap", "vault-secret-paths"),
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected:?} missing from {kinds:?}"
        );
    }
    assert!(
        !kinds.iter().any(|(kind, _)| *kind == "Role"),
        "the learner's rights are the devenv-learner ClusterRole, bound: {kinds:?}"
    );
    let not_ls = run(&["render", "-f", "examples/manifests.yaml"], None);
    assert!(
        not_ls.status.success(),
        "the LearnerSpace among other kinds is rendered"
    );
    let none = run(
        &["render", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"),
    );
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("no LearnerSpace found"),
        "{}",
        text(&none.stderr)
    );
}

#[test]
fn certs_generate_keeps_the_ca_key_only_when_asked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let plain = run(&["certs", "generate", "--out", out], None);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    assert!(!dir.path().join("ca.key").exists(), "no CA key by default");

    let kept = run(&["certs", "generate", "--out", out, "--keep-ca-key"], None);
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    assert!(text(&kept.stderr).contains("ca.key"));
    let key = dir.path().join("ca.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The key is the CA's: the four files make material the keeper accepts.
    let data = ["ca.crt", "ca.key", "tls.crt", "tls.key"]
        .map(|f| (f.to_string(), std::fs::read(dir.path().join(f)).unwrap()))
        .into();
    devenv_manager::certs::Material::from_data(&data).unwrap();
}
