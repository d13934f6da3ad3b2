//! The Create Customer command. Every part has private fields and is built only
//! through its `parse` function, so nothing unvalidated reaches the store.

use super::account::SettingError;
use super::errors::RowErrorCode;
use rlibphonenumber::{NumberLengthType, PhoneNumberFormat, Region, PHONE_NUMBER_UTIL};
use serde_json::{Map, Value};
use std::fmt;

/// The longest `ref`, in characters, after trimming.
pub const MAX_REF_CHARS: usize = 255;
/// The most addresses one customer may have, counted after duplicates are dropped.
pub const MAX_ADDRESSES: usize = 10;

/// A problem found while parsing one value: a code and a message in plain words.
/// The caller adds the column it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: RowErrorCode,
    pub message: String,
}

impl Invalid {
    fn new(code: RowErrorCode, message: impl Into<String>) -> Self {
        Invalid { code, message: message.into() }
    }
}

/// Shows a merchant's value in a message, shortened so a huge cell stays readable.
pub fn quote(raw: &str) -> String {
    const MAX: usize = 60;
    if raw.chars().count() <= MAX {
        format!("`{raw}`")
    } else {
        let head: String = raw.chars().take(MAX).collect();
        format!("`{head}…`")
    }
}

/// The merchant's identifier for a customer: unique within the account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerRef(String);

