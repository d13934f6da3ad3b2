//! The operators' screens for accounts, users and tokens (`/admin/accounts`),
//! nodes and webhooks. Every change is a plain form, CSRF-checked, made by
//! the same functions as the CLI's (`crate::manage`) and written to the
//! audit log (who, what, when, from where).

use super::auth::{field, Operator, Source};
use super::pages::{self, AccountRow, DeliveryRow, NodeRow, TokenRow, UserRow};
use super::{ConsoleState, PageError};
use crate::domain::AccountSettings;
use crate::manage::{self, ManageError};
use crate::store::AuditEntry;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use std::net::IpAddr;

type FormData = Form<Vec<(String, String)>>;

impl From<ManageError> for PageError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid(message) => PageError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            ManageError::AlreadyExists(what) => PageError::new(StatusCode::CONFLICT, format!("{what} already exists.")),
            ManageError::NotFound(_) => PageError::not_found(),
            other => PageError::internal(other),
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct NoticeQuery {
    notice: Option<String>,
}

/// The fixed text of a notice code (a URL never carries text shown as is).
fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "account-created" => "Account created.",
        "account-disabled" => "Account disabled: its users cannot sign in and their tokens are refused.",
        "account-enabled" => "Account enabled.",
        "user-created" => "User created.",
        "user-disabled" => "User disabled: no sign-in, tokens refused, console sessions ended.",
        "user-enabled" => "User enabled.",
        "password" => "Password set; the user's console sessions ended.",
        "revoked" => "Token revoked.",
        _ => return None,
    })
}

async fn record(state: &ConsoleState, operator: &Operator, ip: Option<IpAddr>, action: &str, target: String) {
    let entry = AuditEntry {
        at: 0,
        operator: operator.name.clone(),
        action: action.into(),
        target,
        source: ip.map(|ip| ip.to_string()),
    };
    if let Err(e) = state.store().audit(&entry).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
    tracing::info!(operator = %operator.name, action, "operator action in the web console");
}

/// `GET /admin/accounts`.
pub(super) async fn accounts(
    State(state): State<ConsoleState>,
    operator: Operator,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let rows = state
        .store()
        .account_overview()
        .await?
        .into_iter()
        .map(|a| AccountRow { avid: a.avid, users: a.users, jobs: a.jobs, disabled: a.disabled })
        .collect();
    let page = pages::AdminAccounts { chrome: operator.chrome(), rows, notice: notice(query.notice.as_deref()) };
    Ok(pages::html(&page).into_response())
}

/// `POST /admin/accounts` (`avid`): what `intake account add AVID` does.
pub(super) async fn create_account(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Form(form): FormData,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    let avid = manage::parse_avid(field(&form, "avid").unwrap_or_default().trim())?;
    manage::create_account(state.store(), &state.inner.data_dir, &AccountSettings::new(avid.clone())).await?;
    record(&state, &operator, ip, "account-create", format!("account {avid}")).await;
    Ok(Redirect::to(&format!("/admin/accounts/{avid}?notice=account-created")).into_response())
}

async fn account_disabled(
    state: ConsoleState,
    operator: Operator,
    ip: Option<IpAddr>,
    avid: String,
    form: Vec<(String, String)>,
    disabled: bool,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    manage::set_account_disabled(state.store(), &avid, disabled).await?;
    let action = if disabled { "account-disable" } else { "account-enable" };
    record(&state, &operator, ip, action, format!("account {avid}")).await;
    let code = if disabled { "account-disabled" } else { "account-enabled" };
    Ok(Redirect::to(&format!("/admin/accounts/{avid}?notice={code}")).into_response())
}

/// `POST /admin/accounts/{avid}/disable`.
pub(super) async fn disable_account(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    account_disabled(state, operator, ip, avid, form, true).await
}

/// `POST /admin/accounts/{avid}/enable`.
pub(super) async fn enable_account(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    account_disabled(state, operator, ip, avid, form, false).await
}

async fn account_view(
    state: &ConsoleState,
    operator: &Operator,
    avid: &str,
    notice_code: Option<&str>,
    generated: Option<(String, String)>,
) -> Result<Response, PageError> {
    let (disabled, users) = state.store().account_users(avid).await?.ok_or_else(PageError::not_found)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let when = |at: i64| {
        time::OffsetDateTime::from_unix_timestamp(at)
            .map(crate::clock::format_rfc3339)
            .unwrap_or_else(|_| at.to_string())
    };
    let tokens = state
        .store()
        .list_tokens(Some(avid))
        .await?
        .into_iter()
        .map(|t| TokenRow {
            state: if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            },
            id: t.token_id,
            username: t.username,
            name: t.name.unwrap_or_default(),
            scopes: t.scopes.join(" "),
            created: when(t.created_at),
            expires: t.expires_at.map(when).unwrap_or_else(|| "never".into()),
        })
        .collect();
    let page = pages::AdminAccount {
        chrome: operator.chrome(),
        avid: avid.to_owned(),
        disabled,
        users: users
            .into_iter()
            .map(|u| UserRow {
                has_password: u.user.password_hash.is_some(),
                keys: u.user.public_keys.len(),
                scopes: u.user.scopes.names().join(" "),
                username: u.user.username,
                disabled: u.disabled,
            })
            .collect(),
        tokens,
        notice: notice(notice_code),
        generated,
    };
    Ok(pages::html(&page).into_response())
}

/// `GET /admin/accounts/{avid}`: its users and tokens.
pub(super) async fn account(
    State(state): State<ConsoleState>,
    operator: Operator,
    Path(avid): Path<String>,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    account_view(&state, &operator, &avid, query.notice.as_deref(), None).await
}

