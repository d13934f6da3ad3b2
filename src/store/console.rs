//! Tables of the web console: `console_sessions` (signed-in browsers, kept
//! by a hash of the cookie), `console_operators` (operators, a principal
//! apart from SFTP users), `console_audit` (what operators did) and
//! `console_resubmissions` (which job was made from another's fixed rows).

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store, StoreError};
use sqlx::{Encode, Executor, IntoArguments, Type};

/// Who a session is: a user of one account, or an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Operator,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Operator => "operator",
        }
    }

    fn parse(text: &str) -> Result<PrincipalKind> {
        match text {
            "user" => Ok(PrincipalKind::User),
            "operator" => Ok(PrincipalKind::Operator),
            other => Err(StoreError::Corrupt(format!("session kind `{other}`"))),
        }
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub kind: PrincipalKind,
    pub principal: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// One line of the operators' audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    pub operator: String,
    pub action: String,
    pub target: String,
    pub source: Option<String>,
}

/// How long sessions live: without a request, and at most.
#[derive(Debug, Clone, Copy)]
pub struct SessionLife {
    pub idle_secs: i64,
    pub max_secs: i64,
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    pub(crate) async fn create_session(
        &self,
        session_hash: &str,
        kind: PrincipalKind,
        principal: &str,
        csrf: &str,
        source: Option<&str>,
    ) -> Result<()> {
        let now = DB::EPOCH_NOW;
        let sql = format!(
            "INSERT INTO console_sessions (session_hash, kind, principal, csrf, created_at, last_seen, source)
             VALUES ($1, $2, $3, $4, {now}, {now}, $5)"
        );
        sqlx::query(&sql)
            .bind(session_hash)
            .bind(kind.as_str())
            .bind(principal)
            .bind(csrf)
            .bind(source)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The live session of this hash (idle and absolute expiry on the
    /// database's clock), its last use moved to now.
    pub(crate) async fn session(&self, session_hash: &str, life: SessionLife) -> Result<Option<ConsoleSession>> {
        let now = DB::EPOCH_NOW;
        let sql = format!(
            "SELECT kind, principal, csrf, last_seen, {now} AS now FROM console_sessions
             WHERE session_hash = $1 AND last_seen > {now} - $2 AND created_at > {now} - $3"
        );
        let row = sqlx::query(&sql)
            .bind(session_hash)
            .bind(life.idle_secs)
            .bind(life.max_secs)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        // Written at most every few seconds per session, not at every request.
        if row.count("now")? > row.count("last_seen")? + 5 {
            let touch = format!("UPDATE console_sessions SET last_seen = {now} WHERE session_hash = $1");
            sqlx::query(&touch).bind(session_hash).execute(&self.pool).await?;
        }
        Ok(Some(ConsoleSession {
            kind: PrincipalKind::parse(&row.text("kind")?)?,
            principal: row.text("principal")?,
            csrf: row.text("csrf")?,
        }))
    }

    pub(crate) async fn delete_session(&self, session_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of a principal; how many there were.
    pub(crate) async fn delete_sessions_of(&self, kind: PrincipalKind, principal: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE kind = $1 AND principal = $2")
            .bind(kind.as_str())
            .bind(principal)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Forgets sessions past their absolute expiry.
    pub(crate) async fn prune_sessions(&self, life: SessionLife) -> Result<u64> {
        let now = DB::EPOCH_NOW;
        let sql = format!("DELETE FROM console_sessions WHERE created_at <= {now} - $1 OR last_seen <= {now} - $2");
        let done = sqlx::query(&sql).bind(life.max_secs).bind(life.idle_secs).execute(&self.pool).await?;
        Ok(DB::rows_affected(&done))
    }

    /// Creates an operator, or sets an existing one's password.
    pub(crate) async fn put_operator(&self, name: &str, password_hash: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO console_operators (name, password_hash, created_at) VALUES ($1, $2, {})
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
            DB::EPOCH_NOW
        );
        sqlx::query(&sql).bind(name).bind(password_hash).execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn operator_password(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM console_operators WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| r.text("password_hash")).transpose()
    }

    pub(crate) async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let sql = format!(
            "INSERT INTO console_audit (audit_id, at, operator, action, target, source) VALUES ($1, {}, $2, $3, $4, $5)",
            DB::EPOCH_NOW
        );
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(&sql)
            .bind(id.as_str())
            .bind(entry.operator.as_str())
            .bind(entry.action.as_str())
            .bind(entry.target.as_str())
            .bind(entry.source.as_deref())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest entries first.
    pub(crate) async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, operator, action, target, source FROM console_audit ORDER BY at DESC, audit_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.count("at")? as i64,
                    operator: r.text("operator")?,
                    action: r.text("action")?,
                    target: r.text("target")?,
                    source: r.maybe_text("source")?,
                })
            })
            .collect()
    }

    pub(crate) async fn record_resubmission(&self, job_id: &str, from_job_id: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO console_resubmissions (job_id, from_job_id, created_at) VALUES ($1, $2, {})",
            DB::EPOCH_NOW
        );
        sqlx::query(&sql).bind(job_id).bind(from_job_id).execute(&self.pool).await?;
        Ok(())
    }

    /// The job this one was resubmitted from, and the jobs resubmitted from it.
    pub(crate) async fn resubmissions(&self, job_id: &str) -> Result<(Option<String>, Vec<String>)> {
        let from = sqlx::query("SELECT from_job_id FROM console_resubmissions WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        let from = from.as_ref().map(|r| r.text("from_job_id")).transpose()?;
        let to =
            sqlx::query("SELECT job_id FROM console_resubmissions WHERE from_job_id = $1 ORDER BY created_at, job_id")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        let to = to.iter().map(|r| r.text("job_id")).collect::<Result<Vec<_>>>()?;
        Ok((from, to))
    }
}

