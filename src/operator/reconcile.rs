//! Reconcile one LearnerSpace: build what it needs, compare with the watch
//! caches, apply only what differs (server-side apply, one field manager),
//! write the status only when it changes. Deletion goes through the
//! `aivo.dev/tombstone` finalizer: tombstone, then namespace deletion, then
//! release — each step skipped when already done, so a crash anywhere in
//! between is finished by the next run without writing anything twice.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalized};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use super::compare::contains;
use super::context::Context;
use super::error::Error;
use super::objects::{self, Desired, LEARNERSPACE_LABEL, MANAGER, NETWORK_POLICY_NAMES};
use super::{ownership, status, tombstone};
use crate::crd::{FINALIZER, LearnerSpace, LearnerSpaceStatus, Phase};

/// A healthy LearnerSpace is looked at again this often even without events,
/// as a safety net under the watches (a no-op when nothing drifted).
const RESYNC: Duration = Duration::from_secs(600);
/// A duplicate learner is checked again this often: the first may go away.
const DUPLICATE_RECHECK: Duration = Duration::from_secs(30);

#[tracing::instrument(skip_all, fields(learnerspace = %ls.name_any(), learner = %ls.spec.learner_id))]
pub async fn reconcile(ls: Arc<LearnerSpace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.stores.synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    ctx.metrics.reconciles.inc();
    let namespace = ls
        .namespace()
        .unwrap_or_else(|| ctx.config.namespace.clone());
    let api: Api<LearnerSpace> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::finalizer(&api, FINALIZER, ls, |event| async {
        match event {
            Finalized::Apply(ls) => apply(&ls, &ctx, &api).await,
            Finalized::Cleanup(ls) => cleanup(&ls, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Counts the error and retries with a delay: soon for what may pass, later
/// for what needs a change of the object.
pub fn error_policy(ls: Arc<LearnerSpace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::CategoryLabel {
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
            set_status(
                ls,
                ctx,
                api,
                Phase::Failed,
                "InvalidSpec",
                &e.to_string(),
                None,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let target = desired.namespace.metadata.name.clone().unwrap_or_default();

    if let Some(first) = first_with_same_learner(ls, &ctx.stores.learner_spaces) {
        let message = format!(
            "learner {:?} already has LearnerSpace {first} (namespace {target}); this one is ignored",
            ls.spec.learner_id
        );
        set_status(
            ls,
            ctx,
            api,
            Phase::Failed,
            "DuplicateLearner",
            &message,
            None,
        )
        .await?;
        return Ok(Action::requeue(DUPLICATE_RECHECK));
    }
    // The cache holds only namespaces carrying the manager's labels: one
    // that someone else made is only seen by asking the API server.
    let existing = match ctx.stores.namespaces.get(&ObjectRef::new(&target)) {
        Some(cached) => Some(cached),
        None => Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&target)
            .await?
            .map(Arc::new),
    };
    if let Some(existing) = &existing {
        // Whoever's it was, a namespace on its way out is waited for, and
        // nothing is written into it.
        if existing.meta().deletion_timestamp.is_some() {
            let message =
                format!("waiting for the previous namespace {target} to finish terminating");
            set_status(
                ls,
                ctx,
                api,
                Phase::Pending,
                "NamespaceTerminating",
                &message,
                Some(&target),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        if !ownership::owned_by(existing, &name) {
            let message = ownership::taken_message(&target, existing, &name);
            set_status(
                ls,
                ctx,
                api,
                Phase::Failed,
                "NamespaceTaken",
                &message,
                None,
            )
            .await?;
            return Ok(Action::requeue(DUPLICATE_RECHECK));
        }
    }

    let created = match apply_all(ctx, &desired, &name, existing.is_none()).await {
        Ok(created) => created,
        Err(e) => {
            let phase = if e.is_transient() {
                Phase::Creating
            } else {
                Phase::Failed
            };
            let message = format!("applying the learner's objects failed: {e}");
            set_status(ls, ctx, api, phase, e.category(), &message, Some(&target)).await?;
            return Err(e);
        }
    };
    if created {
        ctx.metrics.learner_namespaces.inc();
        info!(namespace = %target, "learner namespace created");
    }
    let was_ready = ls.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready);
    let message = format!("namespace {target} is ready");
    let changed = set_status(
        ls,
        ctx,
        api,
        Phase::Ready,
        "Reconciled",
        &message,
        Some(&target),
    )
    .await?;
    if changed
        && !was_ready
        && let Some(created_at) = &ls.meta().creation_timestamp
    {
        let seconds = (Timestamp::now() - created_at.0).get_seconds() as f64;
        ctx.metrics.namespace_creation.observe(seconds.max(0.0));
    }
    Ok(Action::requeue(RESYNC))
}

/// The oldest other LearnerSpace for the same learner, if this is not it.
fn first_with_same_learner(ls: &LearnerSpace, store: &Store<LearnerSpace>) -> Option<String> {
    let key = |l: &LearnerSpace| {
        (
            l.meta().creation_timestamp.clone().map(|t| t.0),
            l.name_any(),
        )
    };
    store
        .state()
        .into_iter()
        .filter(|other| {
            other.spec.learner_id == ls.spec.learner_id && other.meta().uid != ls.meta().uid
        })
        .filter(|other| other.meta().deletion_timestamp.is_none())
        .filter(|other| key(other) < key(ls))
        .min_by_key(|other| key(other))
        .map(|other| other.name_any())
}

/// Creates the namespace when `absent`, then applies every object that
/// differs from the cache; removes network policies that a change of
/// settings made obsolete. Returns whether the namespace was created.
async fn apply_all(
    ctx: &Context,
    desired: &Desired,
    owner: &str,
    absent: bool,
) -> Result<bool, Error> {
    let s = &ctx.stores;
    let client = &ctx.client;
    let ns = desired.namespace.metadata.name.clone().unwrap_or_default();
    if absent {
        // A create, not an apply: should someone make the namespace between
        // the read above and here, this fails (409) instead of adopting it,
        // and the next reconcile finds it taken.
        let params = PostParams {
            field_manager: Some(MANAGER.to_string()),
            ..PostParams::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&params, &desired.namespace)
            .await?;
    } else {
        ensure(Api::all(client.clone()), &s.namespaces, &desired.namespace).await?;
    }
    for policy in &desired.network_policies {
        ensure(
            Api::namespaced(client.clone(), &ns),
            &s.network_policies,
            policy,
        )
        .await?;
    }
    ensure(
        Api::namespaced(client.clone(), &ns),
        &s.quotas,
        &desired.quota,
    )
    .await?;
    ensure(
        Api::namespaced(client.clone(), &ns),
        &s.limit_ranges,
        &desired.limits,
    )
    .await?;
    ensure(
        Api::namespaced(client.clone(), &ns),
        &s.service_accounts,
        &desired.service_account,
    )
    .await?;
    remove_binding_to_another_role(ctx, &desired.role_binding, &ns).await?;
    ensure(
        Api::namespaced(client.clone(), &ns),
        &s.role_bindings,
        &desired.role_binding,
    )
    .await?;
    ensure(
        Api::namespaced(client.clone(), &ns),
        &s.config_maps,
        &desired.vault_paths,
    )
    .await?;
    prune_network_policies(ctx, desired, owner, &ns).await?;
    Ok(absent)
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
    let Some(cached) = ctx
        .stores
        .role_bindings
        .get(&ObjectRef::new(&name).within(ns))
    else {
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
    match Api::<RoleBinding>::namespaced(ctx.client.clone(), ns)
        .delete(&name, &params)
        .await
    {
        Ok(_) => {
            info!(binding = %name, was = %cached.role_ref.name, "replacing a role binding to another role");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Server-side applies `desired` unless the cache already holds it.
async fn ensure<K>(api: Api<K>, store: &Store<K>, desired: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.meta().name.clone().ok_or(Error::Unnamed)?;
    let mut key = ObjectRef::<K>::new(&name);
    if let Some(ns) = &desired.meta().namespace {
        key = key.within(ns);
    }
    let want = serde_json::to_value(desired)?;
    if let Some(cached) = store.get(&key) {
        let have = serde_json::to_value(&*cached)?;
        if contains(&have, &want) {
            return Ok(());
        }
        debug!(kind = %K::kind(&()), %name, "drifted; applying");
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&want),
    )
    .await?;
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
        let Some(cached) = ctx
            .stores
            .network_policies
            .get(&ObjectRef::new(name).within(ns))
        else {
            continue;
        };
        if cached.labels().get(LEARNERSPACE_LABEL).map(String::as_str) == Some(owner) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => info!(policy = %name, "removed obsolete network policy"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Writes the status when it differs from the stored one; records an Event
/// on a phase change. Returns whether it wrote.
async fn set_status(
    ls: &LearnerSpace,
    ctx: &Context,
    api: &Api<LearnerSpace>,
    phase: Phase,
    reason: &str,
    message: &str,
    namespace: Option<&str>,
) -> Result<bool, Error> {
    let previous = ls.status.as_ref();
    let wanted: LearnerSpaceStatus = status::status(
        phase,
        reason,
        message,
        namespace,
        ls.meta().generation,
        previous,
        Timestamp::now(),
    );
    let uid = ls.meta().uid.clone().unwrap_or_default();
    let version = ls.resource_version().unwrap_or_default();
    if previous == Some(&wanted) || ctx.written.already(&uid, &version, &wanted) {
        return Ok(false);
    }
    let name = ls.name_any();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": wanted })),
    )
    .await?;
    ctx.written.record(&uid, &version, &wanted);
    if previous.and_then(|s| s.phase) != Some(phase) {
        // A failure's Event is named for its cause (NamespaceTaken,
        // DuplicateLearner...), as `kubectl describe` readers expect; the
        // other transitions for the phase reached.
        let (type_, event_reason) = if matches!(phase, Phase::Failed) {
            (EventType::Warning, reason)
        } else {
            (EventType::Normal, phase.as_str())
        };
        record(ctx, ls, type_, event_reason, message).await;
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
    if let Err(e) = ctx.recorder.publish(&event, &ls.object_ref(&())).await {
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
    set_status(
        ls,
        ctx,
        api,
        Phase::Terminating,
        "Deleting",
        &message,
        Some(&target),
    )
    .await?;
    write_tombstone(ls, ctx).await?;
    if let Some(ns) = existing
        && ns.meta().deletion_timestamp.is_none()
    {
        match namespaces
            .delete(&target, &DeleteParams::background())
            .await
        {
            Ok(_) => info!(namespace = %target, "namespace deletion requested"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(deleted_at) = &ls.meta().deletion_timestamp {
        let seconds = (Timestamp::now() - deleted_at.0).get_seconds() as f64;
        ctx.metrics.namespace_deletion.observe(seconds.max(0.0));
    }
    let note = format!(
        "tombstone {} written; namespace {target} deletion requested",
        crate::names::tombstone_name(&ls.spec.learner_id)
    );
    record(ctx, ls, EventType::Normal, "Deleted", &note).await;
    ctx.written
        .forget(&ls.meta().uid.clone().unwrap_or_default());
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
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(tombstone = %name, "added this deletion to an earlier tombstone of the same learner");
            Ok(())
        }
        None => match api.create(&PostParams::default(), &wanted).await {
            Ok(_) => {
                info!(tombstone = %name, "tombstone written");
                Ok(())
            }
            // Written by a concurrent run in between: the next run checks its uid.
            Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Kube(kube::Error::Api(s))),
            Err(e) => Err(e.into()),
        },
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
