//! Accounts: the AVID that names one (one rule, wherever an id comes from:
//! the CLI, the config, the database, an SFTP login) and its settings.

use super::customer::{FileEncoding, PhoneCheck, PhoneRegion};
use super::mapping::{AppliedMapping, MappingChoice, Profile};
use std::fmt;

/// Why a setting given as text (CLI, config, database) is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("invalid account id `{0}`: use 1 to 64 letters, digits, `-`, `_` or `.` (not first)")]
    AccountId(String),
    #[error("unknown region `{0}` (use a two-letter ISO code such as US)")]
    Region(String),
    #[error("unknown encoding `{0}` (known: utf-8, windows-1252)")]
    Encoding(String),
    #[error("unknown phone check `{0}` (known: possible, valid)")]
    PhoneCheck(String),
    #[error("unknown scope `{0}` (known: customers:create, customers:update)")]
    Scope(String),
    #[error("unreadable account settings `{0}`")]
    Snapshot(String),
}

/// An account's AVID: what a merchant logs in with and what names its
/// folder, so 1 to 64 ASCII letters, digits, `-`, `_` and `.` (not first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<AccountId, SettingError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && !raw.starts_with('.')
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(AccountId(raw.to_owned()))
        } else {
            Err(SettingError::AccountId(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for AccountId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for AccountId {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for AccountId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AccountId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// How an account's files are read and checked, and its reports written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    pub avid: AccountId,
    pub default_region: Option<PhoneRegion>,
    pub encoding: FileEncoding,
    pub phone_check: PhoneCheck,
    /// Whether the CSV reports start with a UTF-8 BOM (Excel on Windows
    /// shows non-ASCII text garbled without one).
    pub report_bom: bool,
    /// Which mapping profile reads the account's file (none by default).
    pub mapping: MappingChoice,
    /// OpenPGP rules for its uploads and reports (spec §12).
    pub pgp: PgpRules,
    /// The merchant key (40 hex) whose signature on the file being read
    /// verified: found by a job's first pass and kept with its settings.
    pub pgp_signer: Option<String>,
}

/// An account's OpenPGP rules (spec §12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgpRules {
    /// A plain upload is rejected (`encryption_required`).
    pub require_encryption: bool,
    /// An upload not signed by one of its merchant keys is rejected
    /// (`signature_required`, `bad_signature`).
    pub require_signature: bool,
    /// Results and failed records are encrypted to its merchant keys.
    pub encrypt_reports: bool,
}

impl AccountSettings {
    /// An account with the default settings.
    pub fn new(avid: AccountId) -> Self {
        AccountSettings {
            avid,
            default_region: None,
            encoding: FileEncoding::Utf8,
            phone_check: PhoneCheck::Possible,
            report_bom: false,
            mapping: MappingChoice::Unmapped,
            pgp: PgpRules::default(),
            pgp_signer: None,
        }
    }

    /// The settings given as text (`None`: the default), as the CLI and the
    /// config give them.
    pub fn from_text(
        avid: &str,
        region: Option<&str>,
        encoding: Option<&str>,
        phone_check: Option<&str>,
    ) -> Result<Self, SettingError> {
        Ok(AccountSettings {
            default_region: region.map(PhoneRegion::parse).transpose()?,
            encoding: encoding.map(FileEncoding::parse).transpose()?.unwrap_or_default(),
            phone_check: phone_check.map(PhoneCheck::parse).transpose()?.unwrap_or_default(),
            ..AccountSettings::new(AccountId::parse(avid)?)
        })
    }
}

impl AccountSettings {
    /// The settings a file is read and reported with, as one text to keep
    /// with a job (the account may change while the job runs).
    /// The mapping profile the file is read with is kept whole (its text),
    /// so that a profile changed or removed later does not change the job.
    pub fn snapshot(&self) -> String {
        let mapping = self.mapping.applied().map(|a| {
            serde_json::json!({
                "name": a.profile.name,
                "preset": a.profile.preset,
                "text": a.profile.text(),
                "ignored": a.ignored,
            })
        });
        serde_json::json!({
            "default_region": self.default_region.map(|r| r.code()),
            "encoding": self.encoding.as_str(),
            "phone_check": self.phone_check.as_str(),
            "report_bom": self.report_bom,
            "mapping": mapping,
            "pgp": {
                "require_encryption": self.pgp.require_encryption,
                "require_signature": self.pgp.require_signature,
                "encrypt_reports": self.pgp.encrypt_reports,
                "signer": self.pgp_signer,
            },
        })
        .to_string()
    }

    /// The settings a [`snapshot`](Self::snapshot) kept.
    pub fn from_snapshot(avid: AccountId, snapshot: &str) -> Result<Self, SettingError> {
        let v: serde_json::Value =
            serde_json::from_str(snapshot).map_err(|_| SettingError::Snapshot(snapshot.to_owned()))?;
        let text = |key: &str| v.get(key).and_then(|x| x.as_str());
        let bad = || SettingError::Snapshot(snapshot.chars().take(200).collect());
        let mapping = match v.get("mapping").filter(|m| !m.is_null()) {
            None => MappingChoice::Unmapped,
            Some(m) => {
                let field = |key: &str| m.get(key).and_then(|x| x.as_str()).ok_or_else(bad);
                let preset = m.get("preset").and_then(|x| x.as_bool()).unwrap_or(false);
                let profile =
                    Profile::parse_as(field("name")?, field("text")?.as_bytes(), preset).map_err(|_| bad())?;
                let ignored = m
                    .get("ignored")
                    .and_then(|x| x.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                MappingChoice::Chosen(AppliedMapping { profile: std::sync::Arc::new(profile), ignored })
            }
        };
        let pgp = v.get("pgp");
        let pgp_flag = |key: &str| pgp.and_then(|p| p.get(key)).and_then(|x| x.as_bool()).unwrap_or(false);
        Ok(AccountSettings {
            report_bom: v.get("report_bom").and_then(|x| x.as_bool()).unwrap_or(false),
            mapping,
            pgp: PgpRules {
                require_encryption: pgp_flag("require_encryption"),
                require_signature: pgp_flag("require_signature"),
                encrypt_reports: pgp_flag("encrypt_reports"),
            },
            pgp_signer: pgp.and_then(|p| p.get("signer")).and_then(|x| x.as_str()).map(str::to_owned),
            ..AccountSettings::from_text(avid.as_str(), text("default_region"), text("encoding"), text("phone_check"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_id_is_one_folder_name_of_at_most_64_safe_characters() {
        for ok in ["acme", "a", "acme-eu_1.x", &"a".repeat(64)] {
            assert_eq!(AccountId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "ä", "a b", &"a".repeat(65)] {
            assert_eq!(AccountId::parse(bad), Err(SettingError::AccountId(bad.to_owned())), "{bad:?}");
        }
    }

    #[test]
    fn a_snapshot_gives_back_the_settings() {
        let mut s = AccountSettings::from_text("acme", Some("DE"), Some("windows-1252"), Some("valid")).unwrap();
        s.report_bom = true;
        s.pgp = PgpRules { require_encryption: true, require_signature: false, encrypt_reports: true };
        s.pgp_signer = Some("ab".repeat(20));
        assert_eq!(AccountSettings::from_snapshot(s.avid.clone(), &s.snapshot()).unwrap(), s);
        let plain = AccountSettings::new(AccountId::parse("a").unwrap());
        assert_eq!(AccountSettings::from_snapshot(plain.avid.clone(), &plain.snapshot()).unwrap(), plain);
    }
}