impl Store {
    /// Records a new session (by its hash) for a principal.
    pub async fn create_session(
        &self,
        session_hash: &str,
        kind: PrincipalKind,
        principal: &str,
        csrf: &str,
        source: Option<&str>,
    ) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.create_session(session_hash, kind, principal, csrf, source).await,
            Store::Postgres(s) => s.sql.create_session(session_hash, kind, principal, csrf, source).await,
        }
    }

    /// The live session of a hash; its last use becomes now.
    pub async fn session(&self, session_hash: &str, life: SessionLife) -> Result<Option<ConsoleSession>> {
        match self {
            Store::Sqlite(s) => s.sql.session(session_hash, life).await,
            Store::Postgres(s) => s.sql.session(session_hash, life).await,
        }
    }

    pub async fn delete_session(&self, session_hash: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.delete_session(session_hash).await,
            Store::Postgres(s) => s.sql.delete_session(session_hash).await,
        }
    }

    /// Signs a principal out everywhere.
    pub async fn delete_sessions_of(&self, kind: PrincipalKind, principal: &str) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.sql.delete_sessions_of(kind, principal).await,
            Store::Postgres(s) => s.sql.delete_sessions_of(kind, principal).await,
        }
    }

    pub async fn prune_sessions(&self, life: SessionLife) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.sql.prune_sessions(life).await,
            Store::Postgres(s) => s.sql.prune_sessions(life).await,
        }
    }

    pub async fn put_operator(&self, name: &str, password_hash: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.put_operator(name, password_hash).await,
            Store::Postgres(s) => s.sql.put_operator(name, password_hash).await,
        }
    }

    /// An operator's password hash; `None`: no such operator.
    pub async fn operator_password(&self, name: &str) -> Result<Option<String>> {
        match self {
            Store::Sqlite(s) => s.sql.operator_password(name).await,
            Store::Postgres(s) => s.sql.operator_password(name).await,
        }
    }

    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.audit(entry).await,
            Store::Postgres(s) => s.sql.audit(entry).await,
        }
    }

    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        match self {
            Store::Sqlite(s) => s.sql.audit_log(limit).await,
            Store::Postgres(s) => s.sql.audit_log(limit).await,
        }
    }

    pub async fn record_resubmission(&self, job_id: &str, from_job_id: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.record_resubmission(job_id, from_job_id).await,
            Store::Postgres(s) => s.sql.record_resubmission(job_id, from_job_id).await,
        }
    }

    pub async fn resubmissions(&self, job_id: &str) -> Result<(Option<String>, Vec<String>)> {
        match self {
            Store::Sqlite(s) => s.sql.resubmissions(job_id).await,
            Store::Postgres(s) => s.sql.resubmissions(job_id).await,
        }
    }
}

