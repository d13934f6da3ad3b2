//! `intake check`: a file validated offline, as a merchant or support
//! person would before uploading; needs no database, writes nothing.

use anyhow::{Context as _, Result};
use intake::config::Config;
use intake::domain::shown::printable;
use intake::domain::AccountSettings;
use intake::ingest::{self};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub fn check(
    file: &Path,
    region: Option<String>,
    encoding: Option<String>,
    phone_check: Option<String>,
    mapping: Option<&Path>,
    config: &Config,
) -> Result<ExitCode> {
    let mut account =
        AccountSettings::from_text("check", region.as_deref(), encoding.as_deref(), phone_check.as_deref())?;
    if let Some(path) = mapping {
        let bytes = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("mapping");
        let name: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).take(64).collect();
        let name = if name.is_empty() || name.starts_with('.') { "mapping".to_owned() } else { name };
        let profile = intake::domain::mapping::Profile::parse(&name, &bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let file_name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        account.mapping = intake::domain::mapping::MappingChoice::Select {
            file_name,
            profiles: std::sync::Arc::new(vec![std::sync::Arc::new(profile)]),
        };
    }
    let mut out = std::io::stdout().lock();
    let outcome = ingest::check::check_file(file, &account, config.file_limits(), |row| {
        if let Err(errors) = &row.outcome {
            for (i, e) in errors.iter().enumerate() {
                let lead =
                    if i == 0 { format!("line {}", row.line) } else { " ".repeat(format!("line {}", row.line).len()) };
                // The file's text never reaches the terminal as escape sequences.
                let field = if e.field.is_empty() { String::new() } else { format!(" [{}]", printable(&e.field)) };
                let _ = writeln!(out, "{lead}: {}{field}: {}", e.code, printable(&e.message));
            }
        }
    })
    .with_context(|| format!("while reading {}", file.display()))?;
    if let Some(applied) = &outcome.mapping {
        writeln!(
            out,
            "mapping {} (sha256 {}); ignored columns: {}",
            printable(&applied.profile.name),
            applied.profile.sha256(),
            // The file's own column names.
            if applied.ignored.is_empty() {
                "none".to_owned()
            } else {
                printable(&applied.ignored.join(", ")).into_owned()
            }
        )?;
    }
    if let Some(rejection) = outcome.rejection {
        writeln!(out, "rejected: {}: {}", rejection.code.code(), printable(&rejection.message))?;
        return Ok(ExitCode::from(2));
    }
    writeln!(out, "{} rows: {} valid, {} failing", outcome.rows, outcome.rows - outcome.failed, outcome.failed)?;
    Ok(if outcome.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
