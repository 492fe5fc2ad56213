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
use crate::metrics::Metrics;

/// A slow client may take this long to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

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
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let handler = move |kind: Kind| {
        let webhook = webhook.clone();
        let metrics = metrics.clone();
        move |body: Result<Bytes, ReviewError>| answer(&webhook, &metrics, kind, body)
    };
    let mutate = warp::path!("mutate" / "pods")
        .and(warp::post())
        .and(limited_body())
        .map(handler(Kind::MutatePods));
    let validate = warp::path!("validate" / "learnerspaces")
        .and(warp::post())
        .and(limited_body())
        .map(handler(Kind::ValidateLearnerSpaces));
    mutate.or(validate).unify().recover(recover).unify()
}

fn answer(
    webhook: &Webhook,
    metrics: &Metrics,
    kind: Kind,
    body: Result<Bytes, ReviewError>,
) -> warp::reply::Response {
    let started = Instant::now();
    let decided = body.and_then(|body| match kind {
        Kind::MutatePods => webhook.mutate_pods(&body),
        Kind::ValidateLearnerSpaces => webhook.validate_learnerspaces(&body),
    });
    match decided {
        Ok(outcome) => {
            metrics.record_admission(
                kind.name(),
                outcome.allowed(),
                started.elapsed().as_secs_f64(),
            );
            log(kind, &outcome);
            json_reply(outcome.to_json())
        }
        Err(e) => {
            tracing::info!(webhook = kind.name(), error = %e, "bad admission review");
            error_reply(StatusCode::BAD_REQUEST, &e.to_string())
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
fn error_reply(status: StatusCode, reason: &str) -> warp::reply::Response {
    let line = reason.replace(['\n', '\r'], " ");
    warp::reply::with_status(format!("{line}\n"), status).into_response()
}

/// Reads the body up to [`MAX_REVIEW_BYTES`], refusing early on a declared
/// length over the limit, and giving up on a body that dribbles in.
fn limited_body() -> impl Filter<Extract = (Result<Bytes, ReviewError>,), Error = Rejection> + Clone
{
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(|length: Option<u64>, stream| async move {
            if length.is_some_and(|l| l > MAX_REVIEW_BYTES as u64) {
                return Err(ReviewError::TooLarge);
            }
            match tokio::time::timeout(BODY_TIMEOUT, read_limited(stream, length)).await {
                Ok(result) => result,
                Err(_) => Err(ReviewError::BodyTimeout),
            }
        })
}

async fn read_limited<S, B>(mut stream: S, length: Option<u64>) -> Result<Bytes, ReviewError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut body =
        BytesMut::with_capacity(length.unwrap_or(8 * 1024).min(MAX_REVIEW_BYTES as u64) as usize);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| ReviewError::Body(e.to_string()))?;
        if body.len() + chunk.remaining() > MAX_REVIEW_BYTES {
            return Err(ReviewError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
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
    Ok(error_reply(status, reason))
}
