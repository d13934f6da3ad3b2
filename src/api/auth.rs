//! Bearer tokens: how a request becomes its caller (a user of one account,
//! with the scopes both the token and the user have). Failed attempts count
//! per source address in the same count as failed SFTP logins (the same
//! limits, one counter: failures on either side refuse the source on
//! both), and on PostgreSQL in the same table every node reads. Each valid
//! token has a request rate (see `rate`).

use super::problem::Problem;
use super::ApiState;
use crate::domain::user::Scopes;
use crate::domain::AccountId;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;

/// The prefix of every token (lets secret scanners recognise a leaked one).
pub const TOKEN_PREFIX: &str = "intake_";

/// A new random token and its stored hash.
///
/// The token carries 256 random bits, so a fast hash is enough: a slow one
/// (Argon2id, as for passwords) protects guessable secrets against offline
/// guessing, and nobody can enumerate 2^256 candidates whatever the hash
/// costs. A fast hash also lets the lookup be an index search per request.
pub fn generate() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// The stored form of a token: hex SHA-256.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The caller of a request, from its valid token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub account: AccountId,
    pub scopes: Scopes,
}

impl Caller {
    /// The account named in a path must be the caller's; another account's
    /// is answered as if it did not exist (nothing is learnt about it).
    pub fn check_account(&self, avid: &str) -> Result<(), Problem> {
        if avid == self.account.as_str() {
            Ok(())
        } else {
            Err(Problem::not_found("account"))
        }
    }

    pub fn require_create(&self) -> Result<(), Problem> {
        if self.scopes.create {
            Ok(())
        } else {
            Err(Problem::forbidden("this token lacks the customers:create scope"))
        }
    }

    pub fn require_update(&self) -> Result<(), Problem> {
        if self.scopes.update {
            Ok(())
        } else {
            Err(Problem::forbidden("this token lacks the customers:update scope"))
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Caller, Problem> {
        let source = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let Some(presented) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthorized());
        };
        if let Some(ip) = source {
            if state.refused(ip).await {
                return Err(too_many_failures(state));
            }
        }
        let token = presented
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() <= 128);
        let hashed = token.map(hash);
        // A token known to be over its rate is answered without a lookup.
        if let Some(wait) = hashed.as_deref().and_then(|h| state.rates.exhausted(h)) {
            return Err(too_many_requests(wait));
        }
        let found = match &hashed {
            Some(hashed) => state.store.token_user(hashed).await.map_err(Problem::internal)?,
            None => None,
        };
        match found {
            Some(user) => {
                let hashed = hashed.as_deref().unwrap_or_default();
                state.rates.take(hashed).map_err(too_many_requests)?;
                Ok(Caller { username: user.username, account: user.account, scopes: user.scopes })
            }
            None => {
                if let Some(ip) = source {
                    if state.record_failure(ip).await {
                        tracing::info!(source = %ip, "API refused: too many failed token attempts from this address");
                    }
                }
                Err(Problem::unauthorized())
            }
        }
    }
}

/// Over the token's request rate (`[api] rate_per_token`, `burst_per_token`).
fn too_many_requests(wait: Duration) -> Problem {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("this token is over its request rate; try again in {secs} s"),
    )
    .with_retry_after(secs)
}

fn too_many_failures(state: &ApiState) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        format!("too many failed attempts from this address; try again in {} s", state.penalties.window().as_secs()),
    )
    .with_retry_after(state.penalties.window().as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_prefixed_random_and_only_its_hash_is_kept() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(hash_a, hash(&a));
        assert!(!hash_a.contains(&a[TOKEN_PREFIX.len()..]));
    }
}