impl CustomerRef {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Invalid::new(RowErrorCode::MissingRef, "ref is empty"));
        }
        let chars = trimmed.chars().count();
        if chars > MAX_REF_CHARS {
            return Err(Invalid::new(
                RowErrorCode::RefTooLong,
                format!("ref is {chars} characters long; the limit is {MAX_REF_CHARS}"),
            ));
        }
        if let Some((at, c)) = trimmed.chars().enumerate().find(|(_, c)| c.is_control()) {
            return Err(Invalid::new(
                RowErrorCode::InvalidRef,
                format!("ref has a control character (U+{:04X}) at character {}", u32::from(c), at + 1),
            ));
        }
        Ok(CustomerRef(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How strictly phone numbers are checked for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhoneCheck {
    /// The length is possible for the country (libphonenumber's `is_possible`).
    #[default]
    Possible,
    /// Also a valid, assigned range for its region (`is_valid`).
    Valid,
}

impl PhoneCheck {
    pub fn parse(raw: &str) -> Result<Self, SettingError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "possible" => Ok(Self::Possible),
            "valid" => Ok(Self::Valid),
            other => Err(SettingError::PhoneCheck(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Possible => "possible",
            Self::Valid => "valid",
        }
    }
}

/// A region for numbers written without `+`, such as `US`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRegion(Region);

impl PhoneRegion {
    pub fn parse(raw: &str) -> Result<Self, SettingError> {
        let upper = raw.trim().to_ascii_uppercase();
        Region::from_code(&upper).map(PhoneRegion).map_err(|_| SettingError::Region(raw.trim().to_owned()))
    }

    pub fn code(&self) -> String {
        self.0.as_region_str().to_string()
    }
}

/// A phone number in E.164 (`+15555001234`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

/// E.164: at most 15 digits after the `+`.
const MAX_E164_DIGITS: usize = 15;

impl PhoneNumber {
    /// Parses a number written in E.164 or, when `region` is given, in that
    /// region's national format. Spaces, dashes, dots and parentheses are
    /// tolerated; letters and extensions are not.
    pub fn parse(raw: &str, region: Option<PhoneRegion>, check: PhoneCheck) -> Result<Self, Invalid> {
        let value = raw.trim();
        let bad = |why: &str| {
            Invalid::new(RowErrorCode::InvalidPhone, format!("{} is not a phone number: {why}", quote(value)))
        };
        if value.is_empty() {
            return Err(bad("it is empty"));
        }
        if !value.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')')) {
            return Err(bad("only digits, a leading +, spaces, dashes, dots and parentheses are allowed"));
        }
        let international = value.starts_with('+');
        if value[1..].contains('+') {
            return Err(bad("`+` may only stand at the start"));
        }
        let region = match (international, region) {
            (true, _) => None,
            (false, Some(region)) => Some(region.0),
            (false, None) => return Err(bad("it must start with + and the country code (E.164), e.g. +15555001234")),
        };
        let number = PHONE_NUMBER_UTIL.parse(value, region).map_err(|e| bad(&format!("{e}").to_lowercase()))?;
        match PHONE_NUMBER_UTIL.is_possible_number_with_reason(&number) {
            Ok(NumberLengthType::IsPossible) => {}
            Ok(NumberLengthType::IsPossibleLocalOnly) => {
                return Err(bad("it is a local number; include the area code"))
            }
            Err(reason) => return Err(bad(&length_reason(&format!("{reason:?}")))),
        }
        if check == PhoneCheck::Valid && !PHONE_NUMBER_UTIL.is_valid_number(&number) {
            return Err(bad("it is not an assigned number range for its country"));
        }
        let e164 = number.format_as(PhoneNumberFormat::E164).into_owned();
        if e164.len() - 1 > MAX_E164_DIGITS {
            return Err(bad("it has more than 15 digits, the most E.164 allows"));
        }
        // What is stored must read back as itself (national leading zeros
        // can make libphonenumber format a number it does not parse back).
        // A value written as its own E.164 form was just parsed as that.
        if e164 == value {
            return Ok(PhoneNumber(e164));
        }
        match PHONE_NUMBER_UTIL.parse(&e164, None) {
            Ok(again) if again.format_as(PhoneNumberFormat::E164) == e164 => Ok(PhoneNumber(e164)),
            _ => Err(bad("it has no unambiguous E.164 form (check for extra leading zeros)")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn length_reason(debug: &str) -> String {
    match debug {
        "TooShort" => "it is too short for its country".into(),
        "TooLong" => "it is too long for its country".into(),
        "InvalidCountryCode" => "its country code is unknown".into(),
        "InvalidLength" => "its length is not possible for its country".into(),
        other => format!("its length is not possible ({other})"),
    }
}

/// An email address (RFC 5321/5322 addr-spec as used in practice), trimmed,
/// with its domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let value = raw.trim();
        let options = email_address::Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
            allow_long_local_parts: false,
        };
        let parsed = email_address::EmailAddress::parse_with_options(value, options).map_err(|e| {
            Invalid::new(
                RowErrorCode::InvalidEmail,
                format!("{} is not an email address: {}", quote(value), email_reason(&e)),
            )
        })?;
        // ASCII only, as DNS compares names: Unicode lower-casing can make a
        // domain the parser itself refuses.
        Ok(EmailAddress(format!("{}@{}", parsed.local_part(), parsed.domain().to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn email_reason(e: &email_address::Error) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "it is malformed".into(),
    }
}

/// One way to reach a customer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Phone(PhoneNumber),
    Email(EmailAddress),
}

/// What kind of values a column may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// `@` makes it an email, anything else a phone number.
    Any,
    Phone,
    Email,
}

impl Address {
    /// Parses one address. A value containing `@` is an email; anything else a phone number.
    pub fn parse(
        raw: &str,
        kind: AddressKind,
        region: Option<PhoneRegion>,
        check: PhoneCheck,
    ) -> Result<Self, Invalid> {
        let value = raw.trim();
        let is_email = value.contains('@');
        match (kind, is_email) {
            (AddressKind::Phone, true) => Err(Invalid::new(
                RowErrorCode::InvalidPhone,
                format!("{} is an email address in a phone column", quote(value)),
            )),
            (AddressKind::Email, false) => Err(Invalid::new(
                RowErrorCode::InvalidEmail,
                format!("{} is not an email address: it has no @", quote(value)),
            )),
            (_, true) => EmailAddress::parse(value).map(Address::Email),
            (_, false) => PhoneNumber::parse(value, region, check).map(Address::Phone),
        }
    }

    /// `phone` or `email`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Address::Phone(_) => "phone",
            Address::Email(_) => "email",
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Address::Phone(p) => p.as_str(),
            Address::Email(e) => e.as_str(),
        }
    }
}

/// 1..=10 distinct addresses in the merchant's order; the first is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses(Vec<Address>);

impl Addresses {
    /// Drops duplicates (keeping the first) and checks the count.
    pub fn new(addresses: Vec<Address>) -> Result<Self, Invalid> {
        let mut kept: Vec<Address> = Vec::with_capacity(addresses.len());
        for address in addresses {
            if !kept.contains(&address) {
                kept.push(address);
            }
        }
        if kept.is_empty() {
            return Err(Invalid::new(RowErrorCode::MissingAddress, "the customer has no address"));
        }
        if kept.len() > MAX_ADDRESSES {
            return Err(Invalid::new(
                RowErrorCode::TooManyAddresses,
                format!("the customer has {} distinct addresses; the limit is {MAX_ADDRESSES}", kept.len()),
            ));
        }
        Ok(Addresses(kept))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Address> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form: `[{"type":"phone","value":"+1..."}, ...]`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("addresses serialise")
    }
}

