//! The mailbox contract: what lives where under the data directory, which
//! names are uploads, temp files or reports, and what intake records on a
//! file (who uploaded it, which job took it). The SFTP jail, the watcher, the
//! job and the tests all read these rules from here, so they cannot drift.
//!
//! `accounts/<AVID>/{customers,validate,outbox,archive}` is what SFTP users see;
//! `spool/<job_id>/` holds a job's upload and its report while it is processed.

use std::io;
use std::path::{Path, PathBuf};

/// The folders of an account root, as SFTP users see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Uploads: write, rename, delete (with scope `customers:create`).
    Customers,
    /// Dry-run uploads, with the same rights: checked, nothing written.
    Validate,
    /// Reports: list, download, delete.
    Outbox,
    /// Processed uploads: list, download.
    Archive,
}

impl Folder {
    pub const ALL: [Folder; 4] = [Folder::Customers, Folder::Validate, Folder::Outbox, Folder::Archive];
    /// The folders clients upload files to be processed into.
    pub const UPLOADS: [Folder; 2] = [Folder::Customers, Folder::Validate];

    pub fn name(self) -> &'static str {
        match self {
            Folder::Customers => "customers",
            Folder::Validate => "validate",
            Folder::Outbox => "outbox",
            Folder::Archive => "archive",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether files uploaded here are processed.
    pub fn takes_uploads(self) -> bool {
        Self::UPLOADS.contains(&self)
    }
}

/// Every name intake itself writes into an account folder starts with this;
/// clients may not use it (any other hidden name is theirs).
pub const RESERVED_PREFIX: &str = ".intake-";
/// The hidden temp file an SFTP upload is written to before it is published.
pub const UPLOAD_TEMP_PREFIX: &str = ".intake-upload.";
/// Whether `name` is one of intake's own (never a client's to touch).
pub fn is_reserved_name(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// The hidden temp name an upload is written to: the prefix, the node
/// writing it and a random id, never the client's name, so that it fits
/// whatever name the client chose, and a node starting knows its own.
pub fn upload_temp_name(node_id: &str, random_id: &str) -> String {
    format!("{UPLOAD_TEMP_PREFIX}{node_id}.{random_id}")
}

/// Whether `name` is an upload temp of node `node_id`.
pub fn is_upload_temp_of(name: &str, node_id: &str) -> bool {
    name.strip_prefix(UPLOAD_TEMP_PREFIX)
        .and_then(|rest| rest.strip_prefix(node_id))
        .is_some_and(|rest| rest.starts_with('.') && !rest[1..].contains('.'))
}

/// Reports written aside before they are renamed into place.
const PUBLISH_TEMP_PREFIX: &str = ".intake-tmp.";

/// Whether `name` is a report written aside (`publish_atomically`): one
/// that is still there long after was left by a process that died.
pub fn is_publish_temp(name: &str) -> bool {
    name.starts_with(PUBLISH_TEMP_PREFIX)
}

/// The longest file name the file systems intake runs on take.
pub const MAX_NAME_BYTES: usize = 255;
/// The longest suffix intake adds to a report stem.
const LONGEST_REPORT_SUFFIX: usize = ".validation-progress.json".len();
/// `20261126T100000Z-1a2b3c4d-`: what the archive puts before an upload's name.
const ARCHIVE_PREFIX_BYTES: usize = 16 + 1 + 8 + 1;
/// The longest upload name whose every derived name (reports, archive) fits
/// in [`MAX_NAME_BYTES`]; the SFTP server refuses longer ones.
pub const MAX_UPLOAD_NAME_BYTES: usize = MAX_NAME_BYTES - ARCHIVE_PREFIX_BYTES;

/// Where things live under the data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Layout { data_dir: data_dir.into() }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn accounts_root(&self) -> PathBuf {
        self.data_dir.join("accounts")
    }

