//! The Helm chart, `charts/devenv-manager/` (docs/helm.md), with no API
//! server:
//!
//! - `helm lint --strict` passes, under every value set below;
//! - with default values `helm template` renders what `kubectl kustomize
//!   deploy/` does, object for object, once the labels Helm conventionally
//!   adds are removed ([`drift`]): the chart cannot drift from `deploy/`;
//!   with `certManager.enabled` it renders what `deploy/` with the
//!   `deploy/cert-manager` component does;
//! - under each value set every rendered object parses into its k8s-openapi
//!   type with no unknown field ([`devenv_testbed::typed`], shared with
//!   `tests/manifests`);
//! - `values.schema.json` refuses wrong types and unknown keys ([`schema`]);
//! - `webhook.caBundle` puts a CA bundle of your own in both webhook
//!   configurations and the manager in `files` mode ([`ca_bundle`]);
//! - `values.yaml`'s `config:` has every key of the manager's configuration,
//!   with `deploy/config.yaml`'s values, and docs/helm.md documents every
//!   value with its default ([`values`]);
//! - with the monitoring values on, the ServiceMonitor scrapes the metrics
//!   port, and every PromQL expression of the alerts and the dashboard
//!   parses and selects only metrics the code registers ([`monitoring`]);
//! - deploy/argocd/application.yaml installs the chart and ignores exactly
//!   the caBundle of its webhook configurations ([`argocd`]);
//! - the `helm test` and pre-delete hooks are what they must be ([`hooks`]);
//! - Helm 4 lints the chart as strictly and renders the same objects
//!   ([`helm4`]).
//!
//! `helm` and `helm4` are `scripts/helm.sh`'s builds (`.testbed/bin/`); when
//! one is missing the first test that needs it runs that script (unless
//! `DEVENV_TESTBED_BUILD=0`), and without it the tests skip with one line,
//! or fail under `DEVENV_REQUIRE_TESTBED=1`. `kubectl` (for `kustomize`) is
//! the test bed's.

mod argocd;
mod ca_bundle;
mod drift;
mod helm4;
mod hooks;
mod monitoring;
mod schema;
mod values;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use devenv_testbed::{repo_dir, skip};
use serde_json::Value;

/// The chart, relative to the repository root.
const CHART: &str = "charts/devenv-manager";
/// The release name and namespace docs/helm.md installs with.
const RELEASE: &str = "devenv-manager";
const NAMESPACE: &str = "devenv-system";

/// The value sets every test renders: (name, `helm template` arguments).
const VALUE_SETS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    ("certManager", &["--set", "certManager.enabled=true"]),
    (
        "namespaces and CRD off",
        &[
            "--set",
            "namespaces.create=false",
            "--set",
            "crds.install=false",
        ],
    ),
    (
        "CRD not kept, one replica, no PDB or NetworkPolicy",
        &[
            "--set",
            "crds.keep=false",
            "--set",
            "replicas=1",
            "--set",
            "podDisruptionBudget.enabled=false",
            "--set",
            "networkPolicy.enabled=false",
        ],
    ),
    (
        "a CA bundle of your own",
        &["--set", ca_bundle::PLACEHOLDER],
    ),
    (
        "scheduling, digest, rollout on config change",
        &[
            "--set",
            "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "--set",
            "rolloutOnConfigChange=true",
            "--set",
            "priorityClassName=system-cluster-critical",
            "--set",
            "nodeSelector.kubernetes\\.io/os=linux",
            "--set",
            "imagePullSecrets[0].name=registry",
            "--set",
            "tolerations[0].operator=Exists",
            "--set",
            "config.logLevel=debug",
        ],
    ),
    ("monitoring on", monitoring::MONITORING_ON),
];

