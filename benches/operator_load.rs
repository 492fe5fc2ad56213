//! The operator at scale, against real kube-apiservers:
//!
//!     cargo bench --bench operator_load                        # 1,000 distinct learners
//!     LEARNERS=10000 cargo bench --bench operator_load
//!     LEARNERS=1000 DISTINCT=0 cargo bench --bench operator_load  # 90% duplicates
//!
//! Two fresh test beds, one after the other, each sized for the objects
//! ([`testbed::Sizing::large`]):
//!
//! - **the floor**: every learner's objects as the operator's own pure
//!   builders render them, sent by one client straight to the API server with
//!   the operator's request budget (`operator.maxInFlightWrites` in flight)
//!   and the operator's verbs (the namespace created, then the rest applied
//!   together): what the API server takes, with no operator in between;
//! - **the operator**: `devenv-manager serve` (the release binary, as its own
//!   process, with a service-account kubeconfig) running before the first
//!   LearnerSpace is created; LEARNERS LearnerSpaces created by one client
//!   with the same budget; the time from the first create until all are
//!   Ready, the operator's API writes per LearnerSpace by verb and resource
//!   (audit log, leases aside) and how many the API server turned away (429),
//!   its peak RSS and CPU seconds; then the operator restarted, its writes
//!   during STEADY_SECS (300) once it has looked at every LearnerSpace again
//!   (target 0) and its steady RSS; then every LearnerSpace deleted, the time
//!   until all are gone and their tombstones written.
//!
//! Without `--bench` (as `cargo test` runs it) it is a quick correctness check
//! of 20 learners and a 5 s steady state, asserting all Ready, no writes in
//! the steady state and every tombstone; never a timing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devenv_manager::config::{Config, OperatorConfig};
use devenv_manager::crd::{LearnerSpace, Phase};
use devenv_manager::operator::kinds::{self, Managed, PerKind};
use devenv_manager::operator::objects::{self, Desired, MANAGER};
use devenv_testbed as testbed;
use devenv_testbed::{TestBed, Writes, load};
use futures::StreamExt;
use futures::future::{BoxFuture, try_join_all};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;

const BIN: &str = env!("CARGO_BIN_EXE_devenv-manager");
const NAMESPACE: &str = "aivo-system";
/// How long a quick run may wait for anything before it fails.
const QUICK_TIMEOUT: Duration = Duration::from_secs(120);

/// What one run measures, from the environment.
struct Settings {
    quick: bool,
    learners: usize,
    /// Every LearnerSpace a learner of its own; otherwise one in ten, the
    /// rest duplicates of learner 0 (each `Failed`, the old shape of this
    /// benchmark).
    distinct: bool,
    steady: Duration,
    in_flight: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = load::quick();
        let budget = OperatorConfig::default().max_in_flight_writes;
        Settings {
            quick,
            learners: if quick {
                20
            } else {
                load::env_or("LEARNERS", 1000)
            },
            distinct: quick || load::env_or("DISTINCT", 1) == 1,
            steady: Duration::from_secs(if quick {
                5
            } else {
                load::env_or("STEADY_SECS", 300)
            }),
            in_flight: load::env_or("IN_FLIGHT", budget),
        }
    }

    /// The learner id of LearnerSpace `i`.
    fn learner(&self, i: usize) -> String {
        if self.distinct || i.is_multiple_of(10) {
            format!("learner-{i:05}")
        } else {
            "learner-00000".to_string()
        }
    }

    fn distinct_learners(&self) -> usize {
        if self.distinct {
            self.learners
        } else {
            self.learners.div_ceil(10)
        }
    }

    fn learner_spaces(&self) -> Vec<LearnerSpace> {
        (0..self.learners)
            .map(|i| learner_space(&format!("ls-{i:05}"), &self.learner(i)))
            .collect()
    }
}

fn learner_space(name: &str, learner: &str) -> LearnerSpace {
    serde_json::from_value(json!({
        "apiVersion": "aivo.dev/v1", "kind": "LearnerSpace",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"learnerId": learner, "subjects": ["mathematics"], "resourceQuota": {"cpu": "2", "memory": "4Gi"}}
    }))
    .expect("LearnerSpace")
}

