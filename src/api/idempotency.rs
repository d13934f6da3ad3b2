//! `Idempotency-Key`: the first answer to a key is remembered for 24 hours
//! (in the database, so every node replays it); the same key with the same
//! request replays it, with another request it is refused (422).

use super::problem::Problem;
use super::ApiState;
use crate::store::StoredAnswer;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The longest key accepted.
pub(super) const MAX_KEY_CHARS: usize = 255;

/// The request's key, if it sent one: 1–255 visible ASCII characters.
pub(super) fn key_of(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key =
        value.to_str().ok().map(str::trim).filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_CHARS && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        )),
    }
}

/// What identifies a request for its key: the route and the body.
pub(super) fn request_hash(route: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// The remembered answer for this key, replayed, or a refusal when the key
/// was used for another request; `None` when the key is new.
pub(super) async fn replay(
    state: &ApiState,
    account: &str,
    key: &str,
    hash: &str,
) -> Result<Option<Response>, Problem> {
    let Some(answer) = state.store.remembered_answer(account, key).await.map_err(Problem::internal)? else {
        return Ok(None);
    };
    if answer.request_hash != hash {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request in the last 24 hours",
        ));
    }
    Ok(Some(response_of(&answer)))
}

/// Remembers a final answer (a success, a conflict, an invalid body) and
/// returns what to send: the answer remembered first, if another request
/// with the key got there meanwhile.
pub(super) async fn remember(
    state: &ApiState,
    account: &str,
    key: &str,
    hash: &str,
    status: StatusCode,
    location: Option<String>,
    body: String,
) -> Result<Response, Problem> {
    let answer = StoredAnswer { request_hash: hash.to_owned(), status: status.as_u16(), location, body };
    let lasting = matches!(status.as_u16(), 200..=299 | 409 | 422);
    if lasting && !state.store.remember_answer(account, key, &answer).await.map_err(Problem::internal)? {
        if let Some(first) = replay(state, account, key, hash).await? {
            return Ok(first);
        }
    }
    Ok(response_of(&answer))
}

fn response_of(answer: &StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() { "application/json" } else { "application/problem+json" };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], answer.body.clone()).into_response();
    if let Some(location) = answer.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