/// Writes a line to stderr past libtest's capture.
fn uncaptured(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn require_testbed() -> bool {
    std::env::var("DEVENV_REQUIRE_TESTBED").as_deref() == Ok("1")
}

/// Helm 3 (`helm`, the version the tests render with) and Helm 4
/// (`helm4`, which must lint and render the same): both built by
/// `scripts/helm.sh`.
#[derive(Clone, Copy, Debug)]
enum Helm {
    V3,
    V4,
}

impl Helm {
    fn binary(self) -> &'static str {
        match self {
            Helm::V3 => "helm",
            Helm::V4 => "helm4",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Helm::V3 => "DEVENV_HELM",
            Helm::V4 => "DEVENV_HELM4",
        }
    }

    fn candidates(self) -> Vec<PathBuf> {
        devenv_testbed::helm_candidates(self.binary(), self.env())
    }

    fn find(self) -> Option<PathBuf> {
        self.candidates().into_iter().find(|p| p.is_file())
    }
}

/// Runs `scripts/helm.sh` (which builds both) once per process, under a
/// `flock` so that parallel test binaries build them once, unless
/// `DEVENV_TESTBED_BUILD=0`; whether it succeeded.
fn build_helm() -> bool {
    static BUILT: OnceLock<bool> = OnceLock::new();
    *BUILT.get_or_init(|| {
        if std::env::var("DEVENV_TESTBED_BUILD").as_deref() == Ok("0") {
            return false;
        }
        let script = repo_dir().join("scripts/helm.sh");
        let lock = repo_dir().join(".testbed/.helm-build.lock");
        let _ = std::fs::create_dir_all(repo_dir().join(".testbed"));
        uncaptured(&format!(
            "chart: building helm and helm4 with {} (once; minutes; DEVENV_TESTBED_BUILD=0 skips this)",
            script.display()
        ));
        let output = Command::new("flock")
            .arg(&lock)
            .arg("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        match output {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                uncaptured(&format!(
                    "chart: {} failed ({})",
                    script.display(),
                    out.status
                ));
                false
            }
            Err(e) => {
                uncaptured(&format!("chart: cannot run {}: {e}", script.display()));
                false
            }
        }
    })
}

/// `helm` or `helm4`, built when missing; `None` after printing why the
/// calling test skips.
fn built(which: Helm) -> Option<&'static Path> {
    static FOUND: [OnceLock<Option<PathBuf>>; 2] = [OnceLock::new(), OnceLock::new()];
    let found = FOUND[which as usize].get_or_init(|| {
        which
            .find()
            .or_else(|| build_helm().then(|| which.find()).flatten())
    });
    match found {
        Some(path) => Some(path),
        None if require_testbed() => panic!(
            "DEVENV_REQUIRE_TESTBED=1 but {} is not built (looked at {:?}): run scripts/helm.sh",
            which.binary(),
            which.candidates()
        ),
        None => {
            skip(&format!(
                "{} not built (run scripts/helm.sh)",
                which.binary()
            ));
            None
        }
    }
}

/// Helm 3, the one every test renders with.
fn helm() -> Option<&'static Path> {
    built(Helm::V3)
}

/// Helm 4 ([`helm4`]).
fn helm4() -> Option<&'static Path> {
    built(Helm::V4)
}

