//! Operator benchmark against the real kube-apiserver test bed:
//!
//!     cargo bench --bench operator_load
//!     LEARNERS=1000 CACHED=10000 cargo bench --bench operator_load
//!
//! Creates LEARNERS LearnerSpaces, starts `devenv-manager serve` (the release
//! binary, as its own process, with a service-account kubeconfig) and
//! reports: API writes per LearnerSpace on the first reconcile, by resource
//! (target: one apply per managed object plus one status update), writes on a
//! second pass by a restarted operator (target: zero), time per reconcile,
//! and the operator's RSS with CACHED LearnerSpaces in its cache (target under
//! 150 MB at 10,000). Without `--bench` (as `cargo test --benches` runs it)
//! it runs a small, quick version.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use devenv_manager::crd::{LearnerSpace, Phase};
use devenv_testbed as testbed;
use devenv_testbed::load;
use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");
const NAMESPACE: &str = "aivo-system";

/// Starts the operator process, its log kept in `dir`.
fn start_operator(kubeconfig: &Path, dir: &Path, run: u32) -> load::Serve {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .current_dir(dir)
        .env("KUBECONFIG", kubeconfig)
        .env("WEBHOOK_BIND", "127.0.0.1:0")
        .env("API_BIND", "127.0.0.1:0")
        .env("METRICS_BIND", "127.0.0.1:0")
        .env("OPERATOR_NAMESPACE", NAMESPACE);
    load::spawn_serve(command, Some(dir.join(format!("operator-{run}.log"))))
}

fn rss_mib(pid: u32) -> f64 {
    load::rss_kib(pid).map_or(0.0, |(rss, _)| rss as f64 / 1024.0)
}

fn learner_space(name: &str, learner: &str) -> LearnerSpace {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"learnerId": learner, "subjects": ["mathematics"], "resourceQuota": {"cpu": "2", "memory": "4Gi"}}
    }))
    .expect("LearnerSpace")
}

/// Objects the operator keeps for one learner, as `render` builds them.
fn objects_per_learner() -> usize {
    let config = devenv_manager::config::Config::default();
    devenv_manager::operator::objects::desired(&learner_space("x", "x"), &config.operator)
        .expect("objects")
        .to_values()
        .len()
}

async fn create_all(api: &Api<LearnerSpace>, objects: Vec<LearnerSpace>) {
    futures::stream::iter(objects)
        .for_each_concurrent(16, |ls| async move {
            for _ in 0..100 {
                match api.create(&PostParams::default(), &ls).await {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.code == 409 => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            panic!("cannot create LearnerSpaces");
        })
        .await;
}

async fn count_phase(api: &Api<LearnerSpace>, phase: Phase) -> usize {
    let list = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.iter()
        .filter(|ls| ls.status.as_ref().and_then(|s| s.phase) == Some(phase))
        .count()
}

async fn wait_for(api: &Api<LearnerSpace>, phase: Phase, count: usize) {
    while count_phase(api, phase).await < count {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn writes_except_leases(counts: &BTreeMap<String, usize>) -> usize {
    counts
        .iter()
        .filter(|(resource, _)| resource.as_str() != "leases")
        .map(|(_, n)| n)
        .sum()
}

fn main() {
    let quick = load::quick();
    let learners = if quick {
        10
    } else {
        load::env_or::<usize>("LEARNERS", 1000)
    };
    let cached = if quick {
        20
    } else {
        load::env_or::<usize>("CACHED", 10_000)
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let Some(bed) = testbed::start().await else { return };
        let Some(audit) = bed.audit_log_path() else {
            return testbed::skip("needs the local test bed's audit log");
        };
        let _ = audit;
        let admin = bed.client().await;
        bed.ensure_namespace(NAMESPACE).await;
        // Where the pod API publishes its CA, so that it has somewhere to.
        bed.ensure_namespace("devenv").await;
        let crd: serde_json::Value = devenv_manager::yaml::from_yaml_stream(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crd.yaml")).expect("CRD"),
        )
        .expect("CRD YAML")
        .remove(0);
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(admin.clone());
        crds.create(&PostParams::default(), &serde_json::from_value(crd).expect("CRD type"))
            .await
            .expect("CRD");
        let identity = bed.cluster_admin(NAMESPACE, "devenv-manager").await;
        let api: Api<LearnerSpace> = Api::namespaced(admin.clone(), NAMESPACE);
        let objects = (0..learners).map(|i| learner_space(&format!("ls-{i:05}"), &format!("learner-{i:05}"))).collect();
        create_all(&api, objects).await;
        let dir = tempfile::tempdir().expect("tempdir");

        // First pass: every LearnerSpace from nothing to Ready.
        let started = Instant::now();
        let operator = start_operator(&identity.kubeconfig, dir.path(), 1);
        wait_for(&api, Phase::Ready, learners).await;
        let first_pass = started.elapsed();
        let first = bed.writes_by_resource_settled(&identity.username).await;
        let rss_after_first = rss_mib(operator.child.id());
        operator.stop();

        // Second pass: a restarted operator looks at every LearnerSpace again.
        let operator = start_operator(&identity.kubeconfig, dir.path(), 2);
        while (operator.metric("operator_reconciles_total") as usize) < learners {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let second = bed.writes_by_resource_settled(&identity.username).await;

        // The cache at scale: more LearnerSpaces (duplicates of learner 0, so
        // each costs one status write instead of a namespace) up to CACHED.
        let extra = cached.saturating_sub(learners);
        let objects = (0..extra).map(|i| learner_space(&format!("dup-{i:05}"), "learner-00000")).collect();
        create_all(&api, objects).await;
        wait_for(&api, Phase::Failed, extra).await;
        let rss_cached = rss_mib(operator.child.id());
        operator.stop();

        let total_first = writes_except_leases(&first);
        let second_only = writes_except_leases(&second) - total_first;
        println!("operator benchmark: {learners} LearnerSpaces on a real kube-apiserver (2 cores, same machine)");
        println!("  first pass           {:.1} s, {:.1} ms per LearnerSpace", first_pass.as_secs_f64(), first_pass.as_secs_f64() * 1e3 / learners as f64);
        println!("  writes, first pass   {:.2} per LearnerSpace (leases excluded)", total_first as f64 / learners as f64);
        for (resource, count) in &first {
            println!("    {resource:<28} {:.2}", *count as f64 / learners as f64);
        }
        println!("  writes, second pass  {second_only} in all (restarted operator, {learners} reconciles)");
        for (resource, count) in &second {
            let delta = count - first.get(resource).copied().unwrap_or(0);
            if delta > 0 && resource != "leases" {
                println!("    {resource:<28} {delta}");
            }
        }
        println!("  RSS                  {rss_after_first:.1} MiB with {learners} LearnerSpaces and their {} objects cached", learners * objects_per_learner());
        println!("  RSS                  {rss_cached:.1} MiB with {cached} LearnerSpaces cached");
        if std::env::var_os("KEEP_LOGS").is_some() {
            println!("  operator logs in     {}", dir.keep().display());
        }
        drop(bed);
    });
}