/// The stored form, written without building a [`Value`] first (a batch
/// writes thousands).
impl serde::Serialize for Addresses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            r#type: &'static str,
            value: &'a str,
        }
        serializer.collect_seq(self.0.iter().map(|a| Stored { r#type: a.kind(), value: a.as_str() }))
    }
}

/// A JSON object: `metadata` (visible to the customer) or `appdata`
/// (merchant-private; its `Debug` never shows the content).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct JsonObject {
    map: Map<String, Value>,
    private: bool,
}

impl JsonObject {
    pub fn metadata(map: Map<String, Value>) -> Self {
        JsonObject { map, private: false }
    }

    pub fn appdata(map: Map<String, Value>) -> Self {
        JsonObject { map, private: true }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.private {
            write!(f, "JsonObject(<{} private keys>)", self.map.len())
        } else {
            write!(f, "JsonObject({:?})", self.map)
        }
    }
}

/// One row of a customer file, validated: what the payments API's
/// `POST /accounts/{avid}/customers` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCustomer {
    customer_ref: CustomerRef,
    addresses: Addresses,
    metadata: JsonObject,
    appdata: JsonObject,
}

impl CreateCustomer {
    pub fn new(customer_ref: CustomerRef, addresses: Addresses, metadata: JsonObject, appdata: JsonObject) -> Self {
        CreateCustomer { customer_ref, addresses, metadata, appdata }
    }

    pub fn customer_ref(&self) -> &CustomerRef {
        &self.customer_ref
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn metadata(&self) -> &JsonObject {
        &self.metadata
    }

    pub fn appdata(&self) -> &JsonObject {
        &self.appdata
    }
}

/// The text encoding of an account's uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileEncoding {
    #[default]
    Utf8,
    Windows1252,
}

