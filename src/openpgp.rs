//! OpenPGP on the channel (spec §12), on rPGP: an account's server key
//! (made, locked with the operator's passphrase, unlocked), a merchant's
//! public keys (parsed within bounds, checked), an upload's message opened
//! as a stream (decrypted, decompressed, its signature checked at its end)
//! and a report encrypted to the merchant. Knows nothing about CSV, SFTP
//! or the database.

use pgp::composed::{
    Deserializable, EncryptionCaps, KeyType, Message, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey, SubkeyParamsBuilder, TheRing,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{CompressionAlgorithm, KeyDetails, Password, Seipdv1ReadMode, Tag};
use std::io::{self, BufRead, Read};
use std::sync::{Arc, Mutex};

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("this is a secret key: upload only your public key (gpg --armor --export YOUR-KEY-ID)")]
    SecretKey,
    #[error("not an OpenPGP public key ({0})")]
    Unreadable(String),
    #[error("the key {0} has expired")]
    Expired(String),
    #[error("the key {0} is revoked")]
    Revoked(String),
    #[error("the key {fingerprint} has no subkey that can encrypt")]
    CannotEncrypt { fingerprint: String },
    #[error("a key file may hold at most {max} bytes")]
    TooLarge { max: usize },
    #[error("a key may have at most {max} user ids")]
    TooManyUserIds { max: usize },
    #[error("a key file may hold one key")]
    NotOne,
}

/// What makes an upload that is an OpenPGP message unusable: each one a
/// file error code of the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{0}")]
    DecryptFailed(String),
    #[error(
        "the file is encrypted without integrity protection (no MDC); encrypt it with a current OpenPGP tool \
         (gpg 2.2 or later does so by default)"
    )]
    IntegrityMissing,
    #[error("this account requires uploads signed with one of its keys in /keys; sign the file (gpg --sign)")]
    SignatureRequired,
    #[error("{0}")]
    BadSignature(String),
    #[error("this account requires encrypted uploads: encrypt the file to the key in /keys/intake.asc")]
    EncryptionRequired,
}

impl MessageError {
    /// The file error code it is reported as.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::DecryptFailed(_) => "decrypt_failed",
            MessageError::IntegrityMissing => "integrity_missing",
            MessageError::SignatureRequired => "signature_required",
            MessageError::BadSignature(_) => "bad_signature",
            MessageError::EncryptionRequired => "encryption_required",
        }
    }

    /// The message error an io error carries, if it is one.
    pub fn of(e: &io::Error) -> Option<&MessageError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<MessageError>())
    }
}

/// Bytes a key file may have, at most.
pub const MAX_KEY_BYTES: usize = 256 * 1024;
/// User ids a merchant key may have, at most.
pub const MAX_USER_IDS: usize = 32;
/// Merchant keys an account may keep, at most.
pub const MAX_KEYS_PER_ACCOUNT: usize = 16;
/// Compression layers inside one message, at most.
const MAX_COMPRESSION_DEPTH: usize = 2;

/// 40 lower-case hex digits.
pub fn fingerprint_hex(key: &impl KeyDetails) -> String {
    format!("{:x}", key.fingerprint())
}

/// A new server key for `avid`: an Ed25519 (EdDSA) primary key that
/// certifies and signs, and a Curve25519 ECDH subkey that encrypts — v4
/// keys that gpg 2.2, sq and rnp read — its secret parts locked with
/// `passphrase`.
pub fn generate_server_key(avid: &str, passphrase: &str) -> Result<SignedSecretKey, String> {
    let mut encryption = SubkeyParamsBuilder::default();
    encryption
        .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_encrypt(EncryptionCaps::All)
        .passphrase(Some(passphrase.to_owned()));
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!("intake account {avid}"))
        .passphrase(Some(passphrase.to_owned()))
        .preferred_symmetric_algorithms(smallvec(&[SymmetricKeyAlgorithm::AES256, SymmetricKeyAlgorithm::AES128]))
        .preferred_hash_algorithms(smallvec(&[HashAlgorithm::Sha256, HashAlgorithm::Sha512]))
        .preferred_compression_algorithms(smallvec(&[CompressionAlgorithm::ZLIB, CompressionAlgorithm::ZIP]))
        .subkeys(vec![encryption.build().map_err(|e| e.to_string())?]);
    let params = params.build().map_err(|e| e.to_string())?;
    params.generate(rand::thread_rng()).map_err(|e| e.to_string())
}

