//! Mapping profiles: how the columns of a merchant's own export map onto the
//! CSV vocabulary (`ref`, the address columns, `metadata.KEY`, ...). Parsing
//! and checking a profile, the rule that picks one for a header, the
//! built-in presets and the profile suggested for a rejected header. Pure:
//! no I/O, nothing from the rest of the crate but the domain.
//!
//! A profile is small and bounded before it is parsed: at most
//! [`MAX_PROFILE_BYTES`] of UTF-8 text, [`MAX_ENTRIES`] entries in all, TOML
//! nesting bounded by the TOML parser's own recursion limit, a glob of at
//! most [`MAX_GLOB_BYTES`].

pub mod presets;
pub mod suggest;

use super::customer::PhoneRegion;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use toml::Spanned;

/// The largest profile text, in bytes.
pub const MAX_PROFILE_BYTES: usize = 256 * 1024;
/// Entries of a profile in all: column sources, targets, ignored columns,
/// constants and fallback sources.
pub const MAX_ENTRIES: usize = 5000;
/// The longest `files` glob, in bytes.
pub const MAX_GLOB_BYTES: usize = 256;
/// The longest source column name or constant value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// The longest profile name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a profile text is not a profile: the line (1-based, when known) and
/// the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(line), false) => write!(f, "line {line}, key `{}`: {}", self.key, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "key `{}`: {}", self.key, self.message),
            (None, true) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ProfileError {}

/// Checks a profile's name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("a mapping name is 1 to {MAX_NAME_LEN} letters, digits, `.`, `_` or `-` (not first)"))
    }
}

/// How a header column name is compared: trimmed, lower case.
pub fn normalise(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A target column of the CSV vocabulary, as a profile names it: fixed names
/// and the `metadata.`/`appdata.` prefixes are case-insensitive, a key keeps
/// its case. `None` when it is no column of the vocabulary.
pub fn canonical_target(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let lower = trimmed.to_lowercase();
    match lower.as_str() {
        "ref" | "address" | "addresses" | "email" | "phone" | "metadata" | "appdata" => return Some(lower),
        _ => {}
    }
    if let Some(n) = lower.strip_prefix("address_") {
        let n: usize = n.parse().ok().filter(|_| !n.starts_with('0'))?;
        return (1..=10).contains(&n).then_some(lower);
    }
    for prefix in ["metadata.", "appdata."] {
        if lower.starts_with(prefix) {
            let keys = &trimmed[prefix.len()..];
            if keys.split('.').any(|k| k.is_empty()) {
                return None;
            }
            return Some(format!("{prefix}{keys}"));
        }
    }
    None
}

/// Whether a target takes one source only (every one but `addresses`).
fn single_valued(target: &str) -> bool {
    target != "addresses"
}

fn is_address(target: &str) -> bool {
    matches!(target, "address" | "addresses" | "email" | "phone") || target.starts_with("address_")
}

/// A checked profile. Two profiles are equal when their names, origin and
/// texts are.
#[derive(Clone)]
pub struct Profile {
    pub name: String,
    /// A built-in preset, not one of the account's own.
    pub preset: bool,
    text: Arc<str>,
    sha256: String,
    files: Option<(String, globset::GlobMatcher)>,
    pub default_region: Option<PhoneRegion>,
    pub strip_apostrophe: bool,
    /// Normalised source column → its targets, in the order written.
    columns: HashMap<String, Vec<String>>,
    ignore: HashSet<String>,
    /// Target → value, in target order.
    constants: BTreeMap<String, String>,
    /// Target → normalised source columns, in the order written.
    fallback: BTreeMap<String, Vec<String>>,
}

impl PartialEq for Profile {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.preset == other.preset && self.text == other.text
    }
}

impl Eq for Profile {}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile").field("name", &self.name).field("preset", &self.preset).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    files: Option<Spanned<String>>,
    default_region: Option<Spanned<String>>,
    strip_apostrophe: Option<bool>,
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    #[serde(default)]
    columns: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    constants: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    fallback: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>,
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

