//! Authentication: a bearer service-account token, checked by a TokenReview
//! with the manager's audience, naming a devenv developer.
//!
//! The TokenReview is the only verification; the answer is cached by the
//! token's SHA-256 (see [`super::token_cache`]). Concurrent requests with the
//! same unknown token share one TokenReview. A client address whose tokens keep
//! failing runs out of failed-authentication budget, after which its unknown
//! tokens are refused without a TokenReview: junk tokens cost the API server
//! at most that budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;
use warp::http::HeaderMap;

use super::error::ApiError;
use super::pods::upstream_error;
use super::rate_limit::{Rate, RateLimiter};
use super::token_cache::{
    DEFAULT_CAPACITY, TokenCache, TokenHash, jwt_expiry, looks_like_jwt, time_to_live,
};
use crate::config::DevenvConfig;
use crate::k8s::Client;
use crate::metrics::Metrics;
use crate::names::developer_from_username;

/// The only `X-Auth-Type` accepted (when the header is sent at all).
pub const AUTH_TYPE: &str = "k8s-sa";
/// Service-account tokens are about 1 KB; anything much larger is not one.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How long a TokenReview may take before the request gets a 503.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated developer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Developer {
    /// `alice` for `devenv-alice`.
    pub name: String,
    /// The namespace of the developer's service account.
    pub namespace: String,
}

/// What a TokenReview said, reduced to what the decision needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewStatus {
    pub authenticated: bool,
    pub username: Option<String>,
    pub audiences: Vec<String>,
    pub error: Option<String>,
}

/// Sends TokenReviews; the Kubernetes one in production, fakes in unit tests.
pub trait TokenReviewer: Send + Sync {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ReviewStatus, ApiError>>;
}

/// TokenReview through the Kubernetes API.
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
    audience: String,
}

impl KubeTokenReviewer {
    pub fn new(client: Client, audience: &str) -> Self {
        KubeTokenReviewer {
            api: Api::all(client),
            audience: audience.to_string(),
        }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ReviewStatus, ApiError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_string(),
                    audiences: Some(vec![self.audience.clone()]),
                },
                ..TokenReview::default()
            };
            let created = tokio::time::timeout(
                REVIEW_TIMEOUT,
                self.api.create(&PostParams::default(), &review),
            )
            .await
            .map_err(|_| {
                ApiError::Unavailable(format!(
                    "the Kubernetes API server did not answer the TokenReview within {REVIEW_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| upstream_error("review the token", e))?;
            let status = created.status.unwrap_or_default();
            Ok(ReviewStatus {
                authenticated: status.authenticated == Some(true),
                username: status.user.and_then(|u| u.username),
                audiences: status.audiences.unwrap_or_default(),
                error: status.error,
            })
        })
    }
}

/// The decision on a token, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Developer(Developer),
    /// Authenticated, but not a devenv developer (403).
    NotADeveloper(String),
    /// Not authenticated, or not for our audience (401).
    Rejected(String),
}

impl Verdict {
    fn is_authenticated(&self) -> bool {
        !matches!(self, Verdict::Rejected(_))
    }

    fn into_result(self) -> Result<Developer, ApiError> {
        match self {
            Verdict::Developer(d) => Ok(d),
            Verdict::NotADeveloper(m) => Err(ApiError::NotADeveloper(m)),
            Verdict::Rejected(m) => Err(ApiError::Unauthenticated(m)),
        }
    }
}

/// Decides on a TokenReview's answer: authenticated, for `audience`, and a
/// `system:serviceaccount:{ns}:devenv-{developer}` of a devenv namespace.
pub fn verdict_of(config: &DevenvConfig, status: &ReviewStatus) -> Verdict {
    if !status.authenticated {
        return Verdict::Rejected(
            status
                .error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".to_string()),
        );
    }
    if !status.audiences.iter().any(|a| a == &config.audience) {
        return Verdict::Rejected(format!(
            "the token is not for audience {:?}",
            config.audience
        ));
    }
    let Some(username) = status.username.as_deref() else {
        return Verdict::Rejected("the TokenReview named no user".to_string());
    };
    match developer_from_username(config, username) {
        Some((namespace, name)) => Verdict::Developer(Developer {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }),
        None => Verdict::NotADeveloper(format!(
            "{username} is not a devenv developer: only service accounts named {}<developer> in {} may use the pod API",
            config.service_account_prefix,
            config.namespaces.join(", ")
        )),
    }
}

