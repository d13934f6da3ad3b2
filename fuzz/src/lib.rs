//! What each fuzz target checks, one function per target, over arbitrary
//! bytes. The libFuzzer binaries in `fuzz_targets/` call these, and
//! `tests/it/fuzz_corpus.rs` includes this file with `#[path]` to replay
//! `fuzz/corpus/*` and `fuzz/regressions/*` under plain `cargo test`, so
//! this file uses nothing but `intake` and std.
//!
//! A check fails by panicking: a panic inside intake, or an invariant below
//! that does not hold.

use intake::domain::{
    AccountSettings, Address, AddressKind, EmailAddress, FileEncoding, PhoneCheck, PhoneNumber, PhoneRegion,
    RowErrorCode,
};
use intake::ingest::rows::{scan, scan_with, FileLimits, RowReader};
use intake::mailbox::{archive_name, is_upload_name, report_stem, upload_name_problem};

/// The longest file name intake may create.
const MAX_NAME_BYTES: usize = 255;
/// No message may echo a whole cell: they quote at most 60 characters of a
/// value and a header name (at most 1,024 bytes) a few times.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 + 512;

/// The regions a fuzz input can pick (index 0: no default region).
const REGIONS: [Option<&str>; 4] = [None, Some("US"), Some("GB"), Some("DE")];

fn region(bits: u8) -> Option<PhoneRegion> {
    REGIONS[bits as usize % REGIONS.len()].map(|code| PhoneRegion::parse(code).expect("a known region"))
}

fn check_of(bit: bool) -> PhoneCheck {
    PhoneCheck::parse(if bit { "valid" } else { "possible" }).expect("a known check")
}

/// `rows`: the bytes as an upload, with the account settings and (sometimes
/// small) limits taken from the first three bytes.
///
/// Byte 0: bit 0 encoding, bits 1-2 default region, bit 3 phone check,
/// bit 4 a small record limit (from byte 1), bit 5 a small column limit
/// (from byte 2), bit 6 a small row limit (from byte 1).
pub fn rows(data: &[u8]) {
    let (settings, file) = match data {
        [a, b, c, rest @ ..] => ([*a, *b, *c], rest),
        _ => ([0, 0, 0], data),
    };
    let [flags, record_bits, column_bits] = settings;
    let account = AccountSettings {
        avid: intake::domain::AccountId::parse("fuzz").expect("valid"),
        default_region: region(flags >> 1),
        encoding: FileEncoding::parse(if flags & 1 == 0 { "utf-8" } else { "windows-1252" }).expect("known"),
        phone_check: check_of(flags & 8 != 0),
        report_bom: false,
        mapping: Default::default(),
        pgp: Default::default(),
        pgp_signer: None,
    };
    let mut limits = FileLimits::default();
    if flags & 16 != 0 {
        limits.max_record_bytes = 1 + record_bits as usize * 16;
    }
    if flags & 32 != 0 {
        limits.max_columns = 1 + (column_bits as usize & 15);
    }
    if flags & 64 != 0 {
        limits.max_rows = (record_bits & 7) as u64;
    }

    let scanned = scan(file, &account, limits).expect("reading from memory cannot fail");
    assert_eq!(scanned.bytes, file.len() as u64, "scan saw every byte");
    if scanned.rejection.is_some() {
        return;
    }
    let mut reader = match RowReader::open(file, account, limits).expect("reading from memory cannot fail") {
        Ok(reader) => reader,
        Err(e) => panic!("scan accepted the file but the reader rejects it: {e:?}"),
    };
    let mut count = 0u64;
    let mut last_line = 1u64;
    let mut claims = std::collections::HashMap::new();
    while let Some(mut row) =
        reader.next_row().unwrap_or_else(|e| panic!("scan accepted the file but row {} fails: {e}", count + 1))
    {
        count += 1;
        assert!(row.line >= 2, "row {count} is on line {}", row.line);
        assert!(row.line > last_line, "row {count} is on line {} after line {last_line}", row.line);
        last_line = row.line;
        assert!(row.bytes <= file.len() + 1, "row {count} claims {} bytes", row.bytes);
        if let Err(errors) = &row.outcome {
            assert!(!errors.is_empty(), "row {count} failed without an error");
            for e in errors {
                assert!(e.message.len() <= MAX_MESSAGE_BYTES, "row {count}: a {}-byte message", e.message.len());
            }
        }
        if let Some(claim) = row.claim.clone() {
            match claims.get(&claim) {
                Some(&first) => {
                    row.mark_duplicate(first);
                    let errors = row.outcome.as_ref().expect_err("a duplicate fails its row");
                    assert!(errors.iter().any(|e| e.code == RowErrorCode::DuplicateRef));
                }
                None => {
                    claims.insert(claim, row.line);
                }
            }
        }
    }
    assert_eq!(count, scanned.records, "scan counted {} records, the reader yields {count}", scanned.records);
}