impl Profile {
    /// Parses and checks a profile's text (bytes as uploaded: invalid UTF-8 is refused).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Profile, ProfileError> {
        Self::parse_as(name, bytes, false)
    }

    pub(crate) fn parse_as(name: &str, bytes: &[u8], preset: bool) -> Result<Profile, ProfileError> {
        let whole = |message: String| ProfileError { line: None, key: String::new(), message };
        check_name(name).map_err(whole)?;
        if bytes.len() > MAX_PROFILE_BYTES {
            return Err(whole(format!("the profile is {} bytes; the limit is {MAX_PROFILE_BYTES}", bytes.len())));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| ProfileError {
            line: Some(bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1),
            key: String::new(),
            message: "the profile is not UTF-8 text".to_owned(),
        })?;
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError {
            line: e.span().map(|s| line_of(text, s.start)),
            key: String::new(),
            message: e.message().trim().to_owned(),
        })?;
        let at = |span: std::ops::Range<usize>, key: &str, message: String| ProfileError {
            line: Some(line_of(text, span.start)),
            key: key.chars().take(80).collect(),
            message,
        };
        let entries = raw.ignore.len()
            + raw.constants.len()
            + raw.columns.values().map(|t| 1 + t.get_ref().as_array().map_or(1, Vec::len)).sum::<usize>()
            + raw.fallback.values().map(|s| 1 + s.get_ref().len()).sum::<usize>();
        if entries > MAX_ENTRIES {
            return Err(whole(format!("the profile has {entries} entries; the limit is {MAX_ENTRIES}")));
        }
        let files = match raw.files {
            None => None,
            Some(glob) => {
                let pattern = glob.get_ref();
                if pattern.len() > MAX_GLOB_BYTES || pattern.is_empty() {
                    return Err(at(glob.span(), "files", format!("the glob must be 1 to {MAX_GLOB_BYTES} bytes long")));
                }
                let matcher = globset::GlobBuilder::new(pattern)
                    .case_insensitive(true)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| at(glob.span(), "files", format!("invalid glob: {}", e.kind())))?
                    .compile_matcher();
                Some((pattern.clone(), matcher))
            }
        };
        let default_region = match raw.default_region {
            None => None,
            Some(r) => {
                Some(PhoneRegion::parse(r.get_ref()).map_err(|e| at(r.span(), "default_region", e.to_string()))?)
            }
        };
        let mut targets_seen: HashMap<String, String> = HashMap::new();
        let mut columns: HashMap<String, Vec<String>> = HashMap::new();
        let mut sources_seen: HashMap<String, String> = HashMap::new();
        let check_source = |key: &Spanned<String>, section: &str| -> Result<String, ProfileError> {
            let source = normalise(key.get_ref());
            if source.is_empty() || key.get_ref().len() > MAX_VALUE_BYTES {
                return Err(at(
                    key.span(),
                    key.get_ref(),
                    format!("a column name in [{section}] must be 1 to {MAX_VALUE_BYTES} bytes"),
                ));
            }
            Ok(source)
        };
        // In the order written, so that a clash names the later line.
        let by_line = |a: &Spanned<String>, b: &Spanned<String>| a.span().start.cmp(&b.span().start);
        let mut columns_written: Vec<_> = raw.columns.iter().collect();
        columns_written.sort_by(|a, b| by_line(a.0, b.0));
        let mut constants_written: Vec<_> = raw.constants.iter().collect();
        constants_written.sort_by(|a, b| by_line(a.0, b.0));
        let mut fallback_written: Vec<_> = raw.fallback.iter().collect();
        fallback_written.sort_by(|a, b| by_line(a.0, b.0));
        for (key, targets) in columns_written {
            let source = check_source(key, "columns")?;
            if let Some(first) = sources_seen.insert(source.clone(), key.get_ref().clone()) {
                return Err(at(
                    key.span(),
                    key.get_ref(),
                    format!("the same column as `{first}` (names match case-insensitively)"),
                ));
            }
            let not_text = || at(targets.span(), key.get_ref(), "a target is a string or a list of strings".into());
            let list: Vec<&str> = match targets.get_ref() {
                toml::Value::String(t) => vec![t.as_str()],
                toml::Value::Array(ts) => {
                    ts.iter().map(|t| t.as_str().ok_or_else(not_text)).collect::<Result<_, _>>()?
                }
                _ => return Err(not_text()),
            };
            if list.is_empty() {
                return Err(at(targets.span(), key.get_ref(), "a column needs at least one target".into()));
            }
            let mut mine = Vec::new();
            for t in list {
                let target = canonical_target(t).ok_or_else(|| {
                    at(
                        targets.span(),
                        key.get_ref(),
                        format!(
                            "unknown target `{}`; targets are ref, address, addresses, address_1..address_10, \
                             email, phone, metadata, metadata.KEY, appdata, appdata.KEY",
                            t.chars().take(80).collect::<String>()
                        ),
                    )
                })?;
                if single_valued(&target) {
                    if let Some(other) = targets_seen.insert(target.clone(), key.get_ref().clone()) {
                        return Err(at(
                            targets.span(),
                            key.get_ref(),
                            format!("`{target}` is already mapped from `{other}`; it takes one column"),
                        ));
                    }
                }
                if mine.contains(&target) {
                    return Err(at(targets.span(), key.get_ref(), format!("`{target}` is listed twice")));
                }
                mine.push(target);
            }
            columns.insert(source, mine);
        }
        let mut ignore = HashSet::new();
        for key in &raw.ignore {
            let source = check_source(key, "ignore")?;
            if columns.contains_key(&source) {
                return Err(at(key.span(), "ignore", format!("`{}` is both mapped and ignored", key.get_ref())));
            }
            ignore.insert(source);
        }
        let mut constants = BTreeMap::new();
        for (key, value) in constants_written {
            let target = canonical_target(key.get_ref())
                .ok_or_else(|| at(key.span(), key.get_ref(), "unknown target for a constant".into()))?;
            if target == "ref" {
                return Err(at(
                    key.span(),
                    key.get_ref(),
                    "a constant cannot be the ref: every row would share it".into(),
                ));
            }
            if value.get_ref().len() > MAX_VALUE_BYTES {
                return Err(at(value.span(), key.get_ref(), format!("a constant is at most {MAX_VALUE_BYTES} bytes")));
            }
            if single_valued(&target) {
                if let Some(other) = targets_seen.insert(target.clone(), key.get_ref().clone()) {
                    return Err(at(key.span(), key.get_ref(), format!("`{target}` is already mapped from `{other}`")));
                }
            }
            constants.insert(target, value.get_ref().clone());
        }
        let mut fallback = BTreeMap::new();
        for (key, sources) in fallback_written {
            let target = canonical_target(key.get_ref())
                .filter(|t| t != "addresses")
                .ok_or_else(|| at(key.span(), key.get_ref(), "unknown or list target for a fallback".into()))?;
            if constants.contains_key(&target) {
                return Err(at(key.span(), key.get_ref(), "a constant is never empty: no fallback applies".into()));
            }
            if sources.get_ref().is_empty() {
                return Err(at(sources.span(), key.get_ref(), "a fallback lists at least one column".into()));
            }
            let mut list = Vec::new();
            for s in sources.get_ref() {
                let source = check_source(s, "fallback")?;
                if ignore.contains(&source) {
                    return Err(at(s.span(), key.get_ref(), format!("`{}` is ignored", s.get_ref())));
                }
                list.push(source);
            }
            fallback.insert(target, list);
        }
        let sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        };
        Ok(Profile {
            name: name.to_owned(),
            preset,
            text: Arc::from(text),
            sha256,
            files,
            default_region,
            strip_apostrophe: raw.strip_apostrophe.unwrap_or(true),
            columns,
            ignore,
            constants,
            fallback,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The hex SHA-256 of the profile's text.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether the profile's `files` glob matches an upload's file name.
    pub fn matches_file(&self, file_name: &str) -> bool {
        self.files.as_ref().is_some_and(|(_, m)| m.is_match(file_name))
    }

    pub fn files(&self) -> Option<&str> {
        self.files.as_ref().map(|(p, _)| p.as_str())
    }

    /// How this profile reads a header (names as in the file), or why it cannot:
    /// a column neither mapped nor ignored, or no `ref` or address at all.
    pub fn apply(self: &Arc<Self>, header: &[String]) -> Result<MappedHeader, String> {
        let names: Vec<String> = header.iter().map(|n| normalise(n)).collect();
        let position: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let mut columns = Vec::new();
        let mut ignored = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some(targets) = self.columns.get(name) {
                for target in targets {
                    let fallbacks = self.fallbacks(target, &position);
                    columns
                        .push(MappedColumn { target: target.clone(), feed: Feed::Cell { index: Some(i), fallbacks } });
                }
            } else if self.ignore.contains(name) {
                ignored.push(header[i].trim().to_owned());
            } else if self.fallback.values().any(|sources| sources.contains(name)) {
                // Read only where a fallback needs it.
            } else {
                let shown = if name.is_empty() { "(an empty name)".to_owned() } else { format!("`{name}`") };
                return Err(format!("the column {shown} is neither mapped nor ignored by mapping `{}`", self.name));
            }
        }
        // A target no column of this header feeds, read from its fallbacks.
        for target in self.fallback.keys() {
            if !columns.iter().any(|c| &c.target == target) {
                let fallbacks = self.fallbacks(target, &position);
                if !fallbacks.is_empty() {
                    columns.push(MappedColumn { target: target.clone(), feed: Feed::Cell { index: None, fallbacks } });
                }
            }
        }
        for (target, value) in &self.constants {
            columns.push(MappedColumn { target: target.clone(), feed: Feed::Constant(value.clone()) });
        }
        if !columns.iter().any(|c| c.target == "ref") {
            return Err(format!("mapping `{}` maps no column of this header to `ref`", self.name));
        }
        if !columns.iter().any(|c| is_address(&c.target)) {
            return Err(format!("mapping `{}` maps no column of this header to an address", self.name));
        }
        Ok(MappedHeader { profile: Arc::clone(self), source_names: names, columns, ignored })
    }

    fn fallbacks(&self, target: &str, position: &HashMap<&str, usize>) -> Vec<usize> {
        self.fallback
            .get(target)
            .map(|sources| sources.iter().filter_map(|s| position.get(s.as_str()).copied()).collect())
            .unwrap_or_default()
    }
}