/// rPGP's preference lists (its `SmallVec`), from a slice.
fn smallvec<T: Copy, C: FromIterator<T>>(items: &[T]) -> C {
    items.iter().copied().collect()
}

/// A stored server key (armoured, locked) read back.
pub fn read_secret_key(armored: &str) -> Result<SignedSecretKey, String> {
    let (key, _) = SignedSecretKey::from_armor_single(armored.as_bytes()).map_err(|e| e.to_string())?;
    Ok(key)
}

pub fn armored_secret(key: &SignedSecretKey) -> Result<String, String> {
    key.to_armored_string(Default::default()).map_err(|e| e.to_string())
}

pub fn armored_public(key: &SignedPublicKey) -> Result<String, String> {
    key.to_armored_string(Default::default()).map_err(|e| e.to_string())
}

/// A merchant's public key, checked.
#[derive(Debug, Clone)]
pub struct MerchantKey {
    pub key: SignedPublicKey,
    pub fingerprint: String,
    /// Unix seconds; `None`: does not expire.
    pub expires_at: Option<i64>,
}

/// When `key` expires (Unix seconds), by its newest self-signature that says.
fn expiry(key: &SignedPublicKey) -> Option<i64> {
    let created = i64::from(key.primary_key.created_at().as_secs());
    let newest = key
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(key.details.direct_signatures.iter())
        .filter_map(|s| Some((s.created()?.as_secs(), s.key_expiration_time()?.as_secs())))
        .max_by_key(|(at, _)| *at)?;
    (newest.1 != 0).then(|| created + i64::from(newest.1))
}

/// Parses one merchant public key (armoured or binary), within bounds: a
/// secret key, a revoked or expired one, or one that cannot encrypt is refused.
pub fn parse_merchant_key(bytes: &[u8], now: i64) -> Result<MerchantKey, KeyError> {
    if bytes.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLarge { max: MAX_KEY_BYTES });
    }
    let text = std::str::from_utf8(bytes).ok();
    let armored = text.is_some_and(|t| t.trim_start().starts_with("-----BEGIN PGP"));
    if text.is_some_and(|t| t.contains("-----BEGIN PGP PRIVATE KEY BLOCK")) {
        return Err(KeyError::SecretKey);
    }
    if text.is_some_and(|t| t.matches("-----BEGIN PGP").count() > 1) {
        return Err(KeyError::NotOne);
    }
    if !armored && SignedSecretKey::from_bytes(bytes).is_ok() {
        return Err(KeyError::SecretKey);
    }
    let parsed = if armored {
        SignedPublicKey::from_armor_many(bytes).map(|(keys, _)| keys.collect::<Vec<_>>())
    } else {
        SignedPublicKey::from_bytes_many(bytes).map(|keys| keys.collect::<Vec<_>>())
    };
    let mut keys = parsed.map_err(|e| KeyError::Unreadable(e.to_string()))?;
    if keys.len() != 1 {
        return Err(KeyError::NotOne);
    }
    let key = keys.pop().expect("one").map_err(|e| KeyError::Unreadable(e.to_string()))?;
    if key.details.users.len() > MAX_USER_IDS {
        return Err(KeyError::TooManyUserIds { max: MAX_USER_IDS });
    }
    key.verify_bindings().map_err(|e| KeyError::Unreadable(e.to_string()))?;
    let fingerprint = fingerprint_hex(&key.primary_key);
    if !key.details.revocation_signatures.is_empty() {
        return Err(KeyError::Revoked(fingerprint));
    }
    let expires_at = expiry(&key);
    if expires_at.is_some_and(|at| at <= now) {
        return Err(KeyError::Expired(fingerprint));
    }
    let can_encrypt = key.public_subkeys.iter().any(|s| {
        s.algorithm().can_encrypt()
            && s.signatures.iter().all(|sig| sig.typ() != Some(pgp::packet::SignatureType::SubkeyRevocation))
    });
    if !can_encrypt {
        return Err(KeyError::CannotEncrypt { fingerprint });
    }
    Ok(MerchantKey { key, fingerprint, expires_at })
}

