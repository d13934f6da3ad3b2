//! Signing in and out, sessions and CSRF. A session id is 256 random bits
//! in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS); the
//! database keeps a SHA-256 of it, with idle and absolute expiry on its
//! clock. Failed sign-ins count per source address with the SFTP server's
//! limits, and on PostgreSQL in the table the SFTP server and the API count
//! in, so one address's guesses are limited across all three.

use super::pages::{self, Chrome};
use super::{ConsoleState, PageError};
use crate::domain::user::Scopes;
use crate::domain::AccountId;
use crate::store::{AuditEntry, PrincipalKind};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

const SESSION_COOKIE: &str = "intake_session";
/// The token of the sign-in form (no session yet): a cookie and the same
/// value in the form.
const LOGIN_COOKIE: &str = "intake_login";

/// 256 random bits, hex.
pub(super) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub(super) fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares without stopping at the first difference.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn set_cookie(state: &ConsoleState, name: &str, value: &str, path: &str, max_age: Option<i64>) -> String {
    let secure = if state.inner.secure { "; Secure" } else { "" };
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{secure}{age}")
}

/// The value of a field of an urlencoded form.
pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A signed-in merchant: a user of one account.
#[derive(Debug, Clone)]
pub(super) struct Merchant {
    pub username: String,
    pub account: AccountId,
    pub scopes: Scopes,
    pub csrf: String,
}

impl Merchant {
    pub(super) fn chrome(&self) -> Chrome {
        Chrome::signed_in(format!("{} ({})", self.username, self.account), &self.csrf, false)
    }

    /// A form's CSRF token must be this session's.
    pub(super) fn check_csrf(&self, presented: Option<&str>) -> Result<(), PageError> {
        check_csrf(&self.csrf, presented)
    }
}

/// A signed-in operator.
#[derive(Debug, Clone)]
pub(super) struct Operator {
    pub name: String,
    pub csrf: String,
}

impl Operator {
    pub(super) fn chrome(&self) -> Chrome {
        Chrome::signed_in(format!("{} (operator)", self.name), &self.csrf, true)
    }

    pub(super) fn check_csrf(&self, presented: Option<&str>) -> Result<(), PageError> {
        check_csrf(&self.csrf, presented)
    }
}

fn check_csrf(expected: &str, presented: Option<&str>) -> Result<(), PageError> {
    match presented {
        Some(p) if same(expected, p) => Ok(()),
        _ => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this console. Go back, reload the page and try again.",
        )),
    }
}

/// Not signed in (or a session of the other kind): to the sign-in page.
pub(super) struct SignIn(&'static str);

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to(self.0).into_response()
    }
}

async fn session_of(parts: &Parts, state: &ConsoleState) -> Option<crate::store::ConsoleSession> {
    let id = cookie(&parts.headers, SESSION_COOKIE)?;
    match state.store().session(&hash(&id), state.inner.life).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a console session");
            None
        }
    }
}

impl FromRequestParts<ConsoleState> for Merchant {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Merchant, SignIn> {
        let session = session_of(parts, state).await.ok_or(SignIn("/login"))?;
        if session.kind != PrincipalKind::User {
            return Err(SignIn("/admin"));
        }
        // The user as they are now: removed, they are signed out.
        let user = state.store().find_user(&session.principal).await.ok().flatten().ok_or(SignIn("/login"))?;
        Ok(Merchant { username: user.username, account: user.account, scopes: user.scopes, csrf: session.csrf })
    }
}

/// An operator route reached by anyone else: as if it did not exist (a
/// merchant learns nothing), or the operators' sign-in without a session.
pub(super) enum NotOperator {
    SignIn,
    Hidden,
    /// Operators must use two-factor sign-in: first its enrolment.
    Enrol,
}

impl IntoResponse for NotOperator {
    fn into_response(self) -> Response {
        match self {
            NotOperator::SignIn => Redirect::to("/admin/login").into_response(),
            NotOperator::Hidden => PageError::not_found().into_response(),
            NotOperator::Enrol => Redirect::to("/account/totp").into_response(),
        }
    }
}

