//! The profile suggested for a rejected header: every column mapped to its
//! most likely target by a table of synonyms, each guess commented, and a
//! `files` glob made from the upload's name, so that the suggestion uploaded
//! into `/mappings` unchanged reads the same file again.

use super::{canonical_target, normalise};
use std::collections::HashSet;

/// Header names (normalised) that mean an email column.
const EMAIL: &[&str] = &["email", "e-mail", "email address", "e-mail address", "mail", "email_address", "emailaddress"];
/// ... a phone column.
const PHONE: &[&str] = &[
    "phone",
    "mobile",
    "cell",
    "phone number",
    "telephone",
    "tel",
    "mobile phone",
    "cell phone",
    "mobile number",
    "phone_number",
    "mobile phone number",
    "telephone number",
    "cellphone",
    "phonenumber",
];
/// ... the customer's id.
const REF: &[&str] = &[
    "ref",
    "customer id",
    "customer number",
    "external id",
    "id",
    "customer_id",
    "customer ref",
    "customer reference",
    "reference",
    "reference id",
    "client id",
    "record id",
    "customer no",
    "customer no.",
    "externalid",
];

/// What the table guesses for one column, and why.
fn guess(name: &str) -> (&'static str, &'static str) {
    if REF.contains(&name) {
        ("ref", "an id column")
    } else if EMAIL.contains(&name) {
        ("email", "an email column")
    } else if PHONE.contains(&name) {
        ("phone", "a phone column")
    } else {
        ("", "")
    }
}

/// `First Name` → `first_name`: lower case, runs of other characters as one `_`.
pub fn snake_case(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out.chars().take(64).collect()
}

/// A glob for uploads named like `file_name`: runs of digits (dates,
/// counters) become `*`, glob metacharacters `?`.
pub fn name_pattern(file_name: &str) -> String {
    let mut out = String::new();
    for c in file_name.chars().take(200) {
        if c.is_ascii_digit() {
            if !out.ends_with('*') {
                out.push('*');
            }
        } else if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' | ',') || c.is_control() {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A TOML basic string (usable as a key and as a value).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A complete profile mapping every column of `header` (names as in the
/// file), for the upload named `file_name`.
pub fn suggest(header: &[String], file_name: &str) -> String {
    let mut lines = vec![
        "# A mapping suggested by intake for the columns of this file.".to_owned(),
        "# Check each guess, adjust it, and upload this file into /mappings/;".to_owned(),
        "# then upload the CSV file again. Targets: ref, email, phone, address,".to_owned(),
        "# address_1..address_10, addresses, metadata.KEY, appdata.KEY.".to_owned(),
        format!("files = {}", quoted(&name_pattern(file_name))),
        String::new(),
        "[columns]".to_owned(),
    ];
    let mut used: HashSet<String> = HashSet::new();
    let mut seen_sources: HashSet<String> = HashSet::new();
    let mut next_address = 1;
    let mut entries: Vec<(String, Vec<String>, String)> = Vec::new();
    for (i, raw) in header.iter().enumerate() {
        let name = normalise(raw);
        if !seen_sources.insert(name.clone()) {
            continue;
        }
        let shown = raw.trim();
        if shown.is_empty() {
            lines.push(format!("# column {} has no name: give it one in the file to map it", i + 1));
            continue;
        }
        let (mut target, mut why) = match canonical_target(shown) {
            // The vocabulary's own names map to themselves.
            Some(t) => (t, "already a column name intake knows".to_owned()),
            None => {
                let (t, why) = guess(&name);
                (t.to_owned(), why.to_owned())
            }
        };
        if !target.is_empty() && target != "addresses" && used.contains(&target) {
            if matches!(target.as_str(), "email" | "phone" | "address") || target.starts_with("address_") {
                // A second address column: one more ordered address.
                while used.contains(&format!("address_{next_address}")) && next_address <= 10 {
                    next_address += 1;
                }
                why = format!("another {target} column: one more address, in header order");
                target = if next_address <= 10 { format!("address_{next_address}") } else { String::new() };
            } else {
                target = String::new();
            }
        }
        if target.is_empty() {
            let mut key = snake_case(shown);
            if key.is_empty() {
                key = format!("column_{}", i + 1);
            }
            let mut candidate = format!("metadata.{key}");
            let mut n = 2;
            while used.contains(&candidate) {
                candidate = format!("metadata.{key}_{n}");
                n += 1;
            }
            target = candidate;
            if why.is_empty() {
                why = "not a known name: kept as metadata".to_owned();
            }
        }
        used.insert(target.clone());
        entries.push((shown.to_owned(), vec![target], why));
    }
    // No id column: the email (else the phone) is the ref as well.
    if !used.contains("ref") {
        let key = entries
            .iter()
            .position(|(_, t, _)| t[0] == "email")
            .or_else(|| entries.iter().position(|(_, t, _)| t[0] == "phone"));
        if let Some(i) = key {
            entries[i].1.insert(0, "ref".to_owned());
            entries[i].2 = format!("{}; no id column, so it is the ref too", entries[i].2);
        }
    }
    for (source, targets, why) in &entries {
        let value = if targets.len() == 1 {
            quoted(&targets[0])
        } else {
            format!("[{}]", targets.iter().map(|t| quoted(t)).collect::<Vec<_>>().join(", "))
        };
        lines.push(format!("# {why}"));
        lines.push(format!("{} = {value}", quoted(source)));
    }
    if !entries.iter().any(|(_, t, _)| t.iter().any(|t| t == "ref")) {
        lines.push("# No column looks like an id: map one of them to \"ref\".".to_owned());
    }
    lines.push(String::new());
    lines.join("\n")
}