/// What opening an account's uploads needs: its server keys (unlocked with
/// the passphrase), its merchant keys and its rules.
pub struct Opening {
    pub secret_keys: Vec<SignedSecretKey>,
    pub passphrase: Password,
    pub merchant_keys: Vec<SignedPublicKey>,
    pub require_signature: bool,
    pub require_encryption: bool,
}

impl std::fmt::Debug for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening")
            .field("secret_keys", &self.secret_keys.len())
            .field("merchant_keys", &self.merchant_keys.len())
            .field("require_signature", &self.require_signature)
            .field("require_encryption", &self.require_encryption)
            .finish()
    }
}

impl Opening {
    /// No keys, no rules: plain uploads only.
    pub fn none() -> Opening {
        Opening {
            secret_keys: vec![],
            passphrase: Password::empty(),
            merchant_keys: vec![],
            require_signature: false,
            require_encryption: false,
        }
    }
}

/// What a message told once read to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The fingerprint (40 hex) of the merchant key whose signature verified.
    pub signer: Option<String>,
}

/// The armour line an armoured message starts with.
const ARMOR_START: &[u8] = b"-----BEGIN PGP MESSAGE-----";

/// Whether content starting with `head` is an OpenPGP message: armoured,
/// or a binary packet that starts a message (a session key, a one-pass
/// signature, a signature, compressed, literal or encrypted data).
pub fn looks_like_message(head: &[u8]) -> bool {
    let trimmed = head.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &head[i..]);
    if trimmed.starts_with(ARMOR_START) {
        return true;
    }
    let Some(&first) = head.first() else { return false };
    if first & 0x80 == 0 {
        return false;
    }
    let tag = if first & 0x40 != 0 { first & 0x3f } else { (first >> 2) & 0x0f };
    matches!(tag, 1 | 2 | 3 | 4 | 8 | 9 | 11 | 18 | 20)
}

/// A reader that is Debug, as rPGP's readers need.
struct Source<R>(R);

impl<R> std::fmt::Debug for Source<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source")
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.0.consume(amt)
    }
}

fn failed(e: impl std::fmt::Display) -> MessageError {
    MessageError::DecryptFailed(format!("the file could not be decrypted: {e}"))
}

/// The plain content of a message, read as a stream; at its end the
/// signature is checked (and the integrity check of the encrypted data
/// is passed), so a reader that reaches the end without an error has read
/// authentic data. The caller bounds what it reads.
pub struct Plain<'a> {
    message: Message<'a>,
    opening: Arc<Opening>,
    outcome: Arc<Mutex<Outcome>>,
    ended: bool,
}

impl Read for Plain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let n = self.message.read(buf).map_err(|e| match MessageError::of(&e) {
            Some(_) => e,
            None => io::Error::other(failed(e)),
        })?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
            self.verify().map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

impl Plain<'_> {
    fn verify(&mut self) -> Result<(), MessageError> {
        if !self.message.is_signed() {
            return match self.opening.require_signature {
                true => Err(MessageError::SignatureRequired),
                false => Ok(()),
            };
        }
        for key in &self.opening.merchant_keys {
            let primary = self.message.verify(&key.primary_key).is_ok();
            if primary || key.public_subkeys.iter().any(|s| self.message.verify(&s.key).is_ok()) {
                self.outcome.lock().expect("not poisoned").signer = Some(fingerprint_hex(&key.primary_key));
                return Ok(());
            }
        }
        if self.opening.require_signature || !self.opening.merchant_keys.is_empty() {
            Err(MessageError::BadSignature(
                "the file's signature does not verify with any of the account's keys in /keys (signed by another \
                 key, or changed after signing)"
                    .to_owned(),
            ))
        } else {
            // Signed, but there is no key to check it with and none required.
            Ok(())
        }
    }
}

