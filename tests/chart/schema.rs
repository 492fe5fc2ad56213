//! values.schema.json: `helm install --set replicas=two` fails, with a
//! message that names the value; so do unknown keys (at the top, and in the
//! manager's configuration, which the manager would refuse at start) and
//! the names this version keeps fixed.

use crate::template;

/// `helm template` with `args` fails, and its error says each of `expected`.
fn refused(helm: &std::path::Path, args: &[&str], expected: &[&str]) {
    let error = match template(helm, args) {
        Ok(_) => panic!("{args:?} rendered"),
        Err(e) => e,
    };
    assert!(
        error.contains("values don't meet the specifications of the schema"),
        "{error}"
    );
    for text in expected {
        assert!(error.contains(text), "{args:?}: {text:?} not in\n{error}");
    }
}

#[test]
fn the_schema_refuses_wrong_types_and_unknown_keys() {
    let Some(helm) = crate::helm() else { return };
    refused(
        helm,
        &["--set", "replicas=two"],
        &["/replicas", "got string, want integer"],
    );
    refused(
        helm,
        &["--set", "replica=2"],
        &["additional properties 'replica' not allowed"],
    );
    refused(
        helm,
        &["--set", "certManager.enabled=yes"],
        &["/certManager/enabled", "want boolean"],
    );
    refused(
        helm,
        &["--set", "config.webhook.bnid=0.0.0.0:8443"],
        &[
            "/config/webhook",
            "additional properties 'bnid' not allowed",
        ],
    );
    refused(
        helm,
        &["--set", "config.devenv.tokenExpirationSeconds=60"],
        &["/config/devenv/tokenExpirationSeconds"],
    );
    refused(
        helm,
        &["--set", "config.certs.mode=manual"],
        &["/config/certs/mode"],
    );
    // The names the RBAC and the admission policies hold as literals.
    refused(
        helm,
        &["--set", "config.operator.namespace=learners"],
        &["/config/operator/namespace"],
    );
    refused(
        helm,
        &["--set", "config.devenv.namespaces={devenv,other}"],
        &["/config/devenv/namespaces"],
    );
    refused(
        helm,
        &["--set", "config.certs.namespace=kube-system"],
        &["/config/certs/namespace"],
    );
    // Values of the right type and shape pass.
    template(
        helm,
        &[
            "--set",
            "replicas=3",
            "--set",
            "config.api.developerBurst=80",
            "--set",
            "config.logLevel=info\\,devenv_manager=debug",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}
