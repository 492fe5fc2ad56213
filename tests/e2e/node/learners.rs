//! Learner namespaces built by the operator, on the test bed's real node:
//! their NetworkPolicies checked with real packets (kube-router enforces
//! them), and Pod Security, the LimitRange and the quota on real pods.

use std::time::Duration;

use devenv_testbed as testbed;
use devenv_testbed::manager::Manager;
use devenv_testbed::node::{BUSYBOX, Node};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

/// Every test pod serves TCP and UDP echo on this port (netcheck serve).
const PORT: &str = "8080";

/// A pod that passes Pod Security `restricted` and declares no resources.
fn restricted_pod(name: &str, serve: &[&str]) -> Pod {
    let mut command = vec!["netcheck", "serve"];
    command.extend_from_slice(serve);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "imagePullPolicy": "Never",
                "command": command,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .unwrap()
}

/// Creates LearnerSpace `name` in `operator_ns` and waits until it is Ready;
/// returns its namespace.
async fn learner_space(
    node: &Node,
    resource: &kube::discovery::ApiResource,
    operator_ns: &str,
    name: &str,
    network_policy: serde_json::Value,
) -> String {
    let api = Api::<DynamicObject>::namespaced_with(node.bed.client().await, operator_ns, resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1",
        "kind": "LearnerSpace",
        "metadata": {"name": name},
        "spec": {"learnerId": name, "networkPolicy": network_policy},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating LearnerSpace {name}: {e}"));
    testbed::eventually(&format!("LearnerSpace {name} Ready"), || async {
        let current = api.get(name).await.ok()?;
        let status = current.data.get("status")?;
        (status["phase"] == "Ready")
            .then(|| status["namespace"].as_str().map(str::to_owned))
            .flatten()
    })
    .await
}

/// The operator (an in-process manager) with its own namespace, which is
/// also the first of the allowed namespaces.
async fn operator(node: &Node, prefix: &str) -> (Manager, String, kube::discovery::ApiResource) {
    let resource = testbed::manifests::install_crd(node.bed.client().await).await;
    let operator_ns = node.namespace(&format!("{prefix}-op")).await;
    let devenv_ns = node.namespace(&format!("{prefix}-devenv")).await;
    let manager = Manager::start(node, |c| {
        c.operator.namespace = operator_ns.clone();
        c.devenv.namespaces = vec![devenv_ns.clone()];
    })
    .await;
    (manager, operator_ns, resource)
}

/// A packet check from pod `from` (`ns/name`): `netcheck MODE IP PORT`.
struct Probe<'a> {
    node: &'a Node,
}

