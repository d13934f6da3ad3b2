//! Tables `accounts` (an account's settings) and `sftp_users` (its logins).

use super::sql::{missing_as, Backend, Columns, Sql};
use super::{Result, Store, StoreError};
use crate::domain::user::{Scopes, SftpUser};
use crate::domain::{AccountId, AccountSettings, FileEncoding, PgpRules, PhoneCheck, PhoneRegion, SettingError};
use sqlx::{Encode, Executor, IntoArguments, Type};

const ACCOUNT_COLUMNS: &str = "avid, default_region, encoding, phone_check, report_bom, \
     pgp_require_encryption, pgp_require_signature, pgp_encrypt_reports";
const USER_COLUMNS: &str = "username, account, public_keys, password_hash, scopes";

/// A stored setting that does not parse: the database was changed by hand.
fn corrupt(e: SettingError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn account(r: &impl Columns) -> Result<AccountSettings> {
    Ok(AccountSettings {
        default_region: r.maybe_text("default_region")?.map(|c| PhoneRegion::parse(&c)).transpose().map_err(corrupt)?,
        encoding: FileEncoding::parse(&r.text("encoding")?).map_err(corrupt)?,
        phone_check: PhoneCheck::parse(&r.text("phone_check")?).map_err(corrupt)?,
        report_bom: r.flag("report_bom")?,
        avid: AccountId::parse(&r.text("avid")?).map_err(corrupt)?,
        mapping: Default::default(),
        pgp: PgpRules {
            require_encryption: r.flag("pgp_require_encryption")?,
            require_signature: r.flag("pgp_require_signature")?,
            encrypt_reports: r.flag("pgp_encrypt_reports")?,
        },
        pgp_signer: None,
    })
}

fn user(r: &impl Columns) -> Result<SftpUser> {
    Ok(SftpUser {
        username: r.text("username")?,
        account: AccountId::parse(&r.text("account")?).map_err(corrupt)?,
        public_keys: r.text("public_keys")?.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
        password_hash: r.maybe_text("password_hash")?,
        scopes: Scopes::parse(r.text("scopes")?.split_whitespace()).map_err(corrupt)?,
    })
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    /// Creates an account; with `replace`, an existing one takes the new settings.
    pub(crate) async fn add_account(&self, a: &AccountSettings, replace: bool) -> Result<()> {
        let sql = if replace {
            "INSERT INTO accounts (avid, default_region, encoding, phone_check, report_bom,
               pgp_require_encryption, pgp_require_signature, pgp_encrypt_reports)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (avid) DO UPDATE SET default_region = excluded.default_region,
               encoding = excluded.encoding, phone_check = excluded.phone_check, report_bom = excluded.report_bom,
               pgp_require_encryption = excluded.pgp_require_encryption,
               pgp_require_signature = excluded.pgp_require_signature,
               pgp_encrypt_reports = excluded.pgp_encrypt_reports"
        } else {
            "INSERT INTO accounts (avid, default_region, encoding, phone_check, report_bom,
               pgp_require_encryption, pgp_require_signature, pgp_encrypt_reports)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING"
        };
        let region = a.default_region.map(|r| r.code());
        let done = sqlx::query(sql)
            .bind(a.avid.as_str())
            .bind(region.as_deref())
            .bind(a.encoding.as_str())
            .bind(a.phone_check.as_str())
            .bind(a.report_bom)
            .bind(a.pgp.require_encryption)
            .bind(a.pgp.require_signature)
            .bind(a.pgp.encrypt_reports)
            .execute(&self.pool)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::AlreadyExists(format!("account `{}`", a.avid)));
        }
        Ok(())
    }

    pub(crate) async fn get_account(&self, avid: &str) -> Result<Option<AccountSettings>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE avid = $1");
        let row = sqlx::query(&sql).bind(avid).fetch_optional(&self.pool).await?;
        row.as_ref().map(account).transpose()
    }

    pub(crate) async fn list_accounts(&self) -> Result<Vec<AccountSettings>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY avid");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(account).collect()
    }

    pub(crate) async fn remove_account(&self, avid: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM accounts WHERE avid = $1").bind(avid).execute(&self.pool).await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("account `{avid}`")));
        }
        Ok(())
    }

    /// Creates a user; with `replace`, an existing one is replaced.
    pub(crate) async fn add_user(&self, u: &SftpUser, replace: bool) -> Result<()> {
        let sql = if replace {
            "INSERT INTO sftp_users (username, account, public_keys, password_hash, scopes) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (username) DO UPDATE SET account = excluded.account, public_keys = excluded.public_keys,
               password_hash = excluded.password_hash, scopes = excluded.scopes"
        } else {
            "INSERT INTO sftp_users (username, account, public_keys, password_hash, scopes) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING"
        };
        let keys = u.public_keys.join("\n");
        let scopes = u.scopes.names().join(" ");
        let done = sqlx::query(sql)
            .bind(u.username.as_str())
            .bind(u.account.as_str())
            .bind(keys.as_str())
            .bind(u.password_hash.as_deref())
            .bind(scopes.as_str())
            .execute(&self.pool)
            .await
            .map_err(missing_as(|| format!("account `{}`", u.account)))?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::AlreadyExists(format!("user `{}`", u.username)));
        }
        Ok(())
    }

    pub(crate) async fn find_user(&self, username: &str) -> Result<Option<SftpUser>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM sftp_users WHERE username = $1 AND NOT sftp_users.disabled
               AND NOT EXISTS (SELECT 1 FROM accounts AS a WHERE a.avid = sftp_users.account AND a.disabled)"
        );
        let row = sqlx::query(&sql).bind(username).fetch_optional(&self.pool).await?;
        row.as_ref().map(user).transpose()
    }

    pub(crate) async fn list_users(&self) -> Result<Vec<SftpUser>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM sftp_users ORDER BY username");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(user).collect()
    }

    /// Sets a user's password hash; false if there is no such user.
    pub(crate) async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE sftp_users SET password_hash = $1 WHERE username = $2")
            .bind(password_hash)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// Every account with its users' and jobs' counts and whether it is disabled.
    pub(crate) async fn account_overview(&self) -> Result<Vec<AccountOverview>> {
        let rows = sqlx::query(
            "SELECT a.avid, a.disabled,
               (SELECT COUNT(*) FROM sftp_users AS u WHERE u.account = a.avid) AS users,
               (SELECT COUNT(*) FROM jobs AS j WHERE j.account = a.avid) AS jobs
             FROM accounts AS a ORDER BY a.avid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountOverview {
                    avid: r.text("avid")?,
                    disabled: r.flag("disabled")?,
                    users: r.count("users")?,
                    jobs: r.count("jobs")?,
                })
            })
            .collect()
    }

    /// An account's users, disabled ones too; `None` if there is no such account.
    pub(crate) async fn account_users(&self, avid: &str) -> Result<Option<(bool, Vec<UserState>)>> {
        let row =
            sqlx::query("SELECT disabled FROM accounts WHERE avid = $1").bind(avid).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let sql = format!("SELECT {USER_COLUMNS}, disabled FROM sftp_users WHERE account = $1 ORDER BY username");
        let rows = sqlx::query(&sql).bind(avid).fetch_all(&self.pool).await?;
        let users = rows
            .iter()
            .map(|r| Ok(UserState { user: user(r)?, disabled: r.flag("disabled")? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((row.flag("disabled")?, users)))
    }

    /// Disables or enables a user; false if there is no such user.
    pub(crate) async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE sftp_users SET disabled = $1 WHERE username = $2")
            .bind(disabled)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// Disables or enables an account; false if there is no such account.
    pub(crate) async fn set_account_disabled(&self, avid: &str, disabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET disabled = $1 WHERE avid = $2")
            .bind(disabled)
            .bind(avid)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn remove_user(&self, username: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM sftp_users WHERE username = $1").bind(username).execute(&self.pool).await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("user `{username}`")));
        }
        Ok(())
    }
}

/// An account as the operators' list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOverview {
    pub avid: String,
    pub disabled: bool,
    pub users: u64,
    pub jobs: u64,
}

