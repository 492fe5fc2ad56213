//! The pieces agree: the Deployment mounts and serves what the
//! configuration names, the Service is what the webhook configurations and
//! the manager URL call, the namespaces and roles follow the configuration,
//! and the examples pass the webhook.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use devenv_manager::config::Config;
use devenv_manager::webhook::registration::{self, Endpoint};
use devenv_manager::webhook::{Webhook, learnerspaces, offline};
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use crate::{MANAGER_SA, all_docs, deploy_config, docs, manager_deployment, object, objects};

fn port_of(bind: &std::net::SocketAddr) -> i32 {
    i32::from(bind.port())
}

#[test]
fn the_deployment_runs_the_manager_as_the_issue_asks() {
    let (config, key) = deploy_config();
    let deployment = manager_deployment();
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(MANAGER_SA.0));
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let template = spec.template;
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    let selector = spec.selector.match_labels.unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let pod = template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(MANAGER_SA.1));
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];

    assert_it_runs_unprivileged_and_bounded(&pod, container);
    assert_its_leader_identity_is_the_pod_name(container);
    let ports = assert_its_ports_and_probes_are_the_configurations(container, &config);
    assert_its_configuration_and_certificates_are_mounted(&pod, container, &config, &key);
    // The service account exists where the Deployment runs.
    let _: ServiceAccount = object("deploy/rbac.yaml", "ServiceAccount", MANAGER_SA.1);
    assert_the_disruption_budget_keeps_one_replica(&pod_labels);
    assert_the_network_policy_selects_it_by_port_name(&pod_labels, &ports);
}

/// Non-root (uid 10001), no privilege escalation, no capability, a
/// read-only root and RuntimeDefault seccomp, with CPU and memory requests
/// and limits.
fn assert_it_runs_unprivileged_and_bounded(pod: &PodSpec, c: &Container) {
    let pod_security = pod.security_context.clone().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(10001));
    assert_eq!(
        pod_security.seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );

    let security = c.security_context.clone().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(10001));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");

    let resources = c.resources.clone().unwrap();
    for part in [resources.requests.unwrap(), resources.limits.unwrap()] {
        assert!(
            part.contains_key("cpu") && part.contains_key("memory"),
            "{part:?}"
        );
    }
}

/// POD_NAME from the downward API: the operator's leader identity.
fn assert_its_leader_identity_is_the_pod_name(c: &Container) {
    let env = c.env.clone().unwrap();
    let pod_name = env.iter().find(|e| e.name == "POD_NAME").unwrap();
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
}

/// The ports the configuration binds, named for the Service and probes;
/// the probes on the metrics port. Returns the ports by name.
fn assert_its_ports_and_probes_are_the_configurations(
    c: &Container,
    config: &Config,
) -> BTreeMap<String, i32> {
    let ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports["webhook"], port_of(&config.webhook.bind));
    assert_eq!(ports["api"], port_of(&config.api.bind));
    assert_eq!(ports["metrics"], port_of(&config.metrics.bind));
    for (probe, path) in [
        (c.liveness_probe.clone(), "/healthz"),
        (c.readiness_probe.clone(), "/readyz"),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        let port = match get.port {
            IntOrString::String(name) => ports[&name],
            IntOrString::Int(n) => n,
        };
        assert_eq!(port, port_of(&config.metrics.bind));
    }
    ports
}

/// `--config` names the file the ConfigMap volume holds (under `key`); the
/// certificate Secret is mounted read-only where the configuration looks
/// for it; every mount is read-only.
fn assert_its_configuration_and_certificates_are_mounted(
    pod: &PodSpec,
    c: &Container,
    config: &Config,
    key: &str,
) {
    let volumes = pod.volumes.clone().unwrap();
    let mounts = c.volume_mounts.clone().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    };
    let config_volume = volumes
        .iter()
        .find(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some("devenv-manager-config"))
        .expect("the config volume");
    let args = c.args.clone().unwrap();
    assert_eq!(
        args,
        [
            "serve".to_string(),
            "--config".to_string(),
            format!("{}/{key}", mount_of(&config_volume.name).mount_path),
        ]
    );
    // Self-managed certificates: served from the Secret through the API,
    // never mounted (a missing Secret must not keep the pods from starting:
    // their Lease holder creates it).
    assert_eq!(
        config.certs.mode,
        devenv_manager::certs::CertsMode::SelfManaged
    );
    assert!(
        volumes.iter().all(|v| v.secret.is_none()),
        "no Secret volume: {volumes:?}"
    );
    assert_the_cert_manager_component_mounts_the_secret(config);
    assert!(mounts.iter().all(|m| m.read_only == Some(true)));
}

