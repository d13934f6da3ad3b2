//! One-time passwords (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits, the
//! step before and after accepted for clock drift; computed by the
//! `totp-rs` crate), their base32 secrets,
//! and the enrolment QR code drawn here as SVG (no image leaves the server
//! for a third party, no inline style).

use totp_rs::{Algorithm, Secret, TOTP};

const STEP: u64 = 30;
const DIGITS: usize = 6;

/// A new 160-bit secret, base32.
pub(super) fn new_secret() -> String {
    base32(&rand::random::<[u8; 20]>())
}

/// RFC 4648 base32 without padding.
pub(super) fn base32(bytes: &[u8]) -> String {
    Secret::Raw(bytes.to_vec()).to_encoded().to_string()
}

/// The one-time passwords of a base32 secret (`None`: not base32, or
/// shorter than RFC 4226's 128 bits).
fn generator(secret_b32: &str) -> Option<TOTP> {
    let secret = Secret::Encoded(secret_b32.trim_end_matches('=').to_ascii_uppercase()).to_bytes().ok()?;
    TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP, secret).ok()
}

/// The time step `presented` is the code of: the step of `now` (Unix
/// seconds) or the one before or after; `None` when it is none of them.
/// Whether that step was used already is the caller's to check.
pub(super) fn verify(secret_b32: &str, presented: &str, now: u64) -> Option<u64> {
    let presented = presented.trim();
    if presented.len() != DIGITS || !presented.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = generator(secret_b32)?;
    let step = now / STEP;
    // Each step compared in constant time by `check`.
    [step.saturating_sub(1), step, step + 1].into_iter().find(|s| totp.check(presented, s * STEP))
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `otpauth://` URL an authenticator app reads.
pub(super) fn otpauth_url(principal: &str, secret_b32: &str) -> String {
    let label: String = principal
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("otpauth://totp/intake:{label}?secret={secret_b32}&issuer=intake&algorithm=SHA1&digits=6&period=30")
}

/// The QR code of `text` as one SVG path (dark modules), with a quiet zone.
pub(super) fn qr_svg_path(text: &str) -> Option<(usize, String)> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let mut d = String::new();
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            d += &format!("M{} {}h1v1h-1z", i % width + 4, i / width + 4);
        }
    }
    Some((width + 8, d))
}

/// Ten recovery codes, each used once instead of a TOTP code.
pub(super) fn recovery_codes() -> Vec<String> {
    (0..10)
        .map(|_| {
            let b = rand::random::<[u8; 5]>();
            let s = base32(&b).to_lowercase();
            format!("{}-{}", &s[..4], &s[4..8])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_rfc_6238s_test_vectors() {
        // RFC 6238 appendix B (SHA-1), the last 6 digits.
        let secret = b"12345678901234567890";
        let b32 = base32(secret);
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let totp = generator(&b32).unwrap();
        for (time, code) in [
            (59, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
            (20000000000, "353130"),
        ] {
            assert_eq!(totp.generate(time), code, "at {time}");
            assert_eq!(verify(&b32, code, time), Some(time / STEP));
        }
        assert_eq!(verify(&b32, "287082", 59 + 30), Some(1), "the step before is accepted, and said");
        assert_eq!(verify(&b32, "287082", 59 + 90), None);
        assert_eq!(verify(&b32, "28708", 59), None);
        assert_eq!(verify(&b32, "28708x", 59), None);
        assert_eq!(verify("not base32!", "287082", 59), None);
        assert_eq!(generator(&b32.to_lowercase()).unwrap().generate(59), "287082");
    }

    #[test]
    fn a_qr_code_is_drawn_and_recovery_codes_differ() {
        let (size, path) = qr_svg_path(&otpauth_url("a b", "GEZDGNBV")).unwrap();
        assert!(size > 21 && path.starts_with('M'));
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_ne!(codes[0], codes[1]);
        assert!(otpauth_url("a b", "X").contains("intake:a%20b"));
    }
}
