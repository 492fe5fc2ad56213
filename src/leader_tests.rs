//! The leader's own decisions (when it must step down, what counts as a
//! renewal) and, against the real lease manager and a fake Lease API, that a
//! leader whose renewals fail stops in time.

use super::*;

fn settings() -> LeaseSettings {
    LeaseSettings::new("ns", "a".into())
}

#[test]
fn a_leader_leads_only_while_its_last_renewal_is_young_enough() {
    let s = settings();
    let renewed = Instant::now();
    let after = |secs| renewed + Duration::from_secs(secs);
    assert!(may_lead(true, Some(renewed), after(0), &s));
    assert!(may_lead(true, Some(renewed), after(9), &s));
    assert!(
        !may_lead(true, Some(renewed), after(10), &s),
        "steps down one renewal period before the lease could expire"
    );
    assert!(!may_lead(false, Some(renewed), after(0), &s), "lost");
    assert!(!may_lead(true, None, after(0), &s), "never renewed");
}

#[test]
fn renewals_keep_the_latest() {
    let renewals = Renewals::default();
    let t = Instant::now();
    renewals.record(t + Duration::from_secs(2));
    renewals.record(t);
    assert_eq!(renewals.last(), Some(t + Duration::from_secs(2)));
}

fn mock() -> (
    Client,
    Renewals,
    tower_test::mock::Handle<Request<Body>, Response<Body>>,
) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let renewals = Renewals::default();
    let client = Client::new(
        LeaseClient {
            inner: Client::new(service, "ns"),
            lease_path: settings().path().into(),
            renewals: renewals.clone(),
        },
        "ns",
    );
    (client, renewals, handle)
}

fn answer(code: u16) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"devenv-manager-operator"}}"#.to_vec()))
        .unwrap()
}

