//! Reconcile one LearnerSpace: build what it needs, compare with the watch
//! caches, apply only what differs (server-side apply, one field manager),
//! write the status only when it changes. Deletion goes through the
//! `aivo.dev/tombstone` finalizer: tombstone, then namespace deletion, then
//! release — each step skipped when already done, so a crash anywhere in
//! between is finished by the next run without writing anything twice.

use std::any::TypeId;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, try_join_all};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalized};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::compare::contains;
use super::context::{AppliedObjects, Context};
use super::error::Error;
use super::kinds::{self, Managed, PerKind};
use super::objects::{self, Desired, LEARNERSPACE_LABEL, MANAGER, NETWORK_POLICY_NAMES};
use super::preflight::{Verdict, preflight};
use super::status::{self, Report};
use super::{ownership, tombstone};
use crate::crd::{FINALIZER, LearnerSpace, Phase};
use crate::k8s::ApiErrorExt;

/// A healthy LearnerSpace is looked at again this often even without events,
/// as a safety net under the watches (a no-op when nothing drifted).
const RESYNC: Duration = Duration::from_secs(600);

#[tracing::instrument(skip_all, fields(learnerspace = %ls.name_any(), learner = %ls.spec.learner_id))]
pub async fn reconcile(ls: Arc<LearnerSpace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.stores.synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    ctx.metrics.operator.reconciles.inc();
    let namespace = ls
        .namespace()
        .unwrap_or_else(|| ctx.config.namespace.clone());
    let api: Api<LearnerSpace> = Api::namespaced(ctx.client.clone(), &namespace);
    let (deleting, uid) = (ls.meta().deletion_timestamp.is_some(), uid(&ls));
    if deleting && ctx.released.contains(&uid) {
        return Ok(Action::await_change());
    }
    let Some(ls) = with_finalizer(ls, &ctx, &api).await? else {
        // The finalizer patch's watch event is on its way, and triggers a
        // reconcile of the version that has it.
        return Ok(Action::await_change());
    };
    let action = finalizer::finalizer(&api, FINALIZER, ls, |event| async {
        match event {
            Finalized::Apply(ls) => apply(&ls, &ctx, &api).await,
            Finalized::Cleanup(ls) => cleanup(&ls, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    if deleting {
        // Cleaned up and the finalizer removed: nothing is left to do.
        ctx.released.insert(&uid);
    }
    Ok(action)
}

/// `ls` holding the finalizer: a LearnerSpace not being deleted that lacks
/// it gets it here, as kube-runtime's finalizer helper would add it (the
/// same JSON patch, conditional on the list it read), but the reconcile then
/// goes on with the patched object instead of ending and waiting for the
/// patch's watch event to come back. `None`: `ls` is a stale copy of one the
/// finalizer was added to.
async fn with_finalizer(
    ls: Arc<LearnerSpace>,
    ctx: &Context,
    api: &Api<LearnerSpace>,
) -> Result<Option<Arc<LearnerSpace>>, Error> {
    let finalizers = ls.finalizers();
    if ls.meta().deletion_timestamp.is_some() || finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Some(ls));
    }
    let version = ls.resource_version().unwrap_or_default();
    if ctx.finalizing.over(&uid(&ls), &version) {
        return Ok(None);
    }
    let patch = if finalizers.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    let patched = ctx
        .write(api.patch(
            &ls.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        ))
        .await?;
    ctx.finalizing.record(&uid(&ls), &version);
    Ok(Some(Arc::new(patched)))
}

fn uid(ls: &LearnerSpace) -> String {
    ls.meta().uid.clone().unwrap_or_default()
}

/// Counts the error and retries with a delay: soon for what may pass, later
/// for what needs a change of the object.
pub fn error_policy(ls: Arc<LearnerSpace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .operator
        .reconcile_errors
        .get_or_create(&super::metrics::CategoryLabel {
            category: error.category(),
        })
        .inc();
    warn!(learnerspace = %ls.name_any(), error = %error, "reconcile failed");
    if error.is_transient() {
        Action::requeue(Duration::from_secs(5))
    } else {
        Action::requeue(Duration::from_secs(60))
    }
}

async fn apply(ls: &LearnerSpace, ctx: &Context, api: &Api<LearnerSpace>) -> Result<Action, Error> {
    let name = ls.meta().name.clone().ok_or(Error::Unnamed)?;
    let desired = match objects::desired(ls, &ctx.config) {
        Ok(desired) => desired,
        Err(e) => {
            let report = Report::new(Phase::Failed, "InvalidSpec", e.to_string());
            set_status(ls, ctx, api, &report).await?;
            return Ok(Action::await_change());
        }
    };
    let target = desired.namespace.metadata.name.clone().unwrap_or_default();
    let create_namespace = match check(ls, ctx, &target).await? {
        Verdict::Apply { create_namespace } => create_namespace,
        Verdict::Hold { report, recheck } => {
            set_status(ls, ctx, api, &report).await?;
            return Ok(Action::requeue(recheck));
        }
    };

    if let Err(e) = apply_all(ctx, &desired, &name, create_namespace).await {
        let phase = if e.is_transient() {
            Phase::Creating
        } else {
            Phase::Failed
        };
        let message = format!("applying the learner's objects failed: {e}");
        let report = Report::new(phase, e.category(), message).in_namespace(&target);
        set_status(ls, ctx, api, &report).await?;
        return Err(e);
    }
    if create_namespace {
        ctx.metrics.operator.learner_namespaces.inc();
        info!(namespace = %target, "learner namespace created");
    }
    let was_ready = ls.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready);
    let message = format!("namespace {target} is ready");
    let report = Report::new(Phase::Ready, "Reconciled", message).in_namespace(&target);
    let changed = set_status(ls, ctx, api, &report).await?;
    if changed
        && !was_ready
        && let Some(created_at) = &ls.meta().creation_timestamp
    {
        let seconds = (Timestamp::now() - created_at.0).get_seconds() as f64;
        ctx.metrics
            .operator
            .namespace_creation
            .observe(seconds.max(0.0));
    }
    Ok(Action::requeue(RESYNC))
}

/// The [`preflight`] verdict on `ls`. The namespace cache holds only
/// namespaces carrying the manager's labels: one that someone else made is
/// only seen by asking the API server, which is done only when the verdict
/// from the caches is to create it.
async fn check(ls: &LearnerSpace, ctx: &Context, target: &str) -> Result<Verdict, Error> {
    let others = ctx.stores.learner_spaces.state();
    let cached = ctx.stores.of::<Namespace>().get(None, target);
    let verdict = preflight(ls, &others, target, cached.as_ref());
    if verdict
        != (Verdict::Apply {
            create_namespace: true,
        })
    {
        return Ok(verdict);
    }
    let live = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(target)
        .await?;
    Ok(preflight(ls, &others, target, live.as_ref()))
}

/// Creates the namespace when told, then applies every object of every
/// managed kind that differs from the cache; removes network policies that
/// a change of settings made obsolete.
async fn apply_all(
    ctx: &Context,
    desired: &Desired,
    owner: &str,
    create_namespace: bool,
) -> Result<(), Error> {
    let ns = desired.namespace.metadata.name.clone().unwrap_or_default();
    if create_namespace {
        // A create, not an apply: should someone make the namespace between
        // the read above and here, this fails (409) instead of adopting it,
        // and the next reconcile finds it taken.
        let params = PostParams {
            field_manager: Some(MANAGER.to_string()),
            ..PostParams::default()
        };
        ctx.write(Api::<Namespace>::all(ctx.client.clone()).create(&params, &desired.namespace))
            .await?;
        let want = serde_json::to_value(&desired.namespace)?;
        ctx.applied
            .record(AppliedObjects::key(&desired.namespace), &want);
    }
    remove_binding_to_another_role(ctx, &desired.role_binding, &ns).await?;
    let mut plan = Plan {
        ctx,
        desired,
        created_namespace: create_namespace,
        steps: Vec::new(),
    };
    kinds::for_each(&mut plan);
    // Everything else lives in the namespace and depends on nothing else
    // there: applied all at once, the write budget deciding how many of
    // them are in flight.
    try_join_all(plan.steps).await?;
    prune_network_policies(ctx, desired, owner, &ns).await?;
    Ok(())
}

/// One [`ensure`] per object of every managed kind but a namespace just
/// created: futures do nothing until awaited, so they are collected here
/// and run together.
struct Plan<'a> {
    ctx: &'a Context,
    desired: &'a Desired,
    created_namespace: bool,
    steps: Vec<BoxFuture<'a, Result<(), Error>>>,
}

