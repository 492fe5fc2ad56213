//! `self-managed` mode at run time: every replica follows the Secret, and
//! the holder of Lease `devenv-manager-certs` keeps it. A Lease of its own
//! (not the operator's): the certificates are the webhook's, which runs
//! without the operator, and in the manager's own namespace.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::keeper::{Keeper, Settings};
use super::metrics::CertsMetrics;
use super::serving;
use crate::k8s::Client;
use crate::leader::{self, LeaseSettings};
use crate::probes::Health;
use crate::tls::ReloadingResolver;

pub const LEASE_NAME: &str = "devenv-manager-certs";

/// What the self-managed mode needs from the rest of the process.
pub struct SelfManaged {
    pub settings: Settings,
    /// This replica's name in the Lease.
    pub identity: String,
    /// Shared by both TLS listeners.
    pub resolver: Arc<ReloadingResolver>,
    /// The bundle, for the CA ConfigMaps.
    pub bundle: watch::Sender<Option<String>>,
    pub health: Arc<Health>,
    pub metrics: CertsMetrics,
}

impl SelfManaged {
    /// Runs until `shutdown`.
    pub async fn run(self, client: Client, shutdown: CancellationToken) {
        let SelfManaged {
            settings,
            identity,
            resolver,
            bundle,
            health,
            metrics,
        } = self;
        let follow = serving::follow(
            client.clone(),
            settings.namespace.clone(),
            resolver,
            bundle,
            health,
            shutdown.clone(),
        );
        let lease = LeaseSettings {
            name: LEASE_NAME.to_string(),
            ..LeaseSettings::new(&settings.namespace, identity)
        };
        let keep = leader::run_while_leader(
            client.clone(),
            lease,
            shutdown,
            |_role| {},
            move |term| {
                let keeper = Keeper::new(client.clone(), settings.clone(), metrics.clone());
                keeper.run(term)
            },
        );
        futures::join!(follow, keep);
    }
}