impl Probe<'_> {
    async fn once(
        &self,
        from: (&str, &str),
        mode: &str,
        ip: &str,
        port: &str,
        secs: &str,
    ) -> (bool, String) {
        let (code, out, err) = self
            .node
            .exec(from.0, from.1, &["netcheck", mode, ip, port, secs])
            .await;
        assert!(
            code == 0 || code == 1,
            "netcheck in {}/{} failed to run ({code}): {out}{err}",
            from.0,
            from.1
        );
        (code == 0, format!("{}{}", out.trim(), err.trim()))
    }

    /// `from` reaches `ip:port` (within a minute: kube-router applies a new
    /// pod's policies within seconds).
    async fn reaches(&self, from: (&str, &str), mode: &str, ip: &str, port: &str) {
        let mut last = String::new();
        for _ in 0..30 {
            let (ok, said) = self.once(from, mode, ip, port, "2").await;
            if ok {
                return;
            }
            last = said;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!(
            "{}/{} never reached {mode} {ip}:{port}: {last}",
            from.0, from.1
        );
    }

    /// `from` cannot reach `ip:port`: blocked within a minute, and still
    /// blocked three probes later.
    async fn is_blocked(&self, from: (&str, &str), mode: &str, ip: &str, port: &str) {
        let mut blocked = 0;
        let mut last = String::new();
        for _ in 0..40 {
            let (ok, said) = self.once(from, mode, ip, port, "1").await;
            if ok {
                assert!(
                    blocked == 0,
                    "{}/{} reached {mode} {ip}:{port} after being blocked: {said}",
                    from.0,
                    from.1
                );
                last = said;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            blocked += 1;
            if blocked == 4 {
                return;
            }
        }
        panic!(
            "{}/{} still reaches {mode} {ip}:{port}: {last}",
            from.0, from.1
        );
    }
}

// Multi-threaded: kubectl exec runs as blocking child processes while the
// operator keeps running on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_network_policies_hold_for_real_packets() {
    let Some(node) = super::shared().await else {
        return;
    };
    let (manager, op, resource) = operator(node, "net").await;
    let shared = node.namespace("net-shared").await;
    let other = node.namespace("net-other").await;
    let allowed = json!({"egressDeny": true, "allowedNamespaces": [op, shared]});
    let suffix = node.unique("n");
    let a = learner_space(
        node,
        &resource,
        &op,
        &format!("a-{suffix}"),
        allowed.clone(),
    )
    .await;
    let b = learner_space(node, &resource, &op, &format!("b-{suffix}"), allowed).await;
    let c = learner_space(
        node,
        &resource,
        &op,
        &format!("c-{suffix}"),
        json!({"egressDeny": false, "allowedNamespaces": [op]}),
    )
    .await;

    // A DNS stand-in in kube-system: echo on UDP and TCP 53 (and 8080, which
    // learners' DNS rule does not open).
    let dns_name = node.unique("dns");
    let mut dns: Pod = serde_json::from_value(json!({
        "metadata": {"name": dns_name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                "command": ["netcheck", "serve", "53", PORT],
            }],
        },
    }))
    .unwrap();
    dns.metadata.labels = None;
    node.create_pod("kube-system", &dns).await;
    for (ns, name) in [
        (&a, "a1"),
        (&a, "a2"),
        (&b, "b1"),
        (&c, "c1"),
        (&op, "op1"),
        (&shared, "shared1"),
        (&other, "other1"),
    ] {
        node.create_pod(ns, &restricted_pod(name, &[PORT])).await;
    }
    let ip = |ns: &str, name: &str| {
        let (ns, name) = (ns.to_owned(), name.to_owned());
        async move { node.pod_ip(&ns, &name).await }
    };
    let (a1, a2, b1, c1) = (
        ip(&a, "a1").await,
        ip(&a, "a2").await,
        ip(&b, "b1").await,
        ip(&c, "c1").await,
    );
    let (op1, shared1, other1) = (
        ip(&op, "op1").await,
        ip(&shared, "shared1").await,
        ip(&other, "other1").await,
    );
    let dns_ip = ip("kube-system", &dns_name).await;
    let probe = Probe { node };
    let from_a = (a.as_str(), "a1");

    // A learner pod reaches its own namespace, each allowed namespace, and
    // DNS (UDP and TCP 53) in kube-system.
    probe.reaches(from_a, "tcp", &a2, PORT).await;
    probe.reaches(from_a, "udp", &a2, PORT).await;
    probe.reaches(from_a, "tcp", &op1, PORT).await;
    probe.reaches(from_a, "tcp", &shared1, PORT).await;
    probe.reaches(from_a, "udp", &dns_ip, "53").await;
    probe.reaches(from_a, "tcp", &dns_ip, "53").await;
    // ...and nothing else: another learner, a namespace not allowed, other
    // ports in kube-system, the manager's pod API.
    probe.is_blocked(from_a, "tcp", &b1, PORT).await;
    probe.is_blocked(from_a, "tcp", &other1, PORT).await;
    probe.is_blocked(from_a, "udp", &other1, PORT).await;
    probe.is_blocked(from_a, "tcp", &dns_ip, PORT).await;
    let api_port = manager.api.port().to_string();
    probe
        .is_blocked(from_a, "connect", &node.host_ip, &api_port)
        .await;
    // The same targets are up: B's pod takes traffic from the operator's
    // namespace, and a pod under no policy reaches the rest.
    let from_other = (other.as_str(), "other1");
    probe.reaches((op.as_str(), "op1"), "tcp", &b1, PORT).await;
    probe.reaches(from_other, "tcp", &dns_ip, PORT).await;
    probe
        .reaches(from_other, "connect", &node.host_ip, &api_port)
        .await;

    // Ingress: the operator's namespace gets in; another learner does not,
    // even one whose own egress is open (C), nor a namespace not allowed.
    probe.reaches((op.as_str(), "op1"), "tcp", &a1, PORT).await;
    probe.is_blocked((b.as_str(), "b1"), "tcp", &a1, PORT).await;
    probe.is_blocked((c.as_str(), "c1"), "tcp", &a1, PORT).await;
    probe.is_blocked(from_other, "tcp", &a1, PORT).await;

    // egressDeny: false opens C's egress and keeps its ingress isolation.
    probe
        .reaches((c.as_str(), "c1"), "tcp", &other1, PORT)
        .await;
    probe
        .reaches((c.as_str(), "c1"), "tcp", &shared1, PORT)
        .await;
    probe.is_blocked(from_other, "tcp", &c1, PORT).await;
    probe
        .is_blocked((shared.as_str(), "shared1"), "tcp", &c1, PORT)
        .await;
    probe.reaches((op.as_str(), "op1"), "tcp", &c1, PORT).await;

    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_pod_without_resources_runs_with_the_defaults_and_counts_in_the_quota() {
    let Some(node) = super::shared().await else {
        return;
    };
    let (manager, op, resource) = operator(node, "psa").await;
    let learner = format!("psa-{}", node.unique("l"));
    let ns = learner_space(
        node,
        &resource,
        &op,
        &learner,
        json!({"egressDeny": true, "allowedNamespaces": []}),
    )
    .await;

    // Pod Security `restricted` is enforced: a root pod with privilege
    // escalation allowed is refused at admission.
    let mut root = restricted_pod("root", &[PORT]);
    let spec = root.spec.as_mut().unwrap();
    spec.security_context = None;
    spec.containers[0].security_context = None;
    let refused = Api::<Pod>::namespaced(node.bed.client().await, &ns)
        .create(&PostParams::default(), &root)
        .await
        .expect_err("a pod violating Pod Security restricted is refused");
    assert!(
        refused.to_string().contains("restricted"),
        "refused for another reason: {refused}"
    );

    // A compliant pod with no resources at all: the LimitRange fills them in
    // and the quota (which requires them) admits it; it runs.
    node.create_pod(&ns, &restricted_pod("plain", &[PORT]))
        .await;
    let running = node.wait_running(&ns, "plain").await;
    let resources = running.spec.unwrap().containers[0]
        .resources
        .clone()
        .expect("resources from the LimitRange");
    let requests = resources.requests.expect("default requests");
    let limits = resources.limits.expect("default limits");
    for key in ["cpu", "memory"] {
        assert!(
            requests.contains_key(key),
            "no default request of {key}: {requests:?}"
        );
        assert!(
            limits.contains_key(key),
            "no default limit of {key}: {limits:?}"
        );
    }

    // The quota counts it.
    let quotas = Api::<ResourceQuota>::namespaced(node.bed.client().await, &ns);
    let used = testbed::eventually("the quota counting the pod", || async {
        let quota = quotas.get("learner-quota").await.ok()?;
        let used = quota.status?.used?;
        (used.get("pods").map(|q| q.0.as_str()) == Some("1")).then_some(used)
    })
    .await;
    assert_eq!(used.get("requests.cpu"), requests.get("cpu"), "{used:?}");
    assert_eq!(used.get("limits.memory"), limits.get("memory"), "{used:?}");
    manager.stop().await;
}