impl<'a> PerKind for Plan<'a> {
    fn kind<K: Managed>(&mut self) {
        // The namespace just created is as wanted: applying it again before
        // its watch event arrives would be a second write.
        if self.created_namespace && TypeId::of::<K>() == TypeId::of::<Namespace>() {
            return;
        }
        let ctx = self.ctx;
        for object in K::wanted(self.desired) {
            self.steps.push(Box::pin(ensure(ctx, object)));
        }
    }
}

/// A RoleBinding's `roleRef` cannot be changed, only the binding replaced:
/// one of ours that binds another role (the `learner` Role of earlier
/// versions, or an edit) is deleted, exactly that version of it, before
/// the wanted one is applied.
async fn remove_binding_to_another_role(
    ctx: &Context,
    wanted: &RoleBinding,
    ns: &str,
) -> Result<(), Error> {
    let name = wanted.metadata.name.clone().ok_or(Error::Unnamed)?;
    let Some(cached) = ctx.stores.of::<RoleBinding>().get(Some(ns), &name) else {
        return Ok(());
    };
    if cached.role_ref == wanted.role_ref {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cached.meta().uid.clone(),
            resource_version: cached.meta().resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match ctx
        .write(Api::<RoleBinding>::namespaced(ctx.client.clone(), ns).delete(&name, &params))
        .await
    {
        Ok(_) => {
            info!(binding = %name, was = %cached.role_ref.name, "replacing a role binding to another role");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Server-side applies `desired` unless the cache already holds it, or
/// will: this very value was applied and its watch event is still to come.
async fn ensure<K: Managed>(ctx: &Context, desired: &K) -> Result<(), Error> {
    let name = desired.meta().name.clone().ok_or(Error::Unnamed)?;
    let namespace = desired.meta().namespace.as_deref();
    let want = serde_json::to_value(desired)?;
    if let Some(have) = ctx.stores.of::<K>().json(namespace, &name)
        && contains(&have, &want)
    {
        return Ok(());
    }
    let applied = AppliedObjects::key(desired);
    if ctx.applied.pending(&applied, &want) {
        return Ok(());
    }
    debug!(kind = %K::kind(&()), %name, "absent or drifted; applying");
    let api = kinds::api_for(ctx.client.clone(), desired);
    let params = PatchParams::apply(MANAGER).force();
    ctx.write(api.patch(&name, &params, &Patch::Apply(&want)))
        .await?;
    ctx.applied.record(applied, &want);
    Ok(())
}

async fn prune_network_policies(
    ctx: &Context,
    desired: &Desired,
    owner: &str,
    ns: &str,
) -> Result<(), Error> {
    let wanted: Vec<&str> = desired
        .network_policies
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    for name in NETWORK_POLICY_NAMES.iter().filter(|n| !wanted.contains(n)) {
        let Some(cached) = ctx.stores.of::<NetworkPolicy>().get(Some(ns), name) else {
            continue;
        };
        if cached.labels().get(LEARNERSPACE_LABEL).map(String::as_str) == Some(owner) {
            match ctx.write(api.delete(name, &DeleteParams::default())).await {
                Ok(_) => info!(policy = %name, "removed obsolete network policy"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Writes the status `report` makes when it differs from the stored one;
/// records an Event on a phase change. Returns whether it wrote.
async fn set_status(
    ls: &LearnerSpace,
    ctx: &Context,
    api: &Api<LearnerSpace>,
    report: &Report,
) -> Result<bool, Error> {
    let previous = ls.status.as_ref();
    let wanted = status::status(report, ls.meta().generation, previous, Timestamp::now());
    let uid = ls.meta().uid.clone().unwrap_or_default();
    let version = ls.resource_version().unwrap_or_default();
    if previous == Some(&wanted) || ctx.written.already(&uid, &version, &wanted) {
        return Ok(false);
    }
    let name = ls.name_any();
    let patch = Patch::Merge(json!({ "status": wanted }));
    ctx.write(api.patch_status(&name, &PatchParams::default(), &patch))
        .await?;
    ctx.written.record(&uid, &version, &wanted);
    if previous.and_then(|s| s.phase) != Some(report.phase) {
        // A failure's Event is named for its cause (NamespaceTaken,
        // DuplicateLearner...), as `kubectl describe` readers expect; the
        // other transitions for the phase reached.
        let (type_, event_reason) = if matches!(report.phase, Phase::Failed) {
            (EventType::Warning, report.reason)
        } else {
            (EventType::Normal, report.phase.as_str())
        };
        record(ctx, ls, type_, event_reason, &report.message).await;
    }
    Ok(true)
}

/// Events are best effort: a refused Event must not fail the reconcile.
async fn record(ctx: &Context, ls: &LearnerSpace, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    let reference = ls.object_ref(&());
    if let Err(e) = ctx.write(ctx.recorder.publish(&event, &reference)).await {
        debug!(error = %e, "cannot record event");
    }
}

async fn cleanup(
    ls: &LearnerSpace,
    ctx: &Context,
    api: &Api<LearnerSpace>,
) -> Result<Action, Error> {
    let target = crate::names::learner_namespace(&ls.spec.learner_id);
    let name = ls.name_any();
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    // Read the namespace from the API, not the cache: after a restart the
    // cache may not have it yet, and deciding wrongly here loses a learner.
    let existing = namespaces.get_opt(&target).await?;
    let ours = existing
        .as_ref()
        .is_none_or(|n| ownership::owned_by(n, &name));
    if !ours {
        // A duplicate (the namespace and its record belong to the first
        // one), or a namespace someone else made: neither is ours to delete.
        info!(namespace = %target, "LearnerSpace deleted; the learner's namespace is not its own and is left alone");
        return Ok(Action::await_change());
    }
    let message = format!("recording tombstone and deleting namespace {target}");
    let report = Report::new(Phase::Terminating, "Deleting", message).in_namespace(&target);
    set_status(ls, ctx, api, &report).await?;
    write_tombstone(ls, ctx).await?;
    if let Some(ns) = existing
        && ns.meta().deletion_timestamp.is_none()
    {
        match ctx
            .write(namespaces.delete(&target, &DeleteParams::background()))
            .await
        {
            Ok(_) => info!(namespace = %target, "namespace deletion requested"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(deleted_at) = &ls.meta().deletion_timestamp {
        let seconds = (Timestamp::now() - deleted_at.0).get_seconds() as f64;
        ctx.metrics
            .operator
            .namespace_deletion
            .observe(seconds.max(0.0));
    }
    let note = format!(
        "tombstone {} written; namespace {target} deletion requested",
        crate::names::tombstone_name(&ls.spec.learner_id)
    );
    record(ctx, ls, EventType::Normal, "Deleted", &note).await;
    ctx.written.forget(&uid(ls));
    ctx.finalizing.forget(&uid(ls));
    Ok(Action::await_change())
}

/// Creates the tombstone, or confirms it already records this LearnerSpace;
/// a tombstone of an earlier LearnerSpace of the same learner gains an entry.
async fn write_tombstone(ls: &LearnerSpace, ctx: &Context) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let uid = ls.meta().uid.clone().unwrap_or_default();
    let deleted_at = ls
        .meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| Timestamp::now().to_string());
    let wanted = tombstone::tombstone(ls, &ctx.config.namespace, &deleted_at);
    let name = wanted.metadata.name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        Some(existing) if tombstone::records(&existing, &uid) => Ok(()),
        Some(_) => {
            let record = serde_json::to_string(&tombstone::record(ls, &deleted_at))?;
            let patch = json!({"data": {tombstone::history_key(&uid): record}});
            ctx.write(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)))
                .await?;
            info!(tombstone = %name, "added this deletion to an earlier tombstone of the same learner");
            Ok(())
        }
        // Written by a concurrent run in between, the create fails (409, a
        // transient error): the next run checks the uid it records.
        None => {
            ctx.write(api.create(&PostParams::default(), &wanted))
                .await?;
            info!(tombstone = %name, "tombstone written");
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
