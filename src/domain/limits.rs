//! The limits a file must stay within, whatever channel it came by.

/// Limits a file must stay within.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    pub max_file_bytes: u64,
    pub max_rows: u64,
    /// One record's bytes; more rejects the file (`record_too_large`).
    pub max_record_bytes: usize,
    /// Header columns; more rejects the file (`too_many_columns`).
    pub max_columns: usize,
    /// Decompressed bytes per compressed byte of a gzip upload; more
    /// rejects the file (`file_too_large`).
    pub max_gzip_ratio: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_file_bytes: 5 * 1024 * 1024 * 1024,
            max_rows: 50_000_000,
            max_record_bytes: 1024 * 1024,
            max_columns: 1000,
            max_gzip_ratio: 100,
        }
    }
}