/// The cert-manager component switches to `files` and mounts Secret
/// devenv-manager-tls read-only where both `certDir`s point.
fn assert_the_cert_manager_component_mounts_the_secret(config: &devenv_manager::config::Config) {
    let component = &docs("deploy/cert-manager/kustomization.yaml")[0];
    let patch = component["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            devenv_manager::yaml::from_yaml_stream(p["patch"].as_str().unwrap())
                .unwrap()
                .remove(0)
        })
        .find(|p: &serde_json::Value| p["kind"] == "Deployment")
        .expect("a Deployment patch");
    let pod = &patch["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "manager");
    assert_eq!(container["env"][0]["name"], "CERTS_MODE");
    assert_eq!(container["env"][0]["value"], "files");
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["readOnly"], true);
    assert_eq!(pod["volumes"][0]["name"], mount["name"]);
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "devenv-manager-tls"
    );
    for cert_dir in [&config.webhook.cert_dir, &config.api.cert_dir] {
        assert_eq!(
            Path::new(mount["mountPath"].as_str().unwrap()),
            cert_dir.as_path()
        );
    }
}

/// The PodDisruptionBudget selects the manager's pods and keeps one of the
/// two replicas.
fn assert_the_disruption_budget_keeps_one_replica(pod_labels: &BTreeMap<String, String>) {
    let pdb: PodDisruptionBudget =
        object("deploy/pdb.yaml", "PodDisruptionBudget", "devenv-manager");
    let pdb = pdb.spec.unwrap();
    let pdb_selector = pdb.selector.unwrap().match_labels.unwrap();
    assert!(
        pdb_selector
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    );
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
}

/// The network policy selects the manager and names its ports.
fn assert_the_network_policy_selects_it_by_port_name(
    pod_labels: &BTreeMap<String, String>,
    ports: &BTreeMap<String, i32>,
) {
    let policy: NetworkPolicy = object(
        "deploy/networkpolicy.yaml",
        "NetworkPolicy",
        "devenv-manager",
    );
    let policy = policy.spec.unwrap();
    let policy_selector = policy.pod_selector.unwrap().match_labels.unwrap();
    assert!(
        policy_selector
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    );
    for rule in policy.ingress.unwrap() {
        for port in rule.ports.unwrap() {
            match port.port.unwrap() {
                IntOrString::String(name) => {
                    assert!(ports.contains_key(&name), "{name}")
                }
                other => panic!("name the port: {other:?}"),
            }
        }
    }
}

#[test]
fn the_service_is_what_the_webhook_configurations_and_the_manager_url_name() {
    let (config, _) = deploy_config();
    let service: Service = object("deploy/service.yaml", "Service", "devenv-manager");
    let namespace = service.metadata.namespace.clone().unwrap();
    let spec = service.spec.unwrap();
    let pod_labels = manager_deployment()
        .spec
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert!(
        spec.selector
            .unwrap()
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    );
    let ports: BTreeMap<i32, String> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| {
            let target = match p.target_port.unwrap() {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
                other => panic!("name the target port: {other:?}"),
            };
            (p.port, target)
        })
        .collect();
    assert_eq!(ports[&443], "webhook");
    assert_eq!(ports[&port_of(&config.api.bind)], "api");
    assert_eq!(ports.len(), 2);

    // The committed webhook configurations are what the generator makes for
    // this configuration and this Service.
    let endpoint = Endpoint::Service {
        name: "devenv-manager".into(),
        namespace: namespace.clone(),
        port: 443,
    };
    let (mutating, validating) = registration::configurations(&config, &endpoint, None);
    assert_eq!(
        registration::to_yaml(&mutating, &validating).unwrap(),
        devenv_testbed::fixture("webhook-config/webhooks.yaml"),
        "webhook-config/webhooks.yaml does not match deploy/config.yaml and deploy/service.yaml"
    );

    // DEVENV_MANAGER_URL, as the webhook injects it, reaches the pod API.
    assert_eq!(
        config.devenv.manager_url,
        format!(
            "https://devenv-manager.{namespace}.svc.cluster.local:{}",
            port_of(&config.api.bind)
        )
    );
    // The certificate names the Service (cert-manager; `certs generate`
    // uses the same names by default).
    let certificate = &docs("deploy/cert-manager/certificate.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == "devenv-manager-tls")
        .expect("the serving Certificate")["spec"]["dnsNames"]
        .clone();
    for name in [
        format!("devenv-manager.{namespace}.svc"),
        format!("devenv-manager.{namespace}.svc.cluster.local"),
    ] {
        assert!(
            certificate.as_array().unwrap().contains(&json!(name)),
            "{name}"
        );
    }
}