/// Opens the OpenPGP message `source` holds (armoured or binary): decrypts
/// it with the account's keys, decompresses it, and checks the rules known
/// before its data (encryption, integrity protection, a signature).
pub fn open<'a>(
    source: impl BufRead + Send + 'a,
    opening: Arc<Opening>,
) -> Result<(Plain<'a>, Arc<Mutex<Outcome>>), MessageError> {
    let (message, _) = Message::from_reader(Source(source)).map_err(failed)?;
    let mut message =
        match message {
            Message::Encrypted { ref edata, .. } => {
                if edata.tag() == Tag::SymEncryptedData {
                    return Err(MessageError::IntegrityMissing);
                }
                if opening.secret_keys.is_empty() {
                    return Err(MessageError::DecryptFailed(
                    "the file is encrypted but this account has no key yet; encrypt it to the key in /keys/intake.asc"
                        .to_owned(),
                ));
                }
                let ring = TheRing {
                    secret_keys: opening.secret_keys.iter().collect(),
                    key_passwords: vec![&opening.passphrase],
                    decrypt_options: pgp::composed::DecryptionOptions::new()
                        .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
                    ..Default::default()
                };
                match message.decrypt_the_ring(ring, true) {
                    Ok((message, _)) => message,
                    Err(pgp::errors::Error::MissingKey) => return Err(MessageError::DecryptFailed(
                        "the file is not encrypted to this account's key: encrypt it to the key in /keys/intake.asc"
                            .to_owned(),
                    )),
                    Err(e) => return Err(failed(e)),
                }
            }
            other if opening.require_encryption => {
                drop(other);
                return Err(MessageError::EncryptionRequired);
            }
            other => other,
        };
    // A signed message's data may be compressed too: `decompress` opens it.
    for _ in 0..MAX_COMPRESSION_DEPTH {
        if message.is_compressed() || message.is_signed() {
            message = message.decompress().map_err(failed)?;
        }
    }
    if message.is_compressed() || message.is_encrypted() {
        return Err(MessageError::DecryptFailed(
            "the file nests compression or encryption too deeply; encrypt the CSV once".to_owned(),
        ));
    }
    if opening.require_signature && !message.is_signed() {
        return Err(MessageError::SignatureRequired);
    }
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    Ok((Plain { message, opening, outcome: outcome.clone(), ended: false }, outcome))
}

/// Encrypts `plain` (read as a stream) to every key of `recipients`,
/// signed by `signer`, into `out` (binary OpenPGP).
pub fn encrypt_report(
    plain: impl Read + Send,
    file_name: &str,
    recipients: &[SignedPublicKey],
    signer: &SignedSecretKey,
    passphrase: &str,
    out: impl io::Write,
) -> Result<(), String> {
    let mut builder = MessageBuilder::from_reader(file_name.to_owned(), Source(plain))
        .seipd_v1(rand::thread_rng(), SymmetricKeyAlgorithm::AES256);
    for recipient in recipients {
        let subkeys = recipient.public_subkeys.iter().filter(|s| s.algorithm().can_encrypt());
        for subkey in subkeys {
            builder.encrypt_to_key(rand::thread_rng(), subkey).map_err(|e| e.to_string())?;
        }
    }
    builder.compression(CompressionAlgorithm::ZLIB);
    builder.sign(&signer.primary_key, Password::from(passphrase), HashAlgorithm::Sha256);
    builder.to_writer(rand::thread_rng(), out).map_err(|e| e.to_string())
}