/// The test bed's `kubectl` (for `kubectl kustomize`); `None` after printing
/// why the calling test skips.
fn kubectl() -> Option<PathBuf> {
    let bin = std::env::var_os("DEVENV_TESTBED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".testbed/bin"));
    let kubectl = bin.join("kubectl");
    if kubectl.is_file() {
        return Some(kubectl);
    }
    if require_testbed() {
        panic!(
            "DEVENV_REQUIRE_TESTBED=1 but {} is missing: run scripts/testbed.sh",
            kubectl.display()
        );
    }
    skip("kubectl not built (run scripts/testbed.sh)");
    None
}

/// Runs `program args` in the repository; its stdout, or its stderr as the error.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("UTF-8 output"))
    } else {
        Err(format!(
            "{} {}: {}\n{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template` of the chart with `args`: its output text, or helm's error.
fn template(helm: &Path, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    all.extend_from_slice(args);
    run(helm, &all)
}

/// The documents of a rendered stream.
fn parse(text: &str) -> Vec<Value> {
    devenv_manager::yaml::from_yaml_stream(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

/// `helm template` with `args`, parsed; panics on a render error.
fn rendered(helm: &Path, args: &[&str]) -> Vec<Value> {
    parse(&template(helm, args).unwrap_or_else(|e| panic!("{e}")))
}

/// `kind/namespace/name` of an object.
fn id(doc: &Value) -> String {
    format!(
        "{}/{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["namespace"].as_str().unwrap_or(""),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The one rendered object of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name}");
    found[0]
}

#[test]
fn helm_lint_strict_passes_under_every_value_set() {
    let Some(helm) = helm() else { return };
    lint_every_value_set(helm);
}

/// `helm lint --strict` with each value set passes.
fn lint_every_value_set(helm: &Path) {
    for (name, args) in VALUE_SETS {
        let mut all = vec!["lint", "--strict", CHART, "--namespace", NAMESPACE];
        all.extend_from_slice(args);
        let out = run(helm, &all).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");
    }
}

#[test]
fn every_rendered_object_parses_into_its_type_with_no_unknown_field() {
    let Some(helm) = helm() else { return };
    let mut failures = Vec::new();
    for (name, args) in VALUE_SETS {
        let docs = rendered(helm, args);
        assert!(docs.len() >= 20, "{name}: only {} objects", docs.len());
        for doc in &docs {
            if let Err(e) = devenv_testbed::typed::check_document(doc) {
                failures.push(format!("{name}: {}: {e}", id(doc)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_value_switches_do_what_they_say() {
    let Some(helm) = helm() else { return };
    let kinds = |docs: &[Value], kind: &str| docs.iter().filter(|d| d["kind"] == kind).count();

    let defaults = rendered(helm, &[]);
    // Not the release's own (devenv-system): --create-namespace makes it.
    assert_eq!(kinds(&defaults, "Namespace"), 2);
    assert_eq!(
        kinds(&rendered(helm, &["--namespace", "default"]), "Namespace"),
        3
    );
    let crd = find(
        &defaults,
        "CustomResourceDefinition",
        "learnerspaces.aivo.dev",
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let webhooks = find(&defaults, kind, "devenv-manager");
        // No caBundle: the manager (self-managed) or cert-manager writes it.
        for webhook in webhooks["webhooks"].as_array().unwrap() {
            assert!(webhook["clientConfig"].get("caBundle").is_none(), "{kind}");
        }
    }

    let off = rendered(
        helm,
        &[
            "--set",
            "namespaces.create=false",
            "--set",
            "crds.install=false",
        ],
    );
    assert_eq!(kinds(&off, "Namespace"), 0);
    assert_eq!(kinds(&off, "CustomResourceDefinition"), 0);
    assert_eq!(off.len(), defaults.len() - 3);

    let not_kept = rendered(helm, &["--set", "crds.keep=false"]);
    let crd = find(
        &not_kept,
        "CustomResourceDefinition",
        "learnerspaces.aivo.dev",
    );
    assert!(crd["metadata"].get("annotations").is_none(), "{crd}");

    let rollout = rendered(helm, &["--set", "rolloutOnConfigChange=true"]);
    let other = rendered(
        helm,
        &[
            "--set",
            "rolloutOnConfigChange=true",
            "--set",
            "config.logLevel=debug",
        ],
    );
    let checksum = |docs: &[Value]| {
        find(docs, "Deployment", "devenv-manager")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .as_str()
            .expect("checksum/config")
            .to_string()
    };
    assert_ne!(
        checksum(&rollout),
        checksum(&other),
        "a changed config rolls the pods"
    );

    let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let pinned = rendered(helm, &["--set", &format!("image.digest={digest}")]);
    assert_eq!(
        find(&pinned, "Deployment", "devenv-manager")["spec"]["template"]["spec"]["containers"][0]
            ["image"],
        format!("registry.example.com/devenv-manager@{digest}").as_str()
    );
}