/// `names`: the bytes (lossily UTF-8) as an upload's file name.
pub fn names(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    name_invariants(&name);
    // The same through every split of a multi-byte character at the end:
    // SFTP names arrive as bytes and may be cut anywhere.
    if let Ok(name) = std::str::from_utf8(data) {
        for end in (0..name.len()).rev().take(4).filter(|&i| name.is_char_boundary(i)) {
            name_invariants(&name[..end]);
        }
    }
}

/// What must hold for any string as a file name.
pub fn name_invariants(name: &str) {
    let upload = is_upload_name(name);
    let problem = upload_name_problem(name);
    let stem = report_stem(name);
    assert_eq!(report_stem(name), stem, "report_stem is deterministic");
    let archived = archive_name("20261126T100000Z", "0190abcd-0000-7000-8000-0123456789ab", name);
    if upload && problem.is_none() {
        for dry_run in [false, true] {
            let names = intake::mailbox::ReportNames::of(name, dry_run);
            for report in [&names.results, &names.summary, &names.progress, &names.failed] {
                assert!(report.len() <= MAX_NAME_BYTES, "{name:?} is accepted but reports as {report:?}");
            }
        }
        assert!(archived.len() <= MAX_NAME_BYTES, "{name:?} is accepted but archives as {} bytes", archived.len());
        assert!(!name.chars().any(char::is_control));
        assert!(!stem.is_empty());
    }
    if problem.is_none() {
        assert!(!name.chars().any(char::is_control), "{name:?} has a control character and is accepted");
    }
}

/// `jail`: the bytes (lossily UTF-8) as a client path.
pub fn jail(data: &[u8]) {
    let path = String::from_utf8_lossy(data);
    let Some(display) = intake::sftp::resolve_for_fuzzing(&path) else { return };
    assert!(display.starts_with('/'), "{path:?} resolves to {display:?}");
    assert!(!display.contains('\0'));
    if display != "/" {
        for part in display[1..].split('/') {
            assert!(!part.is_empty() && part != "." && part != "..", "{path:?} resolves to {display:?}");
            assert!(part.len() <= MAX_NAME_BYTES, "{path:?} resolves to a {}-byte name", part.len());
        }
        let first = display[1..].split('/').next().unwrap_or_default();
        assert!(["customers", "outbox", "archive"].contains(&first), "{path:?} resolves to {display:?}");
        let reserved = display[1..].split('/').skip(1).any(intake::mailbox::is_reserved_name);
        assert!(!reserved, "{path:?} reaches a name reserved for intake's own files");
    }
    if display.len() <= 4096 {
        // (A relative path of exactly 4,096 bytes displays as 4,097 and is then over the limit.)
        assert_eq!(
            intake::sftp::resolve_for_fuzzing(&display).as_deref(),
            Some(display.as_str()),
            "resolving {display:?} (from {path:?}) again changes it"
        );
    }
}