    pub fn folder(&self, avid: &str, folder: Folder) -> PathBuf {
        self.accounts_root().join(avid).join(folder.name())
    }

    pub fn customers(&self, avid: &str) -> PathBuf {
        self.folder(avid, Folder::Customers)
    }

    pub fn outbox(&self, avid: &str) -> PathBuf {
        self.folder(avid, Folder::Outbox)
    }

    pub fn archive(&self, avid: &str) -> PathBuf {
        self.folder(avid, Folder::Archive)
    }

    pub fn spool(&self, job_id: &str) -> PathBuf {
        self.data_dir.join("spool").join(job_id)
    }

    /// Creates an account's folders (and the spool) if missing.
    pub fn ensure_account(&self, avid: &str) -> io::Result<()> {
        for folder in Folder::ALL {
            std::fs::create_dir_all(self.folder(avid, folder))?;
        }
        std::fs::create_dir_all(self.data_dir.join("spool"))
    }
}

/// Whether `name` ends with `suffix`, ASCII case-insensitively (byte-wise:
/// never splits a character).
fn ends_with_ignore_case(name: &str, suffix: &str) -> bool {
    let (n, s) = (name.as_bytes(), suffix.as_bytes());
    n.len() > s.len() && n[n.len() - s.len()..].eq_ignore_ascii_case(s)
}

/// The extensions of uploads that are processed (any case), longest first:
/// CSV, gzip-compressed or not, and either one OpenPGP-encrypted (spec §12).
const UPLOAD_EXTENSIONS: [&str; 8] =
    [".csv.gz.pgp", ".csv.gz.gpg", ".csv.gz.asc", ".csv.pgp", ".csv.gpg", ".csv.asc", ".csv.gz", ".csv"];

/// Whether a name in `/customers` or `/validate` is an upload to process:
/// `*.csv` or `*.csv.gz` (any case), not hidden. Client temp names
/// (`x.csv.filepart`, `.in.x.csv`) are not.
pub fn is_upload_name(file_name: &str) -> bool {
    !file_name.starts_with('.') && UPLOAD_EXTENSIONS.iter().any(|ext| ends_with_ignore_case(file_name, ext))
}

/// Why the SFTP server must refuse `file_name` as an upload's final name,
/// or `None` when every name derived from it fits.
pub fn upload_name_problem(file_name: &str) -> Option<String> {
    if file_name.chars().any(char::is_control) {
        return Some("Invalid file name: control characters are not allowed".to_owned());
    }
    if let Some(problem) = looks_like_upload_but_is_not(file_name) {
        return Some(problem);
    }
    if is_upload_name(file_name) && file_name.len() > MAX_UPLOAD_NAME_BYTES {
        return Some(format!(
            "File name too long: an upload's name may have at most {MAX_UPLOAD_NAME_BYTES} bytes \
             (its reports are named after it)"
        ));
    }
    None
}

