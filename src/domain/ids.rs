//! Job ids: UUIDv7 text, so they sort by the time a job was received.

use std::fmt;

/// One upload job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A new id, later than every id made before it here.
    pub fn generate() -> JobId {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last 8 characters: what archive names carry.
    pub fn short(&self) -> &str {
        &self.0[self.0.len().saturating_sub(8)..]
    }
}

/// An id as stored or given (the database and the operator hold them).
impl From<String> for JobId {
    fn from(id: String) -> Self {
        JobId(id)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        JobId(id.to_owned())
    }
}

impl std::ops::Deref for JobId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node (an `intake serve` process and its successors after a restart):
/// 1–64 of `A-Z a-z 0-9 . _ -`, so it can name files in a shared directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub const MAX_BYTES: usize = 64;

    pub fn parse(raw: &str) -> Result<NodeId, String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if raw.is_empty() || raw.len() > Self::MAX_BYTES || !raw.chars().all(ok) || raw.starts_with('.') {
            return Err(format!(
                "node id `{}` must be 1 to {} characters of A-Z a-z 0-9 . _ - (not starting with `.`)",
                raw.escape_debug(),
                Self::MAX_BYTES
            ));
        }
        Ok(NodeId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::NodeId;

    #[test]
    fn node_ids_are_file_name_safe() {
        assert!(NodeId::parse("node-a").is_ok());
        assert!(NodeId::parse("web01.eu-west_2").is_ok());
        for bad in ["", ".hidden", "a/b", "a:b", "a b", "é", &"x".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