/// Where a mapped column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// A cell of the record (`None`: only fallbacks), else the first
    /// non-empty of the fallback cells.
    Cell { index: Option<usize>, fallbacks: Vec<usize> },
    /// The same value on every row.
    Constant(String),
}

/// One column of the vocabulary as a profile produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedColumn {
    /// The target (canonical: `metadata.firstName` keeps its key's case).
    pub target: String,
    pub feed: Feed,
}

/// A header read through a profile: the columns of the vocabulary it gives,
/// in the merchant's header order (then fallback-only targets, then constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedHeader {
    pub profile: Arc<Profile>,
    /// The merchant's header, normalised.
    pub source_names: Vec<String>,
    pub columns: Vec<MappedColumn>,
    /// The columns dropped on purpose, as written in the header.
    pub ignored: Vec<String>,
}

impl MappedHeader {
    /// The merchant's (normalised) column a mapped column reads, for
    /// `error_field`; the target for a constant or a fallback-only column.
    pub fn field_name(&self, column: &MappedColumn) -> String {
        match &column.feed {
            Feed::Cell { index: Some(i), .. } => self.source_names[*i].clone(),
            _ => column.target.to_lowercase(),
        }
    }
}

/// A profile as applied to one file: the profile and the columns it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMapping {
    pub profile: Arc<Profile>,
    /// The header's ignored columns, as written in the file.
    pub ignored: Vec<String>,
}