/// Only a successful write of this Lease counts as a renewal.
#[tokio::test]
async fn a_renewal_is_a_successful_write_of_the_lease() {
    let (client, renewals, mut handle) = mock();
    let api: Api<Lease> = Api::namespaced(client, "ns");
    let name = "devenv-manager-operator";
    let patch = kube::api::Patch::Merge(serde_json::json!({}));
    let params = kube::api::PatchParams::default();

    let read = tokio::spawn({
        let api = api.clone();
        async move { api.get(name).await }
    });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(200));
    read.await.unwrap().unwrap();
    assert_eq!(renewals.last(), None, "a read renews nothing");

    let refused = tokio::spawn({
        let (api, patch, params) = (api.clone(), patch.clone(), params.clone());
        async move { api.patch(name, &params, &patch).await }
    });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(500));
    assert!(refused.await.unwrap().is_err());
    assert_eq!(renewals.last(), None, "a refused write renews nothing");

    let before = Instant::now();
    let renewed = tokio::spawn(async move { api.patch(name, &params, &patch).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(answer(200));
    renewed.await.unwrap().unwrap();
    assert!(renewals.last().is_some_and(|at| at >= before));
}

/// A hung API server fails the request in time, instead of holding the
/// leader in a renewal that never ends.
#[tokio::test(start_paused = true)]
async fn no_request_about_the_lease_outlives_the_timeout() {
    let (client, renewals, mut handle) = mock();
    let api: Api<Lease> = Api::namespaced(client, "ns");
    let patch = kube::api::Patch::Merge(serde_json::json!({}));
    let hung = tokio::spawn(async move {
        api.patch(
            "devenv-manager-operator",
            &kube::api::PatchParams::default(),
            &patch,
        )
        .await
    });
    let (_request, _never_answered) = handle.next_request().await.unwrap();
    let result = tokio::time::timeout(REQUEST_TIMEOUT * 2, hung)
        .await
        .expect("bounded by REQUEST_TIMEOUT")
        .unwrap();
    assert!(result.is_err());
    assert_eq!(renewals.last(), None);
}

/// The API server as far as the Lease goes: one Lease in memory, read,
/// created and patched (every patch merges `spec`, a null removing a
/// field), or every request refused while `failing`.
#[derive(Clone, Default)]
struct FakeLeases {
    lease: Arc<Mutex<Option<serde_json::Value>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeLeases {
    fn serve(&self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (code, body) = fake.answer(request).await;
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
    }

    async fn answer(&self, request: Request<Body>) -> (u16, serde_json::Value) {
        use std::sync::atomic::Ordering;
        let status = |code: u16, reason: &str| {
            let body = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "code": code, "reason": reason, "message": reason});
            (code, body)
        };
        if self.failing.load(Ordering::SeqCst) {
            return status(500, "InternalError");
        }
        let method = request.method().clone();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let sent: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let mut lease = self.lease.lock().unwrap();
        match (method, lease.as_mut()) {
            (Method::GET, Some(current)) => (200, current.clone()),
            (Method::GET, None) | (Method::PATCH, None) => status(404, "NotFound"),
            (Method::POST, None) => {
                *lease = Some(sent.clone());
                (201, sent)
            }
            (Method::POST, Some(_)) => status(409, "AlreadyExists"),
            (Method::PATCH, Some(current)) => {
                let spec = current
                    .as_object_mut()
                    .unwrap()
                    .entry("spec")
                    .or_insert_with(|| serde_json::json!({}));
                for (key, value) in sent["spec"].as_object().into_iter().flatten() {
                    if value.is_null() {
                        spec.as_object_mut().unwrap().remove(key);
                    } else {
                        spec[key] = value.clone();
                    }
                }
                (200, current.clone())
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }

    fn holder(&self) -> Option<String> {
        let lease = self.lease.lock().unwrap();
        lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    fn fail(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Against the real lease manager (a short lease: 3 s, renewed every
/// second): it leads; when every renewal fails it stops reconciling
/// before the lease could expire; when renewals succeed again (nobody
/// took over) it leads again; on shutdown it releases the lease.
#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_its_lease_expires() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = FakeLeases::default();
    fake.serve(handle);
    let settings = LeaseSettings {
        duration: Duration::from_secs(3),
        renew_every: Duration::from_secs(1),
        ..LeaseSettings::new("ns", "replica-a".into())
    };
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let terms = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (leading, terms, shutdown) = (leading.clone(), terms.clone(), shutdown.clone());
        async move {
            run_while_leader(
                Client::new(service, "ns"),
                settings,
                shutdown,
                |_| {},
                move |term: CancellationToken| {
                    let (leading, terms) = (leading.clone(), terms.clone());
                    async move {
                        use std::sync::atomic::Ordering;
                        terms.fetch_add(1, Ordering::SeqCst);
                        leading.store(true, Ordering::SeqCst);
                        term.cancelled().await;
                        leading.store(false, Ordering::SeqCst);
                    }
                },
            )
            .await
        }
    });
    let is_leading = || leading.load(std::sync::atomic::Ordering::SeqCst);
    let within = |limit: Duration, wanted: bool| async move {
        let start = Instant::now();
        while is_leading() != wanted {
            assert!(
                start.elapsed() < limit,
                "still leading={} after {limit:?}",
                !wanted
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    };

    within(Duration::from_secs(5), true).await;
    assert_eq!(fake.holder().as_deref(), Some("replica-a"));
    // Let one renewal go through, then refuse everything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(is_leading());
    fake.fail(true);
    let stepped_down = within(Duration::from_secs(3), false).await;
    assert!(
        stepped_down < Duration::from_secs(3),
        "stopped {stepped_down:?} after the API server went away: no later than the lease's own expiry"
    );

    fake.fail(false);
    within(Duration::from_secs(5), true).await;
    assert_eq!(terms.load(std::sync::atomic::Ordering::SeqCst), 2);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("shutdown is prompt")
        .unwrap();
    assert!(!is_leading());
    assert_eq!(fake.holder(), None, "released on shutdown");
}