impl FileEncoding {
    pub fn parse(raw: &str) -> Result<Self, SettingError> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Self::Utf8),
            "windows-1252" | "cp1252" => Ok(Self::Windows1252),
            other => Err(SettingError::Encoding(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Windows1252 => "windows-1252",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Option<PhoneRegion> {
        Some(PhoneRegion::parse("US").unwrap())
    }

    #[test]
    fn the_payments_api_example_number_is_accepted() {
        let p = PhoneNumber::parse("+15555001234", None, PhoneCheck::Possible).unwrap();
        assert_eq!(p.as_str(), "+15555001234");
    }

    #[test]
    fn a_formatted_international_number_is_stored_in_e164() {
        let p = PhoneNumber::parse(" +44 20 7183 8750 ", None, PhoneCheck::Possible).unwrap();
        assert_eq!(p.as_str(), "+442071838750");
    }

    #[test]
    fn a_phone_without_plus_is_rejected_without_default_region() {
        let e = PhoneNumber::parse("5555001234", None, PhoneCheck::Possible).unwrap_err();
        assert_eq!(e.code, RowErrorCode::InvalidPhone);
        assert!(e.message.contains("E.164"), "{}", e.message);
    }

    #[test]
    fn a_phone_without_plus_is_parsed_in_the_default_region() {
        let p = PhoneNumber::parse("(555) 500-1234", us(), PhoneCheck::Possible).unwrap();
        assert_eq!(p.as_str(), "+15555001234");
    }

    #[test]
    fn a_too_short_number_is_invalid() {
        let e = PhoneNumber::parse("+1555", None, PhoneCheck::Possible).unwrap_err();
        assert_eq!(e.code, RowErrorCode::InvalidPhone);
    }

    #[test]
    fn letters_and_extensions_are_not_phone_numbers() {
        assert!(PhoneNumber::parse("+1 800 FLOWERS", None, PhoneCheck::Possible).is_err());
        assert!(PhoneNumber::parse("+15555001234 ext 5", None, PhoneCheck::Possible).is_err());
    }

    #[test]
    fn the_valid_check_rejects_an_unassigned_range_that_is_possible() {
        // 555-01xx is fictional: possible length, not a valid assigned range.
        assert!(PhoneNumber::parse("+15555550100", None, PhoneCheck::Possible).is_ok());
        assert!(PhoneNumber::parse("+15555550100", None, PhoneCheck::Valid).is_err());
        assert!(PhoneNumber::parse("+16502530000", None, PhoneCheck::Valid).is_ok());
    }

    #[test]
    fn an_email_domain_is_lower_cased_and_the_local_part_kept() {
        let e = EmailAddress::parse(" Ann.Lee@EXAMPLE.Com ").unwrap();
        assert_eq!(e.as_str(), "Ann.Lee@example.com");
    }

    #[test]
    fn display_names_localhost_and_domain_literals_are_not_emails() {
        for raw in ["Ann <ann@example.com>", "ann@localhost", "ann@[127.0.0.1]", "ann@@example.com", "@example.com"] {
            let e = EmailAddress::parse(raw).unwrap_err();
            assert_eq!(e.code, RowErrorCode::InvalidEmail, "{raw}");
        }
    }

    #[test]
    fn a_value_with_at_is_an_email_and_anything_else_a_phone() {
        let a = Address::parse("ann@example.com", AddressKind::Any, None, PhoneCheck::Possible).unwrap();
        assert_eq!(a.kind(), "email");
        let b = Address::parse("+15555001234", AddressKind::Any, None, PhoneCheck::Possible).unwrap();
        assert_eq!(b.kind(), "phone");
    }

    #[test]
    fn an_email_in_a_phone_column_is_an_invalid_phone() {
        let e = Address::parse("ann@example.com", AddressKind::Phone, None, PhoneCheck::Possible).unwrap_err();
        assert_eq!(e.code, RowErrorCode::InvalidPhone);
        let e = Address::parse("+15555001234", AddressKind::Email, None, PhoneCheck::Possible).unwrap_err();
        assert_eq!(e.code, RowErrorCode::InvalidEmail);
    }

    #[test]
    fn duplicate_addresses_are_dropped_before_counting() {
        let phone = || Address::parse("+15555001234", AddressKind::Any, None, PhoneCheck::Possible).unwrap();
        let mut many = vec![phone(); 12];
        let a = Addresses::new(many.clone()).unwrap();
        assert_eq!(a.len(), 1);
        for i in 0..10 {
            many.push(
                Address::parse(&format!("a{i}@example.com"), AddressKind::Any, None, PhoneCheck::Possible).unwrap(),
            );
        }
        assert_eq!(Addresses::new(many).unwrap_err().code, RowErrorCode::TooManyAddresses);
        assert_eq!(Addresses::new(vec![]).unwrap_err().code, RowErrorCode::MissingAddress);
    }

    #[test]
    fn a_ref_is_trimmed_and_limited_to_255_characters() {
        assert_eq!(CustomerRef::parse("  c-1 ").unwrap().as_str(), "c-1");
        assert_eq!(CustomerRef::parse("   ").unwrap_err().code, RowErrorCode::MissingRef);
        assert!(CustomerRef::parse(&"é".repeat(255)).is_ok());
        assert_eq!(CustomerRef::parse(&"é".repeat(256)).unwrap_err().code, RowErrorCode::RefTooLong);
    }

    #[test]
    fn appdata_debug_never_shows_its_content() {
        let mut m = Map::new();
        m.insert("secret".into(), Value::String("s3cr3t".into()));
        let shown = format!("{:?}", JsonObject::appdata(m));
        assert!(!shown.contains("s3cr3t") && !shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_stored_number_always_reads_back_as_itself_and_has_at_most_15_digits() {
        // Found by the fuzzer: leading zeros after the country code.
        if let Ok(p) = PhoneNumber::parse(" +64 00 7183 873  ", None, PhoneCheck::Possible) {
            assert_eq!(PhoneNumber::parse(p.as_str(), None, PhoneCheck::Possible).unwrap(), p);
        }
        for raw in ["+64 00 7183 873", "+15555001234", "+442071838750"] {
            if let Ok(p) = PhoneNumber::parse(raw, None, PhoneCheck::Possible) {
                assert!(p.as_str().len() <= 16, "{p:?}");
                assert_eq!(PhoneNumber::parse(p.as_str(), None, PhoneCheck::Possible).unwrap(), p);
            }
        }
        let long = PhoneNumber::parse("+49 1234 5678 9012 3456", None, PhoneCheck::Possible);
        assert!(long.is_err(), "{long:?}");
    }

    #[test]
    fn an_email_domain_is_lower_cased_as_dns_compares_it() {
        let e = EmailAddress::parse("a@İ.m").unwrap();
        assert_eq!(EmailAddress::parse(e.as_str()).unwrap(), e, "it reads back");
        assert_eq!(EmailAddress::parse("Ann@EXAMPLE.Com").unwrap().as_str(), "Ann@example.com");
    }
}