/// The mapping an upload is read with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MappingChoice {
    /// None: the header must be the vocabulary (a file checked without a
    /// profile, a job that started with none or from before profiles).
    #[default]
    Unmapped,
    /// Pick one by [`select`] for the upload named `file_name`, among
    /// `profiles` (the account's by name, then its enabled presets).
    Select { file_name: String, profiles: Arc<Vec<Arc<Profile>>> },
    /// This one, picked when the job's first pass began: a job keeps the
    /// profile it started with.
    Chosen(AppliedMapping),
}

impl MappingChoice {
    /// The profile a file was read with, if any.
    pub fn applied(&self) -> Option<&AppliedMapping> {
        match self {
            MappingChoice::Chosen(applied) => Some(applied),
            _ => None,
        }
    }
}

/// Why no profile reads a header that the vocabulary alone does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The header is read as it is.
    Plain,
    Mapped(MappedHeader),
    /// A profile whose glob names the file does not explain its header.
    Refused(String),
}

/// Which profile reads a header: the first profile whose `files` glob
/// matches the upload's name; else none when the vocabulary reads the
/// header (`plain_ok`); else the first profile, in the order given (the
/// account's by name, then its presets), that explains every column and
/// maps a `ref` and an address.
pub fn select(profiles: &[Arc<Profile>], file_name: &str, header: &[String], plain_ok: bool) -> Selection {
    if let Some(p) = profiles.iter().find(|p| p.matches_file(file_name)) {
        return match p.apply(header) {
            Ok(mapped) => Selection::Mapped(mapped),
            Err(why) => Selection::Refused(format!("{why} (its `files` glob matches this file's name)")),
        };
    }
    if plain_ok {
        return Selection::Plain;
    }
    profiles.iter().find_map(|p| p.apply(header).ok()).map_or(Selection::Plain, Selection::Mapped)
}

#[cfg(test)]
mod tests;