/// Characters that are invisible or blank at the end of a name.
fn is_invisible_or_blank(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{180E}')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The ASCII letter or dot that `c` is drawn like in a file name's
/// extension (Cyrillic `с`, `ѕ`, `ѵ`, Greek `ν`, fullwidth and small-capital
/// forms, dot leaders), or `c` itself.
fn ascii_lookalike(c: char) -> char {
    match c {
        'с' | 'С' | 'ϲ' | 'Ϲ' | 'ｃ' | 'Ｃ' | 'ᴄ' | 'ⅽ' | 'Ⅽ' => 'c',
        'ѕ' | 'Ѕ' | 'ｓ' | 'Ｓ' | 'ꜱ' => 's',
        'ѵ' | 'Ѵ' | 'ν' | 'ｖ' | 'Ｖ' | 'ᴠ' | 'ⅴ' | 'Ⅴ' => 'v',
        'ɡ' | 'ｇ' | 'Ｇ' | 'ɢ' => 'g',
        'ｚ' | 'Ｚ' | 'ᴢ' => 'z',
        '․' | '．' | '。' | '﹒' | '·' => '.',
        other => other,
    }
}

/// Why a visible name that reads as an upload name (`x.csv ` with a trailing
/// space, `y.csv.`, `z.csv` + U+200B, `w.сsv` with a Cyrillic `с`) is not
/// one: the watcher would never take it, so the client is told at upload.
/// Client temp names (`x.csv.filepart`, `.in.x.csv`) are never such names.
fn looks_like_upload_but_is_not(file_name: &str) -> Option<String> {
    if file_name.starts_with('.') || is_upload_name(file_name) {
        return None;
    }
    let trimmed = file_name.trim_end_matches(|c: char| c == '.' || is_invisible_or_blank(c));
    if trimmed.len() < file_name.len() && is_upload_name(trimmed) {
        return Some(
            "Invalid file name: it ends in blank, invisible characters or dots after .csv; \
             only names ending in .csv or .csv.gz are processed"
                .to_owned(),
        );
    }
    let folded: String = trimmed.chars().filter(|c| !is_invisible_or_blank(*c)).map(ascii_lookalike).collect();
    if is_upload_name(&folded) {
        return Some(
            "Invalid file name: its extension only looks like .csv (characters that are not plain \
             ASCII letters, or invisible ones); only names ending in .csv or .csv.gz are processed"
                .to_owned(),
        );
    }
    None
}

/// `May.CSV` → `May`, `May.csv.gz` → `May`: the upload's name without its
/// extension (any case), the name its reports take. A name too long for
/// every report name to fit (only files placed by another server can have
/// one) is shortened at a character boundary and marked with a hash of the
/// whole name.
pub fn report_stem(file_name: &str) -> String {
    let ext = UPLOAD_EXTENSIONS.iter().find(|ext| ends_with_ignore_case(file_name, ext)).map_or(0, |ext| ext.len());
    shortened(&file_name[..file_name.len() - ext], MAX_NAME_BYTES - LONGEST_REPORT_SUFFIX)
}

/// The names of one upload's reports in `/outbox`. A dry run's never
/// share a name with an import's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportNames {
    /// One row per record (`NAME.results.csv`, `NAME.validation.csv`).
    pub results: String,
    /// Written last (`NAME.summary.json`, `NAME.validation.json`).
    pub summary: String,
    /// While the file is queued or running (`NAME.progress.json`).
    pub progress: String,
    /// The failed records as uploaded (`NAME.failed.csv`).
    pub failed: String,
}

impl ReportNames {
    pub fn of(file_name: &str, dry_run: bool) -> ReportNames {
        let stem = report_stem(file_name);
        // No import's name ends like a dry run's: an import of
        // `May.validation.csv` reports as `May.validation.progress.json`.
        let [results, summary, progress, failed] = if dry_run {
            ["validation.csv", "validation.json", "validation-progress.json", "validation-failed.csv"]
        } else {
            ["results.csv", "summary.json", "progress.json", "failed.csv"]
        };
        ReportNames {
            results: format!("{stem}.{results}"),
            summary: format!("{stem}.{summary}"),
            progress: format!("{stem}.{progress}"),
            failed: format!("{stem}.{failed}"),
        }
    }
}

/// Which report files a job published, by its `summary.json`: when the
/// summary's `pgp` names an encrypted results file, the reports are
/// `NAME.results.csv.pgp` / `NAME.failed.csv.pgp` and the plain names are
/// never theirs (an account that encrypts reports never serves them plain).
/// The names are derived from the job's, never taken from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedReports {
    pub results: String,
    pub failed: String,
    /// Encrypted to the merchant's keys (`application/pgp-encrypted`).
    pub encrypted: bool,
}