/// The bearer token of a request, checking `X-Auth-Type` when present.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut auth_types = headers.get_all("x-auth-type").iter();
    if let Some(auth_type) = auth_types.next() {
        let ok = auth_type
            .to_str()
            .is_ok_and(|t| t.trim().eq_ignore_ascii_case(AUTH_TYPE));
        if !ok || auth_types.next().is_some() {
            return Err(ApiError::BadAuthorization(format!(
                "unsupported X-Auth-Type: only {AUTH_TYPE} (a Kubernetes service-account token) is accepted"
            )));
        }
    }
    let mut values = headers.get_all(warp::http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::MissingToken);
    };
    if values.next().is_some() {
        return Err(ApiError::BadAuthorization(
            "more than one Authorization header".to_string(),
        ));
    }
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(ApiError::BadAuthorization(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let value = value.to_str().map_err(|_| {
        ApiError::BadAuthorization("the Authorization header is not ASCII".to_string())
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(ApiError::BadAuthorization(
            "the Authorization header must be 'Bearer <token>'".to_string(),
        ));
    }
    Ok(token)
}

type Inflight = Arc<OnceCell<Result<Verdict, ApiError>>>;
type InflightMap = Mutex<HashMap<TokenHash, Inflight>>;

/// A request's share of the TokenReview in flight for its token. Dropping it
/// (the review ended, or the request was: a client that resets its stream)
/// removes the map entry, unless a newer review of the same token took it.
struct InflightEntry<'a> {
    map: &'a InflightMap,
    key: TokenHash,
    cell: Inflight,
}

impl<'a> InflightEntry<'a> {
    fn join(map: &'a InflightMap, key: TokenHash) -> Self {
        let cell = map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        InflightEntry { map, key, cell }
    }
}

impl Drop for InflightEntry<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            map.remove(&self.key);
        }
    }
}

pub struct Authenticator {
    devenv: Arc<DevenvConfig>,
    cache: Mutex<TokenCache<Verdict>>,
    inflight: InflightMap,
    failed_auths: RateLimiter<IpAddr>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// `failed_auths`: per client address, past which unknown tokens are
    /// refused without a TokenReview.
    pub fn new(devenv: Arc<DevenvConfig>, failed_auths: Rate, metrics: Arc<Metrics>) -> Self {
        Authenticator {
            devenv,
            cache: Mutex::new(TokenCache::new(DEFAULT_CAPACITY)),
            inflight: Mutex::new(HashMap::new()),
            failed_auths: RateLimiter::new(failed_auths.per_second, failed_auths.burst),
            metrics,
        }
    }

    /// TokenReviews in flight (one per distinct token being reviewed).
    pub fn reviews_in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The developer behind the request's token. What can be decided without
    /// the API server (no token, another scheme, a cached verdict, a token
    /// that is not a JWT) is decided first, so it is a 401 even while
    /// `reviewer` is unavailable (no cluster yet): only a token that needs a
    /// TokenReview can get that error.
    pub async fn authenticate(
        &self,
        reviewer: Result<&dyn TokenReviewer, ApiError>,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Developer, ApiError> {
        let token = bearer_token(headers)?;
        let key = TokenHash::of(token);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key, Instant::now());
        if let Some(verdict) = cached {
            self.metrics.api.tokenreview_cache_hits.inc();
            return verdict.into_result();
        }
        if !looks_like_jwt(token) {
            // Not a service-account token at all: no TokenReview, but it is a
            // failed authentication all the same.
            self.charge_failure(client)?;
            return Err(ApiError::Unauthenticated(
                "not a Kubernetes service-account token (expected a JWT)".to_string(),
            ));
        }

        let reviewer = reviewer?;

        let entry = InflightEntry::join(&self.inflight, key);
        let mut reviewed_here = false;
        let outcome = entry
            .cell
            .get_or_init(|| {
                reviewed_here = true;
                self.review_and_remember(reviewer, token, key, client)
            })
            .await
            .clone();
        drop(entry);
        if !reviewed_here {
            // Answered by another request's TokenReview of the same token.
            self.metrics.api.tokenreview_cache_hits.inc();
        }
        outcome?.into_result()
    }

    /// Takes one failed-authentication token from the client's budget; 429
    /// when it is spent.
    fn charge_failure(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        match client {
            Some(ip) => self
                .failed_auths
                .try_acquire(&ip, Instant::now())
                .map_err(ApiError::TooManyFailedAuthentications),
            None => Ok(()),
        }
    }

    /// One TokenReview, paid for in advance from the client's
    /// failed-authentication budget (refunded when the token is good or the API
    /// server could not be asked), so that concurrent junk cannot overdraw it.
    async fn review_and_remember(
        &self,
        reviewer: &dyn TokenReviewer,
        token: &str,
        key: TokenHash,
        client: Option<IpAddr>,
    ) -> Result<Verdict, ApiError> {
        self.charge_failure(client)?;
        let refund = || {
            if let Some(ip) = client {
                self.failed_auths.refund(&ip);
            }
        };
        self.metrics.api.tokenreview_requests.inc();
        let status = match reviewer.review(token).await {
            Ok(status) => status,
            Err(e) => {
                // Not the client's fault, and not an answer about the token:
                // nothing is cached.
                refund();
                return Err(e);
            }
        };
        let verdict = verdict_of(&self.devenv, &status);
        if verdict.is_authenticated() {
            refund();
        }
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let ttl = time_to_live(verdict.is_authenticated(), jwt_expiry(token), now_unix);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            verdict.clone(),
            ttl,
            Instant::now(),
        );
        Ok(verdict)
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
