//! The Create Customer command and its parts, built only through parse functions;
//! row and file error codes; SFTP users; jobs and how they end. Imports nothing from the rest of the crate.

pub mod account;
pub mod customer;
pub mod errors;
pub mod ids;
pub mod job;
pub mod limits;
pub mod mapping;
pub mod shown;
pub mod user;

pub use account::{AccountId, AccountSettings, PgpRules, SettingError};
pub use customer::{
    Address, AddressKind, Addresses, CreateCustomer, CustomerRef, EmailAddress, FileEncoding, Invalid, JsonObject,
    PhoneCheck, PhoneNumber, PhoneRegion,
};
pub use errors::{FileError, FileErrorCode, RowError, RowErrorCode};
pub use ids::{JobId, NodeId};
pub use job::{JobKind, JobPhase, JobStatus, Summary, SummaryError, SummaryMapping, SummaryPgp};
pub use limits::FileLimits;