impl FromRequestParts<ConsoleState> for Operator {
    type Rejection = NotOperator;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Operator, NotOperator> {
        let session = session_of(parts, state).await.ok_or(NotOperator::SignIn)?;
        if session.kind != PrincipalKind::Operator {
            return Err(NotOperator::Hidden);
        }
        match state.store().operator_password(&session.principal).await {
            Ok(Some(_)) => {}
            _ => return Err(NotOperator::SignIn),
        }
        match state.store().totp(PrincipalKind::Operator, &session.principal).await {
            Ok(Some(totp)) if totp.enabled => Ok(Operator { name: session.principal, csrf: session.csrf }),
            _ => Err(NotOperator::Enrol),
        }
    }
}

impl ConsoleState {
    /// Refused by the count every way in shares (SFTP, tokens, sign-ins).
    async fn refused(&self, ip: IpAddr) -> bool {
        self.inner.penalties.refuses(self.store(), ip).await
    }

    async fn record_failure(&self, ip: IpAddr) {
        if self.inner.penalties.count_failure(self.store(), ip, "console sign-in").await {
            tracing::info!(source = %ip, "console sign-in refused: too many failed attempts from this address");
        }
    }

    /// Whether `password` matches `stored`, off the async runtime, a few at
    /// a time; no stored hash costs as much as a wrong password.
    async fn verify(&self, password: &str, stored: Option<String>) -> bool {
        let Ok(_permit) = self.inner.passwords.acquire().await else { return false };
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let real = stored.is_some();
            let hash = stored.unwrap_or_else(|| decoy_hash().to_owned());
            let ok = PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false);
            ok && real
        })
        .await
        .unwrap_or(false)
    }
}

fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| crate::sftp::hash_password(&random_token()).unwrap_or_default())
}

