//! Log lines that user text cannot forge: every field and message of the
//! text format is written with its control characters (CR, LF, ESC, C1)
//! and bidi controls escaped (`\u{1b}`), so a file name, a cell or a ref
//! never starts a line of its own, moves the cursor or clears an
//! operator's terminal, whatever the call site wrote. The JSON format
//! escapes C0 itself; C1 and bidi controls are escaped there as `\u009b`.

use crate::domain::shown::{is_unprintable, printable};
use std::io::{self, Write};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

/// Starts logging to stderr: `json` lines or text (coloured when `ansi`).
pub fn init(json: bool, filter: tracing_subscriber::EnvFilter, ansi: bool) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().with_writer(|| Escaping(io::stderr())).init();
    } else {
        builder.fmt_fields(escaped_fields()).with_ansi(ansi).with_writer(io::stderr).init();
    }
}

/// The text format's fields, each escaped (`name=value`; the message bare).
pub fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let text = format!("{value:?}");
            if field.name() == "message" {
                write!(w, "{}", printable(&text))
            } else {
                write!(w, "{}={}", field.name(), printable(&text))
            }
        },
    )
    .delimited(" ")
}

/// Writes JSON log lines with C1 and bidi controls escaped (valid JSON:
/// they only ever appear inside strings); the line's own newline stays.
pub struct Escaping<W>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) if text.chars().any(|c| c != '\n' && is_unprintable(c)) => {
                let mut out = String::with_capacity(text.len() + 16);
                for c in text.chars() {
                    if c != '\n' && is_unprintable(c) {
                        out.push_str(&format!("\\u{:04x}", u32::from(c)));
                    } else {
                        out.push(c);
                    }
                }
                self.0.write_all(out.as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_their_newline_and_escape_c1_and_bidi() {
        let mut out = Escaping(Vec::new());
        out.write_all("{\"file\":\"a\u{202e}b\u{9b}c\"}\n".as_bytes()).unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(text, "{\"file\":\"a\\u202eb\\u009bc\"}\n");
        let parsed: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(parsed["file"], "a\u{202e}b\u{9b}c", "the same text, read back");
    }
}
