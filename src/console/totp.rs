//! One-time passwords (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits, the
//! step before and after accepted for clock drift), their base32 secrets,
//! and the enrolment QR code drawn here as SVG (no image leaves the server
//! for a third party, no inline style).

use hmac::{Hmac, Mac};
use sha1::Sha1;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const STEP: u64 = 30;

/// A new 160-bit secret, base32.
pub(super) fn new_secret() -> String {
    base32(&rand::random::<[u8; 20]>())
}

/// RFC 4648 base32 without padding.
pub(super) fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub(super) fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// The 6-digit code of `secret` at time step `counter`.
pub(super) fn code(secret: &[u8], counter: u64) -> u32 {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0xf) as usize;
    let value = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    value % 1_000_000
}

/// Whether `presented` is the code of the step of `now` (Unix seconds) or
/// of the one before or after.
pub(super) fn verify(secret_b32: &str, presented: &str, now: u64) -> bool {
    let presented = presented.trim();
    let Some(secret) = base32_decode(secret_b32) else { return false };
    if presented.len() != 6 || !presented.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(wanted) = presented.parse::<u32>() else { return false };
    let step = now / STEP;
    [step.saturating_sub(1), step, step + 1].into_iter().any(|s| code(&secret, s) == wanted)
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
        assert_eq!(code(secret, 59 / STEP), 287082);
        assert_eq!(code(secret, 1111111109 / STEP), 81804);
        assert_eq!(code(secret, 1234567890 / STEP), 5924);
        assert_eq!(code(secret, 20000000000 / STEP), 353130);
        let b32 = base32(secret);
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(base32_decode(&b32).unwrap(), secret);
        assert!(verify(&b32, "287082", 59));
        assert!(verify(&b32, "287082", 59 + 30), "the step before is accepted");
        assert!(!verify(&b32, "287082", 59 + 90));
        assert!(!verify(&b32, "28708", 59));
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