/// The client's address (the connection's peer), when the listener gives it.
pub(super) struct Source(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Source, Self::Rejection> {
        Ok(Source(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// The sign-in page, with a fresh form token in a cookie and in the form.
fn login_page(state: &ConsoleState, operator: bool, status: StatusCode, error: Option<&str>) -> Response {
    login_page_with(state, operator, status, error, "", false)
}

fn login_page_with(
    state: &ConsoleState,
    operator: bool,
    status: StatusCode,
    error: Option<&str>,
    username: &str,
    ask_totp: bool,
) -> Response {
    let token = random_token();
    let page = pages::Login {
        chrome: Chrome::signed_out(),
        action: if operator { "/admin/login" } else { "/login" },
        title: if operator { "Operator sign-in" } else { "Sign in" },
        csrf: &token,
        error,
        username,
        ask_totp,
    };
    let path = if operator { "/admin/login" } else { "/login" };
    let cookie = set_cookie(state, LOGIN_COOKIE, &token, path, Some(3600));
    (status, [(header::SET_COOKIE, cookie)], pages::html(&page)).into_response()
}

pub(super) async fn login_form(State(state): State<ConsoleState>) -> Response {
    login_page(&state, false, StatusCode::OK, None)
}

pub(super) async fn admin_login_form(State(state): State<ConsoleState>) -> Response {
    login_page(&state, true, StatusCode::OK, None)
}

pub(super) async fn login(
    State(state): State<ConsoleState>,
    Source(ip): Source,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    sign_in(&state, PrincipalKind::User, ip, &headers, &form).await
}

pub(super) async fn admin_login(
    State(state): State<ConsoleState>,
    Source(ip): Source,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    sign_in(&state, PrincipalKind::Operator, ip, &headers, &form).await
}

async fn sign_in(
    state: &ConsoleState,
    kind: PrincipalKind,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Response {
    let operator = kind == PrincipalKind::Operator;
    let expected = cookie(headers, LOGIN_COOKIE);
    if !matches!((expected.as_deref(), field(form, "csrf")), (Some(e), Some(p)) if same(e, p)) {
        return login_page(state, operator, StatusCode::FORBIDDEN, Some("The form expired; sign in again."));
    }
    if let Some(ip) = ip {
        if state.refused(ip).await {
            let message = "Too many failed sign-ins from this address; try again later.";
            return login_page(state, operator, StatusCode::TOO_MANY_REQUESTS, Some(message));
        }
    }
    let username = field(form, "username").unwrap_or_default().trim();
    let password = field(form, "password").unwrap_or_default();
    let stored = if username.is_empty() || username.len() > 256 {
        None
    } else if operator {
        state.store().operator_password(username).await.ok().flatten()
    } else {
        state.store().find_user(username).await.ok().flatten().and_then(|u| u.password_hash)
    };
    if !state.verify(password, stored).await {
        if let Some(ip) = ip {
            state.record_failure(ip).await;
        }
        return login_page(state, operator, StatusCode::UNAUTHORIZED, Some("Wrong username or password."));
    }
    // With two-factor sign-in on, the code too (asked for when missing).
    match state.store().totp(kind, username).await {
        Ok(Some(totp)) if totp.enabled => {
            let presented = field(form, "totp").map(str::trim).unwrap_or_default();
            if presented.is_empty() {
                let ask = "Enter the code from your authenticator app, or a recovery code.";
                return login_page_with(state, operator, StatusCode::UNAUTHORIZED, Some(ask), username, true);
            }
            // A code is taken once (its time step is remembered): a
            // replayed one is wrong.
            let ok = match super::totp::verify(&totp.secret, presented, super::totp::now()) {
                Some(step) => state.store().use_totp_step(kind, username, step).await.unwrap_or(false),
                None => {
                    presented.len() == 9
                        && state
                            .store()
                            .use_recovery_code(kind, username, &hash(&presented.to_ascii_lowercase()))
                            .await
                            .unwrap_or(false)
                }
            };
            if !ok {
                if let Some(ip) = ip {
                    state.record_failure(ip).await;
                }
                let wrong = "Wrong code (a code signs in once: a used one waits for the next).";
                return login_page_with(state, operator, StatusCode::UNAUTHORIZED, Some(wrong), username, true);
            }
        }
        Ok(_) => {}
        Err(e) => return PageError::internal(e).into_response(),
    }
    let (id, csrf) = (random_token(), random_token());
    let from = ip.map(|ip| ip.to_string());
    if let Err(e) = state.store().create_session(&hash(&id), kind, username, &csrf, from.as_deref()).await {
        return PageError::internal(e).into_response();
    }
    // Now and then, sessions past their expiry are forgotten.
    if rand::random::<u8>() < 8 {
        if let Err(e) = state.store().prune_sessions(state.inner.life).await {
            tracing::warn!(error = %e, "cannot prune expired console sessions");
        }
    }
    if operator {
        let entry = AuditEntry {
            at: 0,
            operator: username.to_owned(),
            action: "sign-in".into(),
            target: "-".into(),
            source: from.clone(),
        };
        if let Err(e) = state.store().audit(&entry).await {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
    tracing::info!(kind = kind.as_str(), principal = %username, source = ?from, "console sign-in");
    let session = set_cookie(state, SESSION_COOKIE, &id, "/", None);
    let clear = set_cookie(state, LOGIN_COOKIE, "", if operator { "/admin/login" } else { "/login" }, Some(0));
    let to = if operator { "/admin" } else { "/jobs" };
    // Appended: two `Set-Cookie` fields (an array of pairs would keep the last).
    let headers =
        AppendHeaders([(header::LOCATION, to.to_owned()), (header::SET_COOKIE, session), (header::SET_COOKIE, clear)]);
    (StatusCode::SEE_OTHER, headers).into_response()
}

/// The session of a sign-out form, if its CSRF token is the session's.
async fn checked_session(
    state: &ConsoleState,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(String, crate::store::ConsoleSession), PageError> {
    let id = cookie(headers, SESSION_COOKIE).ok_or_else(PageError::not_found)?;
    let session = state.store().session(&hash(&id), state.inner.life).await?.ok_or_else(PageError::not_found)?;
    check_csrf(&session.csrf, field(form, "csrf"))?;
    Ok((hash(&id), session))
}

fn signed_out(state: &ConsoleState) -> Response {
    let clear = set_cookie(state, SESSION_COOKIE, "", "/", Some(0));
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/login".to_owned()), (header::SET_COOKIE, clear)]).into_response()
}

pub(super) async fn logout(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (session_hash, _) = checked_session(&state, &headers, &form).await?;
    state.store().delete_session(&session_hash).await?;
    Ok(signed_out(&state))
}

pub(super) async fn logout_everywhere(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let (_, session) = checked_session(&state, &headers, &form).await?;
    state.store().delete_sessions_of(session.kind, &session.principal).await?;
    Ok(signed_out(&state))
}

/// Anyone signed in: a merchant or an operator (their own settings).
pub(super) struct Anyone {
    kind: PrincipalKind,
    principal: String,
    csrf: String,
}

impl FromRequestParts<ConsoleState> for Anyone {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Anyone, SignIn> {
        let session = session_of(parts, state).await.ok_or(SignIn("/login"))?;
        // A user as they are now: removed or disabled, they are signed out
        // (a sign-in that raced the disabling left its session behind).
        if session.kind == PrincipalKind::User
            && state.store().find_user(&session.principal).await.ok().flatten().is_none()
        {
            return Err(SignIn("/login"));
        }
        Ok(Anyone { kind: session.kind, principal: session.principal, csrf: session.csrf })
    }
}

impl Anyone {
    fn chrome(&self) -> Chrome {
        let operator = self.kind == PrincipalKind::Operator;
        let who = if operator { format!("{} (operator)", self.principal) } else { self.principal.clone() };
        Chrome::signed_in(who, &self.csrf, operator)
    }
}

async fn totp_view(
    state: &ConsoleState,
    who: &Anyone,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, PageError> {
    totp_view_with(state, who, status, error, None).await
}

async fn totp_view_with(
    state: &ConsoleState,
    who: &Anyone,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let current = state.store().totp(who.kind, &who.principal).await?;
    let enabled = current.as_ref().is_some_and(|t| t.enabled);
    let secret = match current {
        Some(t) => t.secret,
        None => {
            let secret = super::totp::new_secret();
            state.store().start_totp(who.kind, &who.principal, &secret).await?;
            secret
        }
    };
    let url = super::totp::otpauth_url(&who.principal, &secret);
    let (qr_size, qr_path) = super::totp::qr_svg_path(&url).ok_or_else(|| PageError::internal("no QR code"))?;
    let page = pages::Totp {
        chrome: who.chrome(),
        enabled,
        secret: if enabled { String::new() } else { secret },
        url,
        qr_size,
        qr_path,
        recovery: Vec::new(),
        error,
        notice,
    };
    Ok((status, pages::html(&page)).into_response())
}

/// `GET /account/totp`: the enrolment (a QR code and the secret), or that it is on.
pub(super) async fn totp_page(State(state): State<ConsoleState>, who: Anyone) -> Result<Response, PageError> {
    totp_view(&state, &who, StatusCode::OK, None).await
}

/// `POST /account/totp` (`code`): confirms the enrolment; shows the
/// recovery codes once.
pub(super) async fn totp_confirm(
    State(state): State<ConsoleState>,
    who: Anyone,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    check_csrf(&who.csrf, field(&form, "csrf"))?;
    let current = state.store().totp(who.kind, &who.principal).await?.ok_or_else(PageError::not_found)?;
    if current.enabled {
        return totp_view(&state, &who, StatusCode::CONFLICT, Some("Two-factor sign-in is on already.".into())).await;
    }
    let Some(step) = super::totp::verify(&current.secret, field(&form, "code").unwrap_or_default(), super::totp::now())
    else {
        let error = Some("That code is not the current one; try the next.".to_owned());
        return totp_view(&state, &who, StatusCode::UNPROCESSABLE_ENTITY, error).await;
    };
    let codes = super::totp::recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| hash(c)).collect();
    state.store().enable_totp(who.kind, &who.principal, &hashes).await?;
    // The code that turned it on does not sign in too.
    state.store().use_totp_step(who.kind, &who.principal, step).await?;
    tracing::info!(kind = who.kind.as_str(), principal = %who.principal, "two-factor sign-in turned on");
    Ok(recovery_codes_page(&who, codes, None))
}

/// Two-factor sign-in on, with its recovery codes shown this once.
fn recovery_codes_page(who: &Anyone, codes: Vec<String>, notice: Option<&str>) -> Response {
    let page = pages::Totp {
        chrome: who.chrome(),
        enabled: true,
        secret: String::new(),
        url: String::new(),
        qr_size: 0,
        qr_path: String::new(),
        recovery: codes,
        error: None,
        notice: notice.map(str::to_owned),
    };
    pages::html(&page).into_response()
}

/// Whether a form proves the signed-in principal is at the keyboard: its
/// current password (`password`) or a TOTP code not used before (`code`).
/// A wrong one counts against the address as a failed sign-in does; an
/// address refused for too many is refused here too.
async fn reauthenticated(
    state: &ConsoleState,
    who: &Anyone,
    ip: Option<IpAddr>,
    form: &[(String, String)],
    secret: &str,
) -> bool {
    if let Some(ip) = ip {
        if state.refused(ip).await {
            return false;
        }
    }
    let ok = proves(state, who, form, secret).await;
    if let (false, Some(ip)) = (ok, ip) {
        state.record_failure(ip).await;
    }
    ok
}

async fn proves(state: &ConsoleState, who: &Anyone, form: &[(String, String)], secret: &str) -> bool {
    let code = field(form, "code").map(str::trim).unwrap_or_default();
    if !code.is_empty() {
        return match super::totp::verify(secret, code, super::totp::now()) {
            Some(step) => state.store().use_totp_step(who.kind, &who.principal, step).await.unwrap_or(false),
            None => false,
        };
    }
    let password = field(form, "password").unwrap_or_default();
    if password.is_empty() {
        return false;
    }
    let stored = match who.kind {
        PrincipalKind::Operator => state.store().operator_password(&who.principal).await.ok().flatten(),
        PrincipalKind::User => {
            state.store().find_user(&who.principal).await.ok().flatten().and_then(|u| u.password_hash)
        }
    };
    state.verify(password, stored).await
}

/// `POST /account/totp/disable` (`password` or `code`): turns two-factor
/// sign-in off. Operators may not: it is required of them.
pub(super) async fn totp_disable(
    State(state): State<ConsoleState>,
    who: Anyone,
    Source(ip): Source,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    check_csrf(&who.csrf, field(&form, "csrf"))?;
    if who.kind == PrincipalKind::Operator {
        let error = "Operators sign in with a second factor: it cannot be turned off.".to_owned();
        return totp_view(&state, &who, StatusCode::FORBIDDEN, Some(error)).await;
    }
    let Some(current) = state.store().totp(who.kind, &who.principal).await?.filter(|t| t.enabled) else {
        return totp_view(&state, &who, StatusCode::CONFLICT, Some("Two-factor sign-in is off already.".into())).await;
    };
    if !reauthenticated(&state, &who, ip, &form, &current.secret).await {
        let error = "Wrong password or code: two-factor sign-in is still on.".to_owned();
        return totp_view(&state, &who, StatusCode::UNPROCESSABLE_ENTITY, Some(error)).await;
    }
    state.store().disable_totp(who.kind, &who.principal).await?;
    tracing::info!(kind = who.kind.as_str(), principal = %who.principal, "two-factor sign-in turned off");
    let notice = "Two-factor sign-in is off; its recovery codes no longer work.".to_owned();
    totp_view_with(&state, &who, StatusCode::OK, None, Some(notice)).await
}

/// `POST /account/totp/recovery` (`password` or `code`): ten new recovery
/// codes, shown once; the old ones stop working.
pub(super) async fn totp_recovery(
    State(state): State<ConsoleState>,
    who: Anyone,
    Source(ip): Source,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    check_csrf(&who.csrf, field(&form, "csrf"))?;
    let Some(current) = state.store().totp(who.kind, &who.principal).await?.filter(|t| t.enabled) else {
        return totp_view(&state, &who, StatusCode::CONFLICT, Some("Two-factor sign-in is off.".into())).await;
    };
    if !reauthenticated(&state, &who, ip, &form, &current.secret).await {
        let error = "Wrong password or code: the recovery codes are unchanged.".to_owned();
        return totp_view(&state, &who, StatusCode::UNPROCESSABLE_ENTITY, Some(error)).await;
    }
    let codes = super::totp::recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| hash(c)).collect();
    if !state.store().replace_recovery_codes(who.kind, &who.principal, &hashes).await? {
        return totp_view(&state, &who, StatusCode::CONFLICT, Some("Two-factor sign-in is off.".into())).await;
    }
    if who.kind == PrincipalKind::Operator {
        let entry = AuditEntry {
            at: 0,
            operator: who.principal.clone(),
            action: "new recovery codes".into(),
            target: "-".into(),
            source: ip.map(|ip| ip.to_string()),
        };
        // The new codes are stored: they are shown whatever the audit log says.
        if let Err(e) = state.store().audit(&entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
    tracing::info!(kind = who.kind.as_str(), principal = %who.principal, "new recovery codes made");
    Ok(recovery_codes_page(&who, codes, Some("New recovery codes: the old ones no longer work.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_is_read_only_when_it_has_the_shape_of_one() {
        let mut headers = HeaderMap::new();
        let id = random_token();
        headers.insert(header::COOKIE, format!("a=b; {SESSION_COOKIE}={id}").parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some(id));
        headers.insert(header::COOKIE, format!("{SESSION_COOKIE}=<script>").parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        let t = random_token();
        assert!(same(&t, &t.clone()));
        assert!(!same(&t, &random_token()));
        assert!(!same(&t, ""));
        assert_ne!(hash(&t), t);
    }
}
