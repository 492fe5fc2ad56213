//! `devenv-manager unregister`: deletes both webhook configurations (named
//! [`CONFIGURATION_NAME`]). The chart's pre-delete hook runs it, because
//! Helm 3 deletes the webhook configurations last on uninstall, after the
//! Deployment (docs/helm.md): until then a fail-closed webhook with no
//! manager behind it would refuse every devenv pod and LearnerSpace.
//! A configuration that is already gone counts as deleted, so the hook can
//! run twice, and after Helm 4 (which deletes them first).

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams};
use kube::{Client, Resource};
use tracing::{info, instrument};

use super::registration::CONFIGURATION_NAME;
use crate::k8s::ApiErrorExt;

#[derive(Debug, thiserror::Error)]
pub enum UnregisterError {
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: &'static str,
        source: kube::Error,
    },
}

/// What became of one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    AlreadyGone,
}

/// A delete's result as an [`Outcome`]: 404 is [`Outcome::AlreadyGone`].
pub fn outcome<T>(result: Result<T, kube::Error>) -> Result<Outcome, kube::Error> {
    match result {
        Ok(_) => Ok(Outcome::Deleted),
        Err(e) if e.is_not_found() => Ok(Outcome::AlreadyGone),
        Err(e) => Err(e),
    }
}

/// Deletes the mutating configuration (the one that blocks devenv pods),
/// then the validating one; a line per configuration saying what happened.
#[instrument(skip_all)]
pub async fn delete_configurations(client: Client) -> Result<Vec<String>, UnregisterError> {
    Ok(vec![
        delete::<MutatingWebhookConfiguration>(client.clone()).await?,
        delete::<ValidatingWebhookConfiguration>(client).await?,
    ])
}

async fn delete<K>(client: Client) -> Result<String, UnregisterError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let api: Api<K> = Api::all(client);
    let result = api
        .delete(CONFIGURATION_NAME, &DeleteParams::default())
        .await;
    let done = outcome(result).map_err(|source| UnregisterError::Delete {
        kind,
        name: CONFIGURATION_NAME,
        source,
    })?;
    info!(
        kind,
        name = CONFIGURATION_NAME,
        ?done,
        "webhook configuration"
    );
    Ok(match done {
        Outcome::Deleted => format!("{kind} {CONFIGURATION_NAME} deleted"),
        Outcome::AlreadyGone => format!("{kind} {CONFIGURATION_NAME} was already gone"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let mut status = kube::core::Status::failure("refused", "NotFound");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn not_found_counts_as_gone_and_other_errors_stay_errors() {
        assert_eq!(outcome(Ok::<(), _>(())).unwrap(), Outcome::Deleted);
        assert_eq!(
            outcome::<()>(Err(api_error(404))).unwrap(),
            Outcome::AlreadyGone
        );
        assert!(outcome::<()>(Err(api_error(403))).is_err());
    }
}
