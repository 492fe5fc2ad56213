//! The running operator: kube-runtime's Controller over LearnerSpaces in the
//! operator's namespace, plus one watch per managed kind (selected by the
//! `app.kubernetes.io/managed-by` and `aivo.dev/learnerspace` labels, across
//! namespaces) that both feeds the caches the reconciler compares with and
//! triggers the owning LearnerSpace when a managed object is edited or
//! deleted (drift repair).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cache::Cache;
use super::context::{AppliedObjects, Context, KindStores, Stores};
use super::kinds::{self, Managed, PerKind};
use super::metrics::PhaseLabel;
use super::objects::{LEARNERSPACE_LABEL, MANAGED_BY_LABEL, MANAGER};
use super::reconcile::{error_policy, reconcile};
use crate::config::OperatorConfig;
use crate::crd::{LearnerSpace, Phase};
use crate::metrics::Metrics;

/// How long running reconciles may take to finish after `stop`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a LearnerSpace's reconcile waits for more of its events.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Reconciles until `stop` is cancelled. `ready` is called once every cache
/// has synced.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let selector = format!("{MANAGED_BY_LABEL}={MANAGER},{LEARNERSPACE_LABEL}");
    let operator_ns = config.namespace.clone();
    let learner_spaces: Api<LearnerSpace> = Api::namespaced(client.clone(), &operator_ns);
    // The LearnerSpace cache drops managed fields too (a status written by
    // the operator adds a managed-fields entry to each of them).
    let (learner_space_store, writer) = reflector::store();
    let learner_space_stream = watcher(learner_spaces, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(learner_space_stream, learner_space_store);

    let applied = Arc::new(AppliedObjects::default());
    let mut watches = Watches {
        controller: Some(controller),
        stores: KindStores::default(),
        client: &client,
        selector: &selector,
        operator_ns: &operator_ns,
        applied: &applied,
    };
    kinds::for_each(&mut watches);
    let controller = watches.controller.take().expect("put back by every kind");
    let stores = Stores {
        learner_spaces: controller.store(),
        managed: watches.stores,
    };
    let reporter = Reporter {
        controller: MANAGER.to_string(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let context = Arc::new(Context::new(
        client,
        config,
        stores.clone(),
        recorder,
        metrics,
        applied,
    ));

    let phases = tokio::spawn(count_phases(context.clone(), stop.clone()));
    let max_in_flight = u16::try_from(context.config.max_in_flight_writes).unwrap_or(u16::MAX);
    let shutdown = stop.clone();
    info!(namespace = %operator_ns, "LearnerSpace operator running");
    let controller = controller
        // Applying a LearnerSpace's objects sends a dozen watch events back;
        // a short debounce coalesces most of them into one more look, which
        // finds nothing to write (the caches, or `applied` until they catch
        // up), while a new LearnerSpace waits only that long. As many
        // reconciles run at once as writes may be in flight: thousands of
        // LearnerSpaces (a restart, a burst) queue rather than flood the API
        // server and the heap at the same moment.
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(DEBOUNCE)
                .concurrency(max_in_flight),
        )
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                // Object-level failures are counted in error_policy; these are
                // the controller's own (a watch or a queue), logged and survived.
                tracing::debug!(error = %e, "controller event");
            }
        });
    // kube-runtime's graceful shutdown lets running reconciles finish, but
    // it was seen never to return while a watch keeps failing (the
    // LearnerSpace CRD not installed), which held `serve` forever on
    // SIGTERM: past the grace, stop anyway.
    tokio::select! {
        _ = controller => {}
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!(grace = ?SHUTDOWN_GRACE, "the controller did not stop in time; leaving it"),
    }
    phases.abort();
    info!("LearnerSpace operator stopped");
}

/// Adds to the controller one watch per managed kind, keeping its cache.
struct Watches<'a> {
    controller: Option<Controller<LearnerSpace>>,
    stores: KindStores,
    client: &'a Client,
    selector: &'a str,
    operator_ns: &'a str,
    applied: &'a Arc<AppliedObjects>,
}

impl PerKind for Watches<'_> {
    fn kind<K: Managed>(&mut self) {
        let api = Api::all(self.client.clone());
        let (store, stream) = watch::<K>(api, self.selector, self.applied.clone());
        self.controller = self
            .controller
            .take()
            .map(|c| c.watches_stream(stream, owner(self.operator_ns)));
        self.stores.insert(store);
    }
}

/// A watch of one managed kind: a cache (managed fields dropped, they are
/// most of an object's size and never compared) and the trigger stream.
/// Every event tells `applied` that the cache holds the object's latest.
fn watch<K: Managed>(
    api: Api<K>,
    selector: &str,
    applied: Arc<AppliedObjects>,
) -> (
    Cache<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) {
    let cache = Cache::default();
    let writer = cache.clone();
    let config = watcher::Config::default().labels(selector).any_semantic();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object| {
            object.managed_fields_mut().clear();
            applied.seen(object);
        })
        .inspect_ok(move |event| writer.record(event))
        .touched_objects();
    (cache, stream)
}

/// Maps a managed object to the LearnerSpace named by its label.
fn owner<K: Resource>(
    operator_ns: &str,
) -> impl Fn(K) -> Option<ObjectRef<LearnerSpace>> + Send + Sync + 'static {
    let operator_ns = operator_ns.to_string();
    move |object: K| {
        let name = object.labels().get(LEARNERSPACE_LABEL)?;
        Some(ObjectRef::new(name).within(&operator_ns))
    }
}

/// Keeps `learner_spaces_by_phase` current from the cache, every few
/// seconds rather than on every reconcile (O(n) each time), and forgets the
/// released LearnerSpaces that have left it.
async fn count_phases(ctx: Arc<Context>, stop: CancellationToken) {
    let (store, metrics) = (&ctx.stores.learner_spaces, &ctx.metrics);
    if store.wait_until_ready().await.is_err() {
        warn!("LearnerSpace cache never became ready");
        return;
    }
    loop {
        let mut counts = [0i64; Phase::ALL.len()];
        let state = store.state();
        let live = state
            .iter()
            .filter_map(|ls| ls.meta().uid.clone())
            .collect();
        ctx.released.retain(&live);
        for ls in state {
            let phase = ls
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending);
            if let Some(i) = Phase::ALL.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, count) in Phase::ALL.iter().zip(counts) {
            metrics
                .operator
                .learner_spaces_by_phase
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str(),
                })
                .set(count);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