/// A user of this account (another account's is as if it did not exist).
async fn user_of(state: &ConsoleState, avid: &str, username: &str) -> Result<(), PageError> {
    let (_, users) = state.store().account_users(avid).await?.ok_or_else(PageError::not_found)?;
    if users.iter().any(|u| u.user.username == username) {
        Ok(())
    } else {
        Err(PageError::not_found())
    }
}

/// `POST /admin/accounts/{avid}/users` (`username`, `password`): what
/// `intake user add USERNAME --account AVID --password-stdin` does.
pub(super) async fn create_user(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    state.store().account_users(&avid).await?.ok_or_else(PageError::not_found)?;
    let username = field(&form, "username").unwrap_or_default().trim();
    let password = field(&form, "password").unwrap_or_default();
    if password.is_empty() {
        return Err(PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "Give the new user a password."));
    }
    let new =
        manage::NewUser { username, account: &avid, public_keys: Vec::new(), password: Some(password), scopes: None };
    manage::create_user(state.store(), new).await?;
    record(&state, &operator, ip, "user-create", format!("user {username} ({avid})")).await;
    Ok(Redirect::to(&format!("/admin/accounts/{avid}?notice=user-created")).into_response())
}

async fn user_disabled(
    state: ConsoleState,
    operator: Operator,
    ip: Option<IpAddr>,
    avid: String,
    form: Vec<(String, String)>,
    disabled: bool,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    let username = field(&form, "username").unwrap_or_default();
    user_of(&state, &avid, username).await?;
    manage::set_user_disabled(state.store(), username, disabled).await?;
    let action = if disabled { "user-disable" } else { "user-enable" };
    record(&state, &operator, ip, action, format!("user {username} ({avid})")).await;
    let code = if disabled { "user-disabled" } else { "user-enabled" };
    Ok(Redirect::to(&format!("/admin/accounts/{avid}?notice={code}")).into_response())
}

/// `POST /admin/accounts/{avid}/users/disable` (`username`).
pub(super) async fn disable_user(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    user_disabled(state, operator, ip, avid, form, true).await
}

/// `POST /admin/accounts/{avid}/users/enable` (`username`).
pub(super) async fn enable_user(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    user_disabled(state, operator, ip, avid, form, false).await
}

/// `POST /admin/accounts/{avid}/users/password` (`username`, `password`):
/// what `intake user passwd` does; an empty password is generated and
/// shown once on the page this answers with (never in a URL or the log).
pub(super) async fn reset_password(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    let username = field(&form, "username").unwrap_or_default();
    user_of(&state, &avid, username).await?;
    let typed = field(&form, "password").unwrap_or_default();
    let password = if typed.is_empty() { manage::generate_password() } else { typed.to_owned() };
    manage::set_password(state.store(), username, &password).await?;
    let how = if typed.is_empty() { "generated" } else { "typed" };
    record(&state, &operator, ip, "user-password", format!("user {username} ({avid}), {how}")).await;
    if typed.is_empty() {
        account_view(&state, &operator, &avid, Some("password"), Some((username.to_owned(), password))).await
    } else {
        Ok(Redirect::to(&format!("/admin/accounts/{avid}?notice=password")).into_response())
    }
}

/// `POST /admin/accounts/{avid}/tokens/revoke` (`token`): what `intake
/// token revoke` does, for a token of this account only.
pub(super) async fn revoke_token(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(avid): Path<String>,
    Form(form): FormData,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    let token = field(&form, "token").unwrap_or_default();
    manage::revoke_token(state.store(), Some(&avid), token).await?;
    record(&state, &operator, ip, "token-revoke", format!("token {token} ({avid})")).await;
    Ok(Redirect::to(&format!("/admin/accounts/{avid}?notice=revoked")).into_response())
}

/// `GET /admin/nodes`: what `intake nodes --all` shows.
pub(super) async fn nodes(State(state): State<ConsoleState>, operator: Operator) -> Result<Response, PageError> {
    let takeover = state.inner.takeover_secs;
    let rows = state
        .store()
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| NodeRow {
            state: match () {
                _ if n.stopped => "stopped",
                _ if n.heartbeat_age_secs < takeover => "live",
                _ => "silent",
            },
            heartbeat: format!("{:.1} s ago", n.heartbeat_age_secs),
            up: format!("{:.0} s", n.up_secs),
            id: n.node_id,
            host: n.host,
            version: n.version,
            pid: n.pid,
            jobs: n.jobs,
        })
        .collect();
    Ok(pages::html(&pages::AdminNodes { chrome: operator.chrome(), rows }).into_response())
}

/// `GET /admin/webhooks`: deliveries pending and given up, every account's.
pub(super) async fn webhooks(State(state): State<ConsoleState>, operator: Operator) -> Result<Response, PageError> {
    let rows = state
        .store()
        .list_deliveries(None, None, false, 500)
        .await?
        .into_iter()
        .map(|d| DeliveryRow {
            account: d.account,
            event: d.event,
            job: d.job_id.unwrap_or_default(),
            status: if d.status == crate::store::DeliveryStatus::Failed { "given up" } else { d.status.as_str() },
            attempts: d.attempts,
            last_error: d.last_error.unwrap_or_else(|| "-".into()),
            next_attempt: if d.status == crate::store::DeliveryStatus::Pending {
                d.next_attempt_at
            } else {
                "-".into()
            },
        })
        .collect();
    Ok(pages::html(&pages::AdminWebhooks { chrome: operator.chrome(), rows }).into_response())
}