/// A principal's TOTP secret (base32) and whether its enrolment is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpState {
    pub secret: String,
    pub enabled: bool,
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    pub(crate) async fn totp(&self, kind: PrincipalKind, principal: &str) -> Result<Option<TotpState>> {
        let row = sqlx::query(
            "SELECT secret, CASE WHEN enabled_at IS NULL THEN 'no' ELSE 'yes' END AS enabled
             FROM console_totp WHERE kind = $1 AND principal = $2",
        )
        .bind(kind.as_str())
        .bind(principal)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(TotpState { secret: r.text("secret")?, enabled: r.text("enabled")? == "yes" })).transpose()
    }

    /// Starts an enrolment (a new secret, not enabled) unless TOTP is on.
    pub(crate) async fn start_totp(&self, kind: PrincipalKind, principal: &str, secret: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO console_totp (kind, principal, secret) VALUES ($1, $2, $3)
             ON CONFLICT (kind, principal) DO UPDATE SET secret = excluded.secret
             WHERE console_totp.enabled_at IS NULL",
        )
        .bind(kind.as_str())
        .bind(principal)
        .bind(secret)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The principal's recovery codes (hashes) in place of any older ones.
    async fn put_recovery_codes(
        conn: &mut DB::Connection,
        kind: PrincipalKind,
        principal: &str,
        code_hashes: &[String],
    ) -> Result<()> {
        sqlx::query("DELETE FROM console_recovery_codes WHERE kind = $1 AND principal = $2")
            .bind(kind.as_str())
            .bind(principal)
            .execute(&mut *conn)
            .await?;
        for hash in code_hashes {
            sqlx::query("INSERT INTO console_recovery_codes (kind, principal, code_hash) VALUES ($1, $2, $3)")
                .bind(kind.as_str())
                .bind(principal)
                .bind(hash.as_str())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Confirms an enrolment with its recovery codes (hashes), replacing older ones.
    pub(crate) async fn enable_totp(&self, kind: PrincipalKind, principal: &str, code_hashes: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE console_totp SET enabled_at = {} WHERE kind = $1 AND principal = $2 AND enabled_at IS NULL",
            DB::EPOCH_NOW
        );
        sqlx::query(&sql).bind(kind.as_str()).bind(principal).execute(&mut *tx).await?;
        Self::put_recovery_codes(&mut tx, kind, principal, code_hashes).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses a recovery code once; false if unknown or used.
    pub(crate) async fn use_recovery_code(
        &self,
        kind: PrincipalKind,
        principal: &str,
        code_hash: &str,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE console_recovery_codes SET used_at = {} WHERE kind = $1 AND principal = $2 AND code_hash = $3
             AND used_at IS NULL",
            DB::EPOCH_NOW
        );
        let done = sqlx::query(&sql).bind(kind.as_str()).bind(principal).bind(code_hash).execute(&self.pool).await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// Accepts TOTP step `step` for the principal once: false when it, or a
    /// later one, was accepted already (a code replayed within its window).
    pub(crate) async fn use_totp_step(&self, kind: PrincipalKind, principal: &str, step: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE console_totp SET last_step = $3 WHERE kind = $1 AND principal = $2
             AND (last_step IS NULL OR last_step < $3)",
        )
        .bind(kind.as_str())
        .bind(principal)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// Turns two-factor sign-in off: the secret and the recovery codes go.
    pub(crate) async fn disable_totp(&self, kind: PrincipalKind, principal: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["console_totp", "console_recovery_codes"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE kind = $1 AND principal = $2"))
                .bind(kind.as_str())
                .bind(principal)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// New recovery codes (hashes) for a principal with TOTP on; the old
    /// ones stop working. False when TOTP is not on.
    pub(crate) async fn replace_recovery_codes(
        &self,
        kind: PrincipalKind,
        principal: &str,
        code_hashes: &[String],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let on = sqlx::query(
            "SELECT principal FROM console_totp WHERE kind = $1 AND principal = $2 AND enabled_at IS NOT NULL",
        )
        .bind(kind.as_str())
        .bind(principal)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !on {
            return Ok(false);
        }
        Self::put_recovery_codes(&mut tx, kind, principal, code_hashes).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    pub async fn use_totp_step(&self, kind: PrincipalKind, principal: &str, step: u64) -> Result<bool> {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(s) => s.sql.use_totp_step(kind, principal, step).await,
            Store::Postgres(s) => s.sql.use_totp_step(kind, principal, step).await,
        }
    }

    pub async fn disable_totp(&self, kind: PrincipalKind, principal: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.disable_totp(kind, principal).await,
            Store::Postgres(s) => s.sql.disable_totp(kind, principal).await,
        }
    }

    pub async fn replace_recovery_codes(
        &self,
        kind: PrincipalKind,
        principal: &str,
        hashes: &[String],
    ) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.replace_recovery_codes(kind, principal, hashes).await,
            Store::Postgres(s) => s.sql.replace_recovery_codes(kind, principal, hashes).await,
        }
    }

    pub async fn totp(&self, kind: PrincipalKind, principal: &str) -> Result<Option<TotpState>> {
        match self {
            Store::Sqlite(s) => s.sql.totp(kind, principal).await,
            Store::Postgres(s) => s.sql.totp(kind, principal).await,
        }
    }

    pub async fn start_totp(&self, kind: PrincipalKind, principal: &str, secret: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.start_totp(kind, principal, secret).await,
            Store::Postgres(s) => s.sql.start_totp(kind, principal, secret).await,
        }
    }

    pub async fn enable_totp(&self, kind: PrincipalKind, principal: &str, code_hashes: &[String]) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.enable_totp(kind, principal, code_hashes).await,
            Store::Postgres(s) => s.sql.enable_totp(kind, principal, code_hashes).await,
        }
    }

    pub async fn use_recovery_code(&self, kind: PrincipalKind, principal: &str, code_hash: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.use_recovery_code(kind, principal, code_hash).await,
            Store::Postgres(s) => s.sql.use_recovery_code(kind, principal, code_hash).await,
        }
    }
}
