//! Property tests for the upload-name functions of `intake::mailbox` over
//! arbitrary Unicode names, biased towards what breaks byte-wise code:
//! multi-byte characters, names near the length limits, `.csv` in any case.

use intake::mailbox::{archive_name, is_upload_name, report_stem, upload_name_problem, MAX_NAME_BYTES};
use intake::sftp::resolve_for_fuzzing;
use proptest::prelude::*;

const LONGEST_REPORT_SUFFIX: usize = ".validation.json".len();
const RECEIVED: &str = "20261126T100000Z";
const JOB: &str = "0190abcd-0000-7000-8000-0123456789ab";

/// One character of 1, 2, 3 or 4 bytes, a control character now and then.
fn a_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => Just('.'),
        2 => proptest::char::range('\u{80}', '\u{7ff}'),
        3 => proptest::char::range('\u{3000}', '\u{9fff}'),
        2 => proptest::char::range('\u{1f300}', '\u{1faff}'),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => any::<char>(),
    ]
}

/// Up to `max` characters (up to 4 × `max` bytes).
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(a_char(), 0..=max).prop_map(String::from_iter)
}

/// A file name: any text, usually with a `.csv` extension in some case.
fn a_name() -> impl Strategy<Value = String> {
    let extension = prop_oneof![Just(""), Just(".csv"), Just(".CSV"), Just(".Csv"), Just(".csv.part")];
    (text(120), extension).prop_map(|(stem, ext)| stem + ext)
}

/// Every name derived from `name` that intake may create fits in 255 bytes.
fn assert_derived_names_fit(name: &str) -> Result<(), TestCaseError> {
    let stem = report_stem(name);
    prop_assert!(stem.len() + LONGEST_REPORT_SUFFIX <= MAX_NAME_BYTES, "{name:?}: stem of {} bytes", stem.len());
    prop_assert!(!stem.is_empty());
    let archived = archive_name(RECEIVED, JOB, name);
    prop_assert!(archived.len() <= MAX_NAME_BYTES, "{name:?}: archive name of {} bytes", archived.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn nothing_panics_on_any_string(name in any::<String>()) {
        let _ = is_upload_name(&name);
        let _ = upload_name_problem(&name);
        let _ = report_stem(&name);
        let _ = archive_name(RECEIVED, JOB, &name);
        let _ = resolve_for_fuzzing(&name);
    }

    #[test]
    fn every_derived_name_of_an_accepted_upload_fits(name in a_name()) {
        if is_upload_name(&name) && upload_name_problem(&name).is_none() {
            prop_assert!(!name.chars().any(char::is_control));
            assert_derived_names_fit(&name)?;
        }
    }

    /// What the SFTP server lets a client name in `/customers` (the jail
    /// resolves it, `upload_name_problem` has nothing against it) and the
    /// watcher takes as an upload: every derived name fits.
    #[test]
    fn every_name_the_jail_accepts_yields_names_that_fit(name in a_name()) {
        let Some(display) = resolve_for_fuzzing(&format!("/customers/{name}")) else { return Ok(()) };
        let Some(file_name) = display.strip_prefix("/customers/") else { return Ok(()) };
        if file_name.contains('/') || upload_name_problem(file_name).is_some() || !is_upload_name(file_name) {
            return Ok(());
        }
        assert_derived_names_fit(file_name)?;
    }

    /// Names placed by another server can be any length: shortened, they fit too.
    #[test]
    fn a_name_of_any_length_is_shortened_to_fit(stem in text(300), ext in prop_oneof![Just(".csv"), Just("")]) {
        let name = stem + ext;
        let short = report_stem(&name);
        prop_assert!(short.len() + LONGEST_REPORT_SUFFIX <= MAX_NAME_BYTES);
        prop_assert!(archive_name(RECEIVED, JOB, &name).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn report_stem_is_deterministic(name in a_name()) {
        prop_assert_eq!(report_stem(&name), report_stem(&name));
        prop_assert_eq!(archive_name(RECEIVED, JOB, &name), archive_name(RECEIVED, JOB, &name));
    }

    /// Two long names that share everything the shortened stem keeps still
    /// get two stems (a hash of the whole name tells them apart).
    #[test]
    fn distinct_long_names_get_distinct_stems(common in text(80), a in text(20), b in text(20)) {
        prop_assume!(a != b);
        // Past every limit, so that both are shortened to the same prefix.
        let long = format!("{}{common}", "顧".repeat(90));
        let (first, second) = (format!("{long}{a}.csv"), format!("{long}{b}.csv"));
        prop_assert_ne!(report_stem(&first), report_stem(&second));
        prop_assert_ne!(archive_name(RECEIVED, JOB, &first), archive_name(RECEIVED, JOB, &second));
    }
}