impl PublishedReports {
    pub fn of(names: &ReportNames, summary: &serde_json::Value) -> PublishedReports {
        let encrypted = summary.get("pgp").and_then(|p| p.get("results_file")).is_some_and(|f| f.is_string());
        let name = |plain: &str| if encrypted { format!("{plain}.pgp") } else { plain.to_owned() };
        PublishedReports { results: name(&names.results), failed: name(&names.failed), encrypted }
    }
}

/// The name a processed upload keeps in `/archive`.
pub fn archive_name(received_compact: &str, job_id: &str, file_name: &str) -> String {
    let job8 = &job_id[job_id.len().saturating_sub(8)..];
    let name = shortened(file_name, MAX_UPLOAD_NAME_BYTES);
    format!("{received_compact}-{job8}-{name}")
}

/// `name` if it has at most `max` bytes, else its longest prefix (at a
/// character boundary) that leaves room for `~` and 8 hex digits of its hash.
fn shortened(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..4]);
    let mut end = max - 9;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash}", &name[..end])
}

/// Writes `bytes` next to `target` and renames it into place, so readers see
/// all or nothing; the file and the rename are on disk when it returns. The
/// temp file never outlives an error.
pub fn publish_atomically(target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = target.parent().ok_or_else(|| io::Error::other("target has no folder"))?;
    let temp = dir.join(format!("{PUBLISH_TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temp, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    sync_dir(dir)
}

/// Renames `from` to `to` and makes the rename durable.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the entries of `dir` (renames, creations) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The extended attribute that names the SFTP user who uploaded a file.
const UPLOADER_XATTR: &str = "user.intake.uploader";
/// The extended attribute that names the job that took a visible upload.
const JOB_XATTR: &str = "user.intake.job";

/// Records who uploaded `path`.
pub fn set_uploader(path: &Path, username: &str) -> io::Result<()> {
    set_xattr(path, UPLOADER_XATTR, username)
}

/// The SFTP user who uploaded `path`: `None` when no login is recorded (a
/// file placed by an operator or another server); an error when one may be
/// recorded but cannot be read, so that callers fail closed.
pub fn uploader(path: &Path) -> io::Result<Option<String>> {
    get_xattr(path, UPLOADER_XATTR)
}

/// Records on a visible upload that `job_id` took it, so that neither the
/// watcher nor the start-up scan takes it again while it stays visible.
pub fn set_taken_by(path: &Path, job_id: &str) -> io::Result<()> {
    set_xattr(path, JOB_XATTR, job_id)
}

/// The job that took the upload at `path`, if one did.
pub fn taken_by(path: &Path) -> io::Result<Option<String>> {
    get_xattr(path, JOB_XATTR)
}

/// Removes the visible upload at `path` if it is the one `job_id` took;
/// returns whether it did. A newer upload that took the name is left alone:
/// the file is first renamed aside (atomically), checked there, and put
/// back (never over a still newer one) when it is not the job's.
pub fn remove_if_taken_by(path: &Path, job_id: &str) -> io::Result<bool> {
    let Some(dir) = path.parent() else { return Ok(false) };
    let aside = dir.join(format!("{RESERVED_PREFIX}gone.{job_id}"));
    match std::fs::rename(path, &aside) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        other => other?,
    }
    if taken_by(&aside)?.as_deref() == Some(job_id) {
        std::fs::remove_file(&aside)?;
        return Ok(true);
    }
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    if let Err(e) = renameat_with(CWD, &aside, CWD, path, RenameFlags::NOREPLACE) {
        // A still newer upload has the name: this one was superseded anyway.
        tracing::warn!(file = %path.display(), error = %e, "a superseded upload was left aside");
    }
    Ok(false)
}

fn set_xattr(path: &Path, name: &str, value: &str) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value.as_bytes(), rustix::fs::XattrFlags::empty()).map_err(io::Error::from)
}