/// `addresses`: byte 0 picks the region and the check, the rest (lossily
/// UTF-8) is one address cell.
pub fn addresses(data: &[u8]) {
    let (flags, rest) = data.split_first().map(|(f, r)| (*f, r)).unwrap_or((0, data));
    let region = region(flags);
    let check = check_of(flags & 4 != 0);
    let raw = String::from_utf8_lossy(rest);

    match PhoneNumber::parse(&raw, region, check) {
        Ok(phone) => {
            let e164 = phone.as_str();
            assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()), "{raw:?} → {e164}");
            assert!(e164.len() <= 16, "{raw:?} → {e164}: E.164 has at most 15 digits");
            let again = PhoneNumber::parse(e164, None, check).expect("a stored number parses again");
            assert_eq!(again.as_str(), e164, "{raw:?}: E.164 form is stable");
        }
        Err(e) => {
            assert_eq!(e.code, RowErrorCode::InvalidPhone);
            assert!(e.message.len() <= MAX_MESSAGE_BYTES, "a {}-byte message", e.message.len());
        }
    }
    match EmailAddress::parse(&raw) {
        Ok(email) => {
            let value = email.as_str();
            assert!(value.contains('@') && value.trim() == value, "{raw:?} → {value:?}");
            let again = EmailAddress::parse(value).expect("a stored email parses again");
            assert_eq!(again.as_str(), value, "{raw:?}: the stored form is stable");
        }
        Err(e) => {
            assert_eq!(e.code, RowErrorCode::InvalidEmail);
            assert!(e.message.len() <= MAX_MESSAGE_BYTES, "a {}-byte message", e.message.len());
        }
    }
    for kind in [AddressKind::Any, AddressKind::Phone, AddressKind::Email] {
        match Address::parse(&raw, kind, region, check) {
            Ok(address) => {
                let expected = match kind {
                    AddressKind::Any if raw.contains('@') => "email",
                    AddressKind::Any => "phone",
                    AddressKind::Phone => "phone",
                    AddressKind::Email => "email",
                };
                assert_eq!(address.kind(), expected, "{raw:?} as {kind:?}");
            }
            Err(e) => assert!(e.message.len() <= MAX_MESSAGE_BYTES, "a {}-byte message", e.message.len()),
        }
    }
}

/// The fuzz target's OpenPGP key (`fuzz/pgp-key.asc`, passphrase `fuzz`,
/// a fixture: it protects nothing), which `fuzz/corpus/pgp` is encrypted to.
pub fn pgp_opening() -> std::sync::Arc<intake::openpgp::Opening> {
    static OPENING: std::sync::OnceLock<std::sync::Arc<intake::openpgp::Opening>> = std::sync::OnceLock::new();
    OPENING
        .get_or_init(|| {
            std::sync::Arc::new(intake::openpgp::opening_for_fuzzing(include_str!("../pgp-key.asc"), "fuzz"))
        })
        .clone()
}

/// `pgp`: the bytes as an upload that may be an OpenPGP message (armoured
/// or binary, encrypted to the fixture key or not): opening and reading it
/// never panics, never yields more than the ratio limit allows (a
/// compression bomb stops early), and the first pass sees every byte and
/// rejects it or counts its records as the reader yields them.
pub fn pgp(data: &[u8]) {
    use std::io::Read;
    let opening = pgp_opening();
    let ratio = 100u64;
    if let Ok(mut content) = intake::ingest::upload::open(data, ratio, &opening) {
        let bound = data.len() as u64 * ratio + 1024 * 1024 + 64 * 1024;
        let (mut total, mut buf) = (0u64, vec![0u8; 64 * 1024]);
        loop {
            match content.reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
            assert!(total <= bound, "{total} bytes out of {} in", data.len());
        }
    }
    let account = AccountSettings::new(intake::domain::AccountId::parse("fuzz").expect("valid"));
    let scanned = scan_with(data, &account, FileLimits::default(), &opening).expect("reading from memory cannot fail");
    assert_eq!(scanned.bytes, data.len() as u64, "scan saw every byte");
}
