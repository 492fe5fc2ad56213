//! The webhook's HTTP edge (warp): routes, the bounded body read, and the one
//! place where errors become HTTP responses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::{StatusCode, header};
use warp::{Filter, Rejection, Reply};

use super::{MAX_REVIEW_BYTES, Outcome, ReviewError, Webhook};
use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use crate::server::{BodyBudget, Reservation, limits};

/// A body of unknown length is reserved from the budget in steps of this.
const RESERVE_STEP: usize = 64 * 1024;
/// A body declared larger than this does not wait for room in the budget:
/// it is refused at once when there is none. Waiting streams hold their
/// unread data in the HTTP/2 connection window, so letting large ones wait
/// would stall every other stream of their connection; ordinary reviews are
/// a few KiB and do wait.
const WAIT_AT_MOST_FOR: usize = 256 * 1024;
/// An oversized body is read and thrown away up to this much before the 400
/// is sent, so that a client that writes its whole body before reading (as
/// most HTTP/1.1 clients do) reads the answer instead of a reset: nginx's
/// lingering close.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How request bodies are bounded: the listener-wide byte budget, how long a
/// request may wait for room in it, and how long a body may take to arrive.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    pub budget: BodyBudget,
    pub budget_wait: Duration,
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn new(config: &WebhookConfig) -> Self {
        BodyLimits {
            budget: BodyBudget::new(config.body_budget_bytes()),
            budget_wait: limits::seconds(config.body_budget_wait_seconds),
            timeout: limits::seconds(config.body_timeout_seconds),
        }
    }
}

/// A body read into memory, with the budget bytes that cover it.
pub struct Body {
    bytes: Bytes,
    _reservation: Reservation,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    MutatePods,
    ValidateLearnerSpaces,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::MutatePods => "mutate-pods",
            Kind::ValidateLearnerSpaces => "validate-learnerspaces",
        }
    }
}

/// `POST /mutate/pods`, `POST /validate/learnerspaces`; anything else is 404/405.
pub fn routes(
    webhook: Arc<Webhook>,
    body_limits: BodyLimits,
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let handler = move |kind: Kind| {
        let webhook = webhook.clone();
        let metrics = metrics.clone();
        move |body: Result<Body, ReviewError>| answer(&webhook, &metrics, kind, body)
    };
    let mutate = warp::path!("mutate" / "pods")
        .and(warp::post())
        .and(limited_body(body_limits.clone()))
        .map(handler(Kind::MutatePods));
    let validate = warp::path!("validate" / "learnerspaces")
        .and(warp::post())
        .and(limited_body(body_limits))
        .map(handler(Kind::ValidateLearnerSpaces));
    mutate.or(validate).unify().recover(recover).unify()
}

fn answer(
    webhook: &Webhook,
    metrics: &Metrics,
    kind: Kind,
    body: Result<Body, ReviewError>,
) -> warp::reply::Response {
    let started = Instant::now();
    // The body (and its share of the budget) is held until the answer is
    // serialized.
    let decided = body.and_then(|body| match kind {
        Kind::MutatePods => webhook.mutate_pods(&body.bytes),
        Kind::ValidateLearnerSpaces => webhook.validate_learnerspaces(&body.bytes),
    });
    match decided {
        Ok(outcome) => {
            metrics.webhook.decided(
                kind.name(),
                outcome.allowed(),
                started.elapsed().as_secs_f64(),
            );
            log(kind, &outcome);
            json_reply(outcome.to_json())
        }
        Err(e) => {
            metrics.webhook.refused(kind.name(), e.category());
            tracing::info!(webhook = kind.name(), error = %e, "bad admission review");
            error_reply(&e)
        }
    }
}

fn log(kind: Kind, outcome: &Outcome) {
    tracing::debug!(
        webhook = kind.name(),
        uid = %outcome.response.uid,
        kind = %outcome.kind,
        namespace = %outcome.namespace,
        name = %outcome.name,
        allowed = outcome.allowed(),
        patched = outcome.response.patch.is_some(),
        reason = %outcome.response.result.message,
        "admission"
    );
}

fn json_reply(body: Vec<u8>) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A one-line plain-text reason: what the API server puts in its log.
fn error_reply(error: &ReviewError) -> warp::reply::Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = text_reply(status, &error.to_string());
    if matches!(error, ReviewError::Busy(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

fn text_reply(status: StatusCode, reason: &str) -> warp::reply::Response {
    let line = reason.replace(['\n', '\r'], " ");
    warp::reply::with_status(format!("{line}\n"), status).into_response()
}

/// Reads the body with its bytes reserved from the budget first, refusing
/// early on a declared length over [`MAX_REVIEW_BYTES`], and giving up on a
/// body that dribbles in.
fn limited_body(
    limits: BodyLimits,
) -> impl Filter<Extract = (Result<Body, ReviewError>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |length: Option<u64>, stream| {
            let limits = limits.clone();
            async move {
                let mut stream = Box::pin(stream);
                if length.is_some_and(|l| l > MAX_REVIEW_BYTES as u64) {
                    drain(&mut stream, length).await;
                    return Err(ReviewError::TooLarge);
                }
                let read = read_limited(&mut stream, length, &limits);
                match tokio::time::timeout(limits.timeout, read).await {
                    // Refused before the body was read whole: read the rest
                    // (into nothing), so the client sees the answer.
                    Ok(Err(e @ (ReviewError::TooLarge | ReviewError::Busy(_)))) => {
                        drain(&mut stream, length).await;
                        Err(e)
                    }
                    Ok(result) => result,
                    Err(_) => Err(ReviewError::BodyTimeout),
                }
            }
        })
}

async fn read_limited<S, B>(
    stream: &mut S,
    length: Option<u64>,
    limits: &BodyLimits,
) -> Result<Body, ReviewError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let budget = &limits.budget;
    let mut reservation = budget.empty();
    // A declared length is reserved whole, before anything is read.
    let first = length.map_or(RESERVE_STEP, |l| l as usize).max(1);
    let wait = if first > WAIT_AT_MOST_FOR {
        Duration::ZERO
    } else {
        limits.budget_wait
    };
    reservation
        .grow(budget, first, wait)
        .await
        .map_err(ReviewError::Busy)?;
    let mut body = BytesMut::with_capacity(first);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| ReviewError::Body(e.to_string()))?;
        let needed = body.len() + chunk.remaining();
        if needed > MAX_REVIEW_BYTES {
            return Err(ReviewError::TooLarge);
        }
        if needed > reservation.bytes() {
            let more = (needed - reservation.bytes()).max(RESERVE_STEP);
            let more = more.min(MAX_REVIEW_BYTES - reservation.bytes()).max(1);
            reservation
                .grow(budget, more, limits.budget_wait)
                .await
                .map_err(ReviewError::Busy)?;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Body {
        bytes: body.freeze(),
        _reservation: reservation,
    })
}

/// Reads and discards what is left of a refused body, up to
/// [`DRAIN_BYTES`] and [`DRAIN_TIME`]; a declared length past that is not
/// waited for.
async fn drain<S, B>(stream: &mut S, declared: Option<u64>)
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    if declared.is_some_and(|l| l > DRAIN_BYTES) {
        return;
    }
    let discard = async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.remaining() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, reason) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not found")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; use POST",
        )
    } else {
        (StatusCode::BAD_REQUEST, "bad request")
    };
    Ok(text_reply(status, reason))
}