fn get_xattr(path: &Path, name: &str) -> io::Result<Option<String>> {
    let mut buf = [0u8; 1024];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => String::from_utf8(buf[..n].to_vec()).map(Some).map_err(io::Error::other),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_reports_are_the_encrypted_ones_only_when_the_summary_says_so() {
        let names = ReportNames::of("May.csv.pgp", false);
        let plain = PublishedReports::of(&names, &serde_json::json!({"job_id": "j"}));
        assert_eq!(
            (plain.results.as_str(), plain.failed.as_str(), plain.encrypted),
            ("May.results.csv", "May.failed.csv", false)
        );
        // Signed but not encrypted reports: a `pgp` key with a signer only.
        let signed = PublishedReports::of(&names, &serde_json::json!({"pgp": {"signer": "ab12"}}));
        assert!(!signed.encrypted && signed.results == "May.results.csv");
        // The name is derived, never taken from the file.
        let sealed = PublishedReports::of(&names, &serde_json::json!({"pgp": {"results_file": "../../etc/passwd"}}));
        assert_eq!(
            (sealed.results.as_str(), sealed.failed.as_str(), sealed.encrypted),
            ("May.results.csv.pgp", "May.failed.csv.pgp", true)
        );
        let dry =
            PublishedReports::of(&ReportNames::of("May.csv", true), &serde_json::json!({"pgp": {"results_file": "x"}}));
        assert_eq!(dry.results, "May.validation.csv.pgp");
    }

    #[test]
    fn a_node_knows_its_own_upload_temps_and_no_other() {
        let temp = upload_temp_name("web01", "0a1b2c3d4e5f6a7b");
        assert!(is_upload_temp_of(&temp, "web01"));
        assert!(!is_upload_temp_of(&temp, "web0"));
        assert!(!is_upload_temp_of(&upload_temp_name("web01.eu", "0a1b"), "web01"));
        assert!(is_upload_temp_of(&upload_temp_name("web01.eu", "0a1b"), "web01.eu"));
        assert!(!is_upload_temp_of(".intake-upload.0a1b2c3d", "web01"), "an older release's temp");
        assert!(is_reserved_name(&temp));
    }

    #[test]
    fn the_report_name_drops_the_csv_extension_in_any_case() {
        assert_eq!(report_stem("May.CSV"), "May");
        assert_eq!(report_stem("a.b.csv"), "a.b");
        assert_eq!(report_stem(".csv"), ".csv");
    }

    #[test]
    fn a_compressed_upload_reports_under_the_plain_name() {
        assert!(is_upload_name("May.csv.gz") && is_upload_name("May.CSV.GZ"));
        assert!(!is_upload_name("May.gz") && !is_upload_name("May.csv.gz.part"));
        for pgp in ["May.csv.pgp", "May.CSV.GPG", "May.csv.asc", "May.csv.gz.pgp"] {
            assert!(is_upload_name(pgp), "{pgp}");
            assert_eq!(ReportNames::of(pgp, false), ReportNames::of("May.csv", false), "{pgp}");
        }
        assert!(!is_upload_name("May.pgp") && !is_upload_name("May.csv.pgp.part"));
        assert_eq!(report_stem("May.CSV.GZ"), "May");
        assert_eq!(ReportNames::of("May.csv.gz", false), ReportNames::of("May.csv", false));
    }

    #[test]
    fn a_dry_run_never_shares_a_report_name_with_an_import() {
        let (import, dry) = (ReportNames::of("May.csv", false), ReportNames::of("May.csv", true));
        assert_eq!(import.results, "May.results.csv");
        assert_eq!(import.summary, "May.summary.json");
        assert_eq!(dry.results, "May.validation.csv");
        assert_eq!(dry.summary, "May.validation.json");
        let imports = [&import.results, &import.summary, &import.progress, &import.failed];
        for name in [&dry.results, &dry.summary, &dry.progress, &dry.failed] {
            assert!(!imports.contains(&name), "{name}");
        }
        // Nor with another upload's: `May.validation.csv` reports as `May.validation.*`.
        let other = ReportNames::of("May.validation.csv", false);
        for name in [&other.results, &other.summary, &other.progress, &other.failed] {
            assert!(![&dry.results, &dry.summary, &dry.progress, &dry.failed].contains(&name), "{name}");
        }
    }

    #[test]
    fn only_visible_csv_names_are_uploads() {
        assert!(is_upload_name("May.CSV"));
        assert!(!is_upload_name(".intake-upload.x.May.csv"));
        assert!(!is_upload_name("May.csv.filepart"));
        assert!(!is_upload_name(".csv"));
    }

    #[test]
    fn names_that_end_inside_a_multibyte_character_are_handled() {
        for name in ["顧客", "客户", "x€€", "€", "a顧客.csv"] {
            let _ = is_upload_name(name);
            let _ = report_stem(name);
            let _ = upload_name_problem(name);
        }
        assert!(is_upload_name("顧客.csv"));
        assert_eq!(report_stem("顧客.CSV"), "顧客");
    }

    #[test]
    fn a_long_name_is_refused_and_every_derived_name_of_an_accepted_one_fits() {
        let long = format!("{}.csv", "顧".repeat(80));
        assert!(long.len() > MAX_UPLOAD_NAME_BYTES);
        assert!(upload_name_problem(&long).is_some());
        let longest = format!("{}.csv", "x".repeat(MAX_UPLOAD_NAME_BYTES - 4));
        assert!(upload_name_problem(&longest).is_none());
        let stem = report_stem(&longest);
        assert!(stem.len() + LONGEST_REPORT_SUFFIX <= MAX_NAME_BYTES);
        assert!(archive_name("20261126T100000Z", "0190-abcdef12", &longest).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn a_name_placed_by_another_server_is_shortened_to_fit() {
        let name = format!("{}.csv", "顧".repeat(84));
        let stem = report_stem(&name);
        assert!(stem.len() + LONGEST_REPORT_SUFFIX <= MAX_NAME_BYTES, "{}", stem.len());
        assert!(stem.contains('~'));
        assert_ne!(report_stem(&format!("{}x.csv", "顧".repeat(84))), stem);
        assert!(archive_name("20261126T100000Z", "abcdef12", &name).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn names_that_only_look_like_csv_are_refused_and_client_temps_are_not() {
        for name in [
            "x.csv ",
            "y.csv.",
            "y.csv..",
            "z.csv\u{200B}",
            "w.\u{0441}sv",
            "v.cs\u{0475}",
            "u.csv.gz ",
            "t\u{FF0E}csv",
            "s.csv\u{FEFF}",
        ] {
            assert!(upload_name_problem(name).is_some(), "{name:?}");
        }
        for name in [
            "x.csv",
            "x.CSV.gz",
            "x.csv.filepart",
            ".in.x.csv",
            ".in.x.csv.",
            "x.csv.part",
            "x.csv~",
            "notes.txt",
            "顧客.csv",
            "x.csv.tmp ",
        ] {
            assert!(upload_name_problem(name).is_none(), "{name:?}");
        }
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(upload_name_problem("a\nb.csv").is_some());
        assert!(upload_name_problem("a\u{7f}.csv").is_some());
    }

    #[test]
    fn only_the_upload_a_job_took_is_removed_never_a_newer_one_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "newer").unwrap();
        set_taken_by(&path, "job-2").unwrap();
        assert!(!remove_if_taken_by(&path, "job-1").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer", "put back where it was");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing left aside");
        assert!(remove_if_taken_by(&path, "job-2").unwrap());
        assert!(!path.exists());
        assert!(!remove_if_taken_by(&path, "job-2").unwrap(), "already gone is fine");
    }

    #[test]
    fn a_failed_publish_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        // The target is a non-empty folder: the rename fails.
        std::fs::write(dir.path().join("taken/inside"), "x").unwrap();
        assert!(publish_atomically(&dir.path().join("taken"), b"report").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["taken"]);
    }
}
