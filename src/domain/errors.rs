//! Row and file error codes: the stable strings that go into the report.

use std::fmt;

/// Why one record failed. `code()` is the stable string of the results CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowErrorCode {
    MissingRef,
    RefTooLong,
    /// Control characters (escape sequences, line breaks) in the ref.
    InvalidRef,
    DuplicateRef,
    RefExists,
    MissingAddress,
    TooManyAddresses,
    InvalidPhone,
    InvalidEmail,
    InvalidMetadata,
    InvalidAppdata,
    FieldTooLong,
    WrongFieldCount,
    InvalidEncoding,
}

impl RowErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingRef => "missing_ref",
            Self::RefTooLong => "ref_too_long",
            Self::InvalidRef => "invalid_ref",
            Self::DuplicateRef => "duplicate_ref",
            Self::RefExists => "ref_exists",
            Self::MissingAddress => "missing_address",
            Self::TooManyAddresses => "too_many_addresses",
            Self::InvalidPhone => "invalid_phone",
            Self::InvalidEmail => "invalid_email",
            Self::InvalidMetadata => "invalid_metadata",
            Self::InvalidAppdata => "invalid_appdata",
            Self::FieldTooLong => "field_too_long",
            Self::WrongFieldCount => "wrong_field_count",
            Self::InvalidEncoding => "invalid_encoding",
        }
    }
}

impl fmt::Display for RowErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem with one record: its code, the column it concerns (normalised
/// header name, empty for record-level problems) and a message in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub code: RowErrorCode,
    pub field: String,
    pub message: String,
}

impl RowError {
    pub fn new(code: RowErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        RowError { code, field: field.into(), message: message.into() }
    }
}

/// Why a whole file was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileErrorCode {
    EmptyFile,
    MissingHeader,
    MissingRefColumn,
    MissingAddressColumn,
    UnknownColumn,
    DuplicateColumn,
    FileTooLarge,
    TooManyRows,
    NotText,
    RecordTooLarge,
    TooManyColumns,
    /// OpenPGP (spec §12): not encrypted to the account's key, or corrupt.
    DecryptFailed,
    /// Encrypted without integrity protection (no MDC or AEAD).
    IntegrityMissing,
    /// The account requires a signature and the file has none.
    SignatureRequired,
    /// The signature does not verify with the merchant's keys.
    BadSignature,
    /// The account requires encryption and the file is plain.
    EncryptionRequired,
}

impl FileErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::MissingHeader => "missing_header",
            Self::MissingRefColumn => "missing_ref_column",
            Self::MissingAddressColumn => "missing_address_column",
            Self::UnknownColumn => "unknown_column",
            Self::DuplicateColumn => "duplicate_column",
            Self::FileTooLarge => "file_too_large",
            Self::TooManyRows => "too_many_rows",
            Self::NotText => "not_text",
            Self::RecordTooLarge => "record_too_large",
            Self::TooManyColumns => "too_many_columns",
            Self::DecryptFailed => "decrypt_failed",
            Self::IntegrityMissing => "integrity_missing",
            Self::SignatureRequired => "signature_required",
            Self::BadSignature => "bad_signature",
            Self::EncryptionRequired => "encryption_required",
        }
    }
}

/// A rejected file: the code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FileError {
    pub code: FileErrorCode,
    pub message: String,
}

impl FileError {
    pub fn new(code: FileErrorCode, message: impl Into<String>) -> Self {
        FileError { code, message: message.into() }
    }
}