/// What the fuzz target opens uploads with: the fixture key in
/// `fuzz/pgp-key.asc` (armoured, locked with `passphrase`), no rules.
#[doc(hidden)]
pub fn opening_for_fuzzing(armored_secret: &str, passphrase: &str) -> Opening {
    Opening {
        secret_keys: vec![read_secret_key(armored_secret).expect("the fuzz fixture key reads")],
        passphrase: Password::from(passphrase),
        merchant_keys: vec![],
        require_signature: false,
        require_encryption: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> SignedSecretKey {
        generate_server_key("acme", "pw").unwrap()
    }

    /// Writes the fuzz target's key (`fuzz/pgp-key.asc`, passphrase `fuzz`)
    /// and its public key (`fuzz/pgp-key.pub.asc`, for making seeds).
    #[test]
    #[ignore = "writes the fuzz fixture: cargo test --lib -- --ignored fuzz_fixture"]
    fn fuzz_fixture() {
        let key = generate_server_key("fuzz", "fuzz").unwrap();
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        std::fs::write(fuzz.join("pgp-key.asc"), armored_secret(&key).unwrap()).unwrap();
        std::fs::write(fuzz.join("pgp-key.pub.asc"), armored_public(&key.to_public_key()).unwrap()).unwrap();
    }

    #[test]
    fn a_server_key_round_trips_through_its_armour_and_is_locked() {
        let key = server();
        let back = read_secret_key(&armored_secret(&key).unwrap()).unwrap();
        assert_eq!(fingerprint_hex(&back.primary_key), fingerprint_hex(&key.primary_key));
        assert_eq!(fingerprint_hex(&key.primary_key).len(), 40);
        let public = armored_public(&key.to_public_key()).unwrap();
        assert!(public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        assert!(!armored_secret(&key).unwrap().is_empty());
    }

    #[test]
    fn a_report_encrypted_to_a_key_opens_with_it_and_names_its_signer() {
        let (merchant, intake) = (server(), server());
        let mut sealed = Vec::new();
        let plain = b"line,ref\n2,a\n".repeat(1000);
        encrypt_report(&plain[..], "r.csv", &[merchant.to_public_key()], &intake, "pw", &mut sealed).unwrap();
        assert!(looks_like_message(&sealed));
        let opening = Arc::new(Opening {
            secret_keys: vec![merchant.clone()],
            passphrase: "pw".into(),
            merchant_keys: vec![intake.to_public_key()],
            require_signature: true,
            require_encryption: true,
        });
        let (mut reader, outcome) = open(&sealed[..], opening).unwrap();
        let mut back = Vec::new();
        reader.read_to_end(&mut back).unwrap();
        assert_eq!(back, plain);
        assert_eq!(outcome.lock().unwrap().signer.as_deref(), Some(&*fingerprint_hex(&intake.primary_key)));
    }

    #[test]
    fn a_message_to_another_key_or_cut_short_fails_to_decrypt() {
        let (merchant, other, intake) = (server(), server(), server());
        let mut sealed = Vec::new();
        encrypt_report(&b"x".repeat(100_000)[..], "r", &[other.to_public_key()], &intake, "pw", &mut sealed).unwrap();
        let opening = |keys: Vec<SignedSecretKey>| {
            Arc::new(Opening {
                secret_keys: keys,
                passphrase: "pw".into(),
                merchant_keys: vec![],
                require_signature: false,
                require_encryption: false,
            })
        };
        let e = open(&sealed[..], opening(vec![merchant.clone()])).err().unwrap();
        assert_eq!(e.code(), "decrypt_failed", "{e}");
        let cut = &sealed[..sealed.len() / 2];
        let read = open(cut, opening(vec![other.clone()])).and_then(|(mut r, _)| {
            let mut sink = Vec::new();
            r.read_to_end(&mut sink).map_err(|e| MessageError::of(&e).cloned().unwrap_or_else(|| failed(e)))
        });
        assert_eq!(read.err().unwrap().code(), "decrypt_failed");
    }

    #[test]
    fn plain_text_is_not_a_message_and_a_secret_key_is_not_a_merchant_key() {
        assert!(!looks_like_message(b"ref,address\n"));
        assert!(!looks_like_message(b"\xEF\xBB\xBFref"));
        assert!(looks_like_message(b"\n-----BEGIN PGP MESSAGE-----\n"));
        let key = server();
        let secret = armored_secret(&key).unwrap();
        assert_eq!(parse_merchant_key(secret.as_bytes(), 0).err(), Some(KeyError::SecretKey));
        let public = armored_public(&key.to_public_key()).unwrap();
        let parsed = parse_merchant_key(public.as_bytes(), 0).unwrap();
        assert_eq!(parsed.fingerprint, fingerprint_hex(&key.primary_key));
        assert_eq!(parsed.expires_at, None);
    }

    #[test]
    fn a_key_with_a_thousand_user_ids_or_a_file_of_ten_thousand_keys_is_refused() {
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("m0".into())
            .user_ids((1..1000).map(|i| format!("m{i}")).collect());
        let key = params.build().unwrap().generate(rand::thread_rng()).unwrap();
        let public = armored_public(&key.to_public_key()).unwrap();
        let refused = parse_merchant_key(public.as_bytes(), 0).err().unwrap();
        assert!(matches!(refused, KeyError::TooManyUserIds { .. } | KeyError::TooLarge { .. }), "{refused:?}");
        let one = armored_public(&server().to_public_key()).unwrap();
        assert_eq!(
            parse_merchant_key(one.repeat(10_000).as_bytes(), 0).err(),
            Some(KeyError::TooLarge { max: MAX_KEY_BYTES })
        );
        assert_eq!(parse_merchant_key(one.repeat(2).as_bytes(), 0).err(), Some(KeyError::NotOne));
    }
}
