//! Bearer tokens: how a request becomes its caller (a user of one account,
//! with the scopes both the token and the user have). Failed attempts count
//! per source address, as failed SFTP logins do: with the same limits, and
//! on PostgreSQL in the same table every node (and the SFTP server) reads.

use super::problem::Problem;
use super::ApiState;
use crate::domain::user::Scopes;
use crate::domain::AccountId;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        let found = match token {
            Some(token) => state.store.token_user(&hash(token)).await.map_err(Problem::internal)?,
            None => None,
        };
        match found {
            Some(user) => Ok(Caller { username: user.username, account: user.account, scopes: user.scopes }),
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

fn too_many_failures(state: &ApiState) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        format!("too many failed attempts from this address; try again in {} s", state.failures.window.as_secs()),
    )
}

/// Failed token attempts per source address, in this process.
pub(super) struct Failures {
    pub(super) max: u32,
    pub(super) window: Duration,
    sources: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Failures {
    pub(super) fn new(max: u32, window: Duration) -> Failures {
        Failures { max, window, sources: Mutex::new(HashMap::new()) }
    }

    pub(super) fn is_refused(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return false;
        }
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        match sources.get(&ip) {
            Some((_, since)) if since.elapsed() >= self.window => {
                sources.remove(&ip);
                false
            }
            Some((count, _)) => *count >= self.max,
            None => false,
        }
    }

    /// Counts one failure; whether the source is refused now.
    pub(super) fn record(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return false;
        }
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if sources.len() > 100_000 {
            let window = self.window;
            sources.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = sources.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 == self.max {
            // The penalty runs a whole window from the failure that set it.
            entry.1 = Instant::now();
        }
        entry.0 >= self.max
    }
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

    #[test]
    fn a_source_is_refused_after_its_failures_and_others_are_not() {
        let failures = Failures::new(3, Duration::from_secs(60));
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!failures.record(bad));
        assert!(!failures.record(bad));
        assert!(failures.record(bad));
        assert!(failures.is_refused(bad));
        assert!(!failures.is_refused("10.0.0.2".parse().unwrap()));
    }
}