/// What the operator would write for `ls`, from its own builders.
fn desired(ls: &LearnerSpace) -> Desired {
    objects::desired(ls, &Config::default().operator).expect("objects")
}

/// Starts the operator process, its log kept in `dir`.
fn start_operator(kubeconfig: &Path, dir: &Path, run: u32) -> load::Serve {
    // OPERATOR_BIN: another build of it, to measure a before and an after.
    let bin = std::env::var_os("OPERATOR_BIN").unwrap_or_else(|| BIN.into());
    let mut command = Command::new(bin);
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

/// A fresh bed with the namespaces and the CRD the operator needs, and a
/// cluster-admin service account for the client under test.
async fn prepare_bed() -> Option<(TestBed, testbed::Identity)> {
    let bed = testbed::start_sized(&testbed::Sizing::large()).await?;
    if bed.audit_log_path().is_none() {
        testbed::skip("needs the local test bed's audit log");
        return None;
    }
    bed.ensure_namespace(NAMESPACE).await;
    // Where the pod API publishes its CA, so that it has somewhere to.
    bed.ensure_namespace("devenv").await;
    let crd: serde_json::Value = devenv_manager::yaml::from_yaml_stream(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crd.yaml"))
            .expect("CRD"),
    )
    .expect("CRD YAML")
    .remove(0);
    Api::<CustomResourceDefinition>::all(bed.client().await)
        .create(
            &PostParams::default(),
            &serde_json::from_value(crd).expect("CRD type"),
        )
        .await
        .expect("CRD");
    let identity = bed.cluster_admin(NAMESPACE, "devenv-manager").await;
    Some((bed, identity))
}

/// Waits for `done`, panicking past `limit` (quick runs only: a full run
/// waits as long as it takes).
async fn wait_until(what: &str, limit: Option<Duration>, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if limit.is_some_and(|l| started.elapsed() > l) {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The floor: every learner's rendered objects written straight to a fresh
/// API server, the namespace first and then the rest together, with
/// `in_flight` requests at most in flight. Returns the time it took.
async fn floor(settings: &Settings) -> Option<Duration> {
    let (bed, identity) = prepare_bed().await?;
    let client = identity.client.clone();
    let budget = Arc::new(Semaphore::new(settings.in_flight));
    let learners: Vec<Desired> = settings
        .learner_spaces()
        .iter()
        .take(settings.distinct_learners())
        .map(desired)
        .collect();
    let started = Instant::now();
    futures::stream::iter(learners)
        .for_each_concurrent(settings.in_flight, |desired| {
            let (client, budget) = (client.clone(), budget.clone());
            async move { write_learner(&client, &budget, &desired).await }
        })
        .await;
    let elapsed = started.elapsed();
    let writes = bed.writes_settled(&identity.username).await;
    println!(
        "floor: {} learners' objects written directly, {} in flight: {:.1} s ({} writes, {} turned away)",
        settings.distinct_learners(),
        settings.in_flight,
        elapsed.as_secs_f64(),
        writes.total_except("leases"),
        writes.throttled
    );
    Some(elapsed)
}

/// One learner's objects as the operator writes them: the namespace created,
/// then every other object server-side applied, all at once.
async fn write_learner(client: &Client, budget: &Semaphore, desired: &Desired) {
    let params = PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..PostParams::default()
    };
    {
        let _permit = budget.acquire().await.expect("budget");
        Api::<Namespace>::all(client.clone())
            .create(&params, &desired.namespace)
            .await
            .expect("namespace");
    }
    struct Applies<'a> {
        client: &'a Client,
        budget: &'a Semaphore,
        desired: &'a Desired,
        steps: Vec<BoxFuture<'a, Result<(), kube::Error>>>,
    }
    impl<'a> PerKind for Applies<'a> {
        fn kind<K: Managed>(&mut self) {
            if std::any::TypeId::of::<K>() == std::any::TypeId::of::<Namespace>() {
                return;
            }
            for object in K::wanted(self.desired) {
                let (client, budget) = (self.client, self.budget);
                self.steps.push(Box::pin(async move {
                    let _permit = budget.acquire().await.expect("budget");
                    let name = object.name_any();
                    kinds::api_for(client.clone(), object)
                        .patch(
                            &name,
                            &PatchParams::apply(MANAGER).force(),
                            &Patch::Apply(object),
                        )
                        .await
                        .map(drop)
                }));
            }
        }
    }
    let mut applies = Applies {
        client,
        budget,
        desired,
        steps: Vec::new(),
    };
    kinds::for_each(&mut applies);
    try_join_all(applies.steps).await.expect("applies");
}

/// What the quick run checks of the operator run.
struct Run {
    first: Writes,
    steady_writes: Writes,
    tombstones: usize,
}

/// The operator's phases, each figure printed as soon as it is measured (a
/// long run that fails late keeps what it measured).
async fn operator(settings: &Settings, floor: Duration) -> Option<Run> {
    let limit = settings.quick.then_some(QUICK_TIMEOUT);
    let (bed, identity) = prepare_bed().await?;
    let admin = bed.client().await;
    let api: Api<LearnerSpace> = Api::namespaced(admin.clone(), NAMESPACE);
    let (store, writer) = reflector::store();
    let watch = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    let watch = tokio::spawn(watch);
    store.wait_until_ready().await.expect("LearnerSpace watch");
    let dir = tempfile::tempdir().expect("tempdir");
    let user = identity.username.clone();
    let n = settings.learners;

    // First pass: the operator running, every LearnerSpace created at once.
    let first_op = start_operator(&identity.kubeconfig, dir.path(), 1);
    wait_until("the operator to lead", limit, || {
        first_op.probe("/readyz").contains("leading")
    })
    .await;
    let pid = first_op.child.id();
    let started = Instant::now();
    create_all(&api, settings.learner_spaces(), settings.in_flight).await;
    let (ready, failed) = (
        settings.distinct_learners(),
        n - settings.distinct_learners(),
    );
    wait_until("every LearnerSpace to be Ready", limit, || {
        count(&store, Phase::Ready) == ready && count(&store, Phase::Failed) == failed
    })
    .await;
    let to_ready = started.elapsed();
    let cpu = load::cpu_seconds(pid).unwrap_or(0.0);
    let first = bed.writes_settled(&user).await;
    let peak_mib = rss_mib(pid).1;
    first_op.stop();
    let objects = desired(&learner_space("x", "x")).to_values().len();
    println!(
        "operator benchmark: {n} LearnerSpaces ({} distinct learners, {} objects), {} in flight",
        settings.distinct_learners(),
        settings.distinct_learners() * objects,
        settings.in_flight
    );
    let ratio = to_ready.as_secs_f64() / floor.as_secs_f64();
    println!(
        "  first create to all Ready  {:.1} s; floor {:.1} s; ratio {ratio:.2}",
        to_ready.as_secs_f64(),
        floor.as_secs_f64(),
    );
    print_writes("writes to Ready", &first, n);
    println!("  CPU to Ready           {cpu:.1} s");
    println!("  RSS peak               {peak_mib:.1} MiB");

    // A restarted operator looks at every LearnerSpace again, then nothing
    // changes for STEADY_SECS: it must write nothing.
    let second_op = start_operator(&identity.kubeconfig, dir.path(), 2);
    let restarted = Instant::now();
    wait_until(
        "the restarted operator to look at every LearnerSpace",
        limit,
        || second_op.metric("operator_reconciles_total") as usize >= n,
    )
    .await;
    let resync = restarted.elapsed();
    let before = bed.writes_settled(&user).await;
    tokio::time::sleep(settings.steady).await;
    let steady_writes = minus(&bed.writes_settled(&user).await, &before);
    let (steady_mib, steady_peak_mib) = rss_mib(second_op.child.id());
    println!("  restart to resynced    {:.1} s", resync.as_secs_f64());
    let title = format!("writes, {} s steady", settings.steady.as_secs());
    print_writes(&title, &steady_writes, n);
    println!(
        "  RSS steady             {steady_mib:.1} MiB (restarted operator, all cached; its peak {steady_peak_mib:.1} MiB)"
    );

    // Every LearnerSpace deleted: the operator writes each tombstone and
    // removes its finalizer.
    let before = bed.writes_settled(&user).await;
    let deleting = Instant::now();
    delete_all(&api, settings.learner_spaces(), settings.in_flight).await;
    wait_until("every LearnerSpace to be gone", limit, || {
        store.state().is_empty()
    })
    .await;
    let delete = deleting.elapsed();
    let delete_writes = minus(&bed.writes_settled(&user).await, &before);
    second_op.stop();
    let tombstones = Api::<ConfigMap>::namespaced(admin, NAMESPACE)
        .list(&ListParams::default().labels("aivo.dev/component=tombstone"))
        .await
        .expect("tombstones")
        .items
        .len();
    watch.abort();
    println!(
        "  delete all             {:.1} s, {tombstones} tombstones",
        delete.as_secs_f64()
    );
    print_writes("writes to delete", &delete_writes, n);
    if std::env::var_os("KEEP_LOGS").is_some() {
        println!("  operator logs in     {}", dir.keep().display());
    }
    Some(Run {
        first,
        steady_writes,
        tombstones,
    })
}

/// Creates `objects` with `in_flight` requests at most in flight.
async fn create_all(api: &Api<LearnerSpace>, objects: Vec<LearnerSpace>, in_flight: usize) {
    futures::stream::iter(objects)
        .for_each_concurrent(in_flight, |ls| async move {
            api.create(&PostParams::default(), &ls)
                .await
                .expect("creating a LearnerSpace");
        })
        .await;
}

/// Deletes `objects` with `in_flight` requests at most in flight (one
/// deletecollection of thousands outlives the API server's request timeout).
async fn delete_all(api: &Api<LearnerSpace>, objects: Vec<LearnerSpace>, in_flight: usize) {
    futures::stream::iter(objects)
        .for_each_concurrent(in_flight, |ls| async move {
            match api.delete(&ls.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => panic!("deleting a LearnerSpace: {e}"),
            }
        })
        .await;
}

fn count(store: &Store<LearnerSpace>, phase: Phase) -> usize {
    store
        .state()
        .iter()
        .filter(|ls| ls.status.as_ref().and_then(|s| s.phase) == Some(phase))
        .count()
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    load::rss_kib(pid).map_or((0.0, 0.0), |(rss, hwm)| {
        (rss as f64 / 1024.0, hwm as f64 / 1024.0)
    })
}

/// The writes in `after` that are not in `before`.
fn minus(after: &Writes, before: &Writes) -> Writes {
    let by_verb_resource: BTreeMap<String, usize> = after
        .by_verb_resource
        .iter()
        .map(|(key, n)| {
            (
                key.clone(),
                n - before.by_verb_resource.get(key).copied().unwrap_or(0),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Writes {
        by_verb_resource,
        throttled: after.throttled - before.throttled,
    }
}

fn print_writes(title: &str, writes: &Writes, per: usize) {
    let total = writes.total_except("leases");
    println!(
        "  {title:<22} {total} ({:.2} per LearnerSpace, leases aside; {} turned away with 429)",
        total as f64 / per as f64,
        writes.throttled
    );
    for (key, n) in writes
        .by_verb_resource
        .iter()
        .filter(|(k, _)| !k.ends_with(" leases"))
    {
        println!("    {key:<34} {n:>7} {:>6.2}", *n as f64 / per as f64);
    }
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let Some(floor) = floor(&settings).await else {
            return;
        };
        let Some(run) = operator(&settings, floor).await else {
            return;
        };
        if settings.quick {
            // Correctness only: timings on a shared machine prove nothing.
            assert_eq!(
                run.steady_writes.total_except("leases"),
                0,
                "writes in the steady state"
            );
            assert_eq!(run.first.throttled, 0, "requests turned away");
            assert_eq!(run.tombstones, settings.distinct_learners(), "tombstones");
        }
    });
}