#[test]
fn namespaces_and_roles_follow_the_configuration() {
    let (config, _) = deploy_config();
    let names: BTreeSet<String> = objects::<Namespace>("Namespace")
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    let mut wanted: BTreeSet<String> = config.devenv.namespaces.iter().cloned().collect();
    wanted.insert(config.operator.namespace.clone());
    wanted.insert(MANAGER_SA.0.to_string());
    assert_eq!(names, wanted);
    assert_eq!(
        names,
        ["aivo-system", "devenv", "devenv-system"]
            .map(String::from)
            .into()
    );
    // Every namespaced object is in one of them.
    for (file, doc) in all_docs() {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            assert!(names.contains(ns), "{file}: namespace {ns}");
        }
    }
    // The template account is reserved, so never a developer.
    let template: ServiceAccount =
        object("deploy/rbac.yaml", "ServiceAccount", "devenv-user-template");
    let ns = template.metadata.namespace.unwrap();
    assert!(config.devenv.namespaces.contains(&ns));
    let name = template.metadata.name.unwrap();
    let suffix = name
        .strip_prefix(&config.devenv.service_account_prefix)
        .unwrap();
    assert!(config.devenv.reserved_names.iter().any(|r| r == suffix));
}

#[test]
fn the_example_developer_and_workspace_pass_the_webhook() {
    let (config, _) = deploy_config();
    let developer: ServiceAccount = object(
        "deploy/users/devenv-eywalker.yaml",
        "ServiceAccount",
        "devenv-eywalker",
    );
    let ns = developer.metadata.namespace.clone().unwrap();
    assert_eq!(ns, "devenv");
    assert!(config.devenv.namespaces.contains(&ns));
    assert_eq!(developer.metadata.labels.unwrap()["developer"], "eywalker");

    // The StatefulSet declares the token volume itself: the webhook takes
    // it as its own (no denial), keeps it, and completes it with the CA.
    let webhook = Webhook::new(&config);
    let statefulset = docs("deploy/examples/devenv-statefulset.yaml")
        .into_iter()
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap();
    let declared = statefulset["spec"]["template"]["spec"]["volumes"].clone();
    assert_eq!(
        statefulset["spec"]["template"]["spec"]["serviceAccountName"],
        "devenv-eywalker"
    );
    let admitted = offline::admit(&webhook, statefulset, "default");
    assert!(!admitted.denied(), "{:?}", admitted.errors);
    assert!(admitted.mutated);
    let template = &admitted.object["spec"]["template"];
    let volumes = template["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), declared.as_array().unwrap().len());
    let sources = volumes[0]["projected"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert_eq!(sources[1]["configMap"]["name"], "devenv-manager-ca");
    let env = &template["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["name"], "DEVENV_MANAGER_URL");
    assert_eq!(env[0]["value"], config.devenv.manager_url.as_str());
    assert_eq!(template["metadata"]["labels"]["developer"], "eywalker");

    // The example LearnerSpace is valid, in the operator's namespace.
    let ls = &docs("deploy/examples/learnerspace.yaml")[0];
    assert_eq!(
        ls["metadata"]["namespace"],
        config.operator.namespace.as_str()
    );
    let verdict = learnerspaces::validate(&config.operator, ls, None);
    assert!(verdict.errors.is_empty() && verdict.warnings.is_empty());
}

/// The priority-and-fairness example gives the manager's own service
/// account a level of its own, with seats for the operator's write budget.
#[test]
fn the_flow_schema_example_is_the_managers() {
    use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
    let file = "deploy/examples/priority-and-fairness.yaml";
    let schema: FlowSchema = object(file, "FlowSchema", "devenv-manager");
    let level: PriorityLevelConfiguration =
        object(file, "PriorityLevelConfiguration", "devenv-manager");
    let spec = schema.spec;
    assert_eq!(spec.priority_level_configuration.name, "devenv-manager");
    let rules = spec.rules.unwrap();
    let subject = rules[0].subjects[0].service_account.clone().unwrap();
    assert_eq!(
        (subject.namespace.as_str(), subject.name.as_str()),
        MANAGER_SA
    );
    let limited = level.spec.limited.unwrap();
    let shares = limited.nominal_concurrency_shares.unwrap();
    // The defaults' 245 shares of 600 seats: this level's share must hold
    // the operator's writes in flight.
    let seats = 600.0 * f64::from(shares) / (245.0 + f64::from(shares));
    let budget = Config::default().operator.max_in_flight_writes as f64;
    assert!(seats >= 2.0 * budget, "{seats} seats for {budget} writes");
}