/// A user and whether it is disabled (itself; its account may be too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub user: SftpUser,
    pub disabled: bool,
}

impl Store {
    pub async fn add_account(&self, account: &AccountSettings) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.add_account(account, false).await,
            Store::Postgres(s) => s.sql.add_account(account, false).await,
        }
    }

    /// Creates or updates an account (used for accounts declared in config).
    pub async fn put_account(&self, account: &AccountSettings) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.add_account(account, true).await,
            Store::Postgres(s) => s.sql.add_account(account, true).await,
        }
    }

    pub async fn get_account(&self, avid: &str) -> Result<Option<AccountSettings>> {
        match self {
            Store::Sqlite(s) => s.sql.get_account(avid).await,
            Store::Postgres(s) => s.sql.get_account(avid).await,
        }
    }

    pub async fn list_accounts(&self) -> Result<Vec<AccountSettings>> {
        match self {
            Store::Sqlite(s) => s.sql.list_accounts().await,
            Store::Postgres(s) => s.sql.list_accounts().await,
        }
    }

    /// Removes the account, its users and mapping profiles; its customers
    /// stay in the store.
    pub async fn remove_account(&self, avid: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => {
                s.sql.remove_account_mappings(avid).await?;
                s.sql.remove_account(avid).await
            }
            Store::Postgres(s) => {
                s.sql.remove_account_mappings(avid).await?;
                s.sql.remove_account(avid).await
            }
        }
    }

    pub async fn add_user(&self, user: &SftpUser) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.add_user(user, false).await,
            Store::Postgres(s) => s.sql.add_user(user, false).await,
        }
    }

    /// Creates or replaces a user (used for users declared in config).
    pub async fn put_user(&self, user: &SftpUser) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.add_user(user, true).await,
            Store::Postgres(s) => s.sql.add_user(user, true).await,
        }
    }

    /// A user who may sign in: a disabled user, or a user of a disabled
    /// account, is not found (so SFTP, the console and uploads' scopes all
    /// refuse them as if they were not there).
    pub async fn find_user(&self, username: &str) -> Result<Option<SftpUser>> {
        match self {
            Store::Sqlite(s) => s.sql.find_user(username).await,
            Store::Postgres(s) => s.sql.find_user(username).await,
        }
    }

    pub async fn list_users(&self) -> Result<Vec<SftpUser>> {
        match self {
            Store::Sqlite(s) => s.sql.list_users().await,
            Store::Postgres(s) => s.sql.list_users().await,
        }
    }

    /// Sets a user's password (an Argon2id PHC string); false if no such user.
    pub async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.set_user_password(username, password_hash).await,
            Store::Postgres(s) => s.sql.set_user_password(username, password_hash).await,
        }
    }

    pub async fn account_overview(&self) -> Result<Vec<AccountOverview>> {
        match self {
            Store::Sqlite(s) => s.sql.account_overview().await,
            Store::Postgres(s) => s.sql.account_overview().await,
        }
    }

    /// Whether the account is disabled and its users (disabled ones too);
    /// `None` if there is no such account.
    pub async fn account_users(&self, avid: &str) -> Result<Option<(bool, Vec<UserState>)>> {
        match self {
            Store::Sqlite(s) => s.sql.account_users(avid).await,
            Store::Postgres(s) => s.sql.account_users(avid).await,
        }
    }

    /// False if there is no such user. Ending the user's sessions is the caller's.
    pub async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.set_user_disabled(username, disabled).await,
            Store::Postgres(s) => s.sql.set_user_disabled(username, disabled).await,
        }
    }

    /// False if there is no such account.
    pub async fn set_account_disabled(&self, avid: &str, disabled: bool) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.set_account_disabled(avid, disabled).await,
            Store::Postgres(s) => s.sql.set_account_disabled(avid, disabled).await,
        }
    }

    pub async fn remove_user(&self, username: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.remove_user(username).await,
            Store::Postgres(s) => s.sql.remove_user(username).await,
        }
    }
}
