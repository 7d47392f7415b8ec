//! [`NodeId`]: the one definition of what a node id may be.
//!
//! `^[a-z0-9][a-z0-9._-]{2,62}$` without `..`: short enough for audit rows
//! and log lines, safe in paths and URLs without escaping, and the same at
//! enrollment (auth), registration (mesh) and on the device (agent).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Shortest node id.
pub const MIN_LEN: usize = 3;
/// Longest node id.
pub const MAX_LEN: usize = 63;

/// A validated node id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Validates `id`.
    pub fn parse(id: &str) -> Result<NodeId, Error> {
        let b = id.as_bytes();
        let ok = (MIN_LEN..=MAX_LEN).contains(&b.len())
            && b.first()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && b.iter().all(|&c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
            && !id.contains("..");
        if ok {
            Ok(NodeId(id.to_owned()))
        } else {
            Err(Error::InvalidNodeId)
        }
    }

    /// Whether `id` is a valid node id.
    pub fn is_valid(id: &str) -> bool {
        Self::parse(id).is_ok()
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NodeId::parse(s)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern() {
        for ok in ["abc", "0.edge_node-7", &"x".repeat(63)] {
            assert!(NodeId::is_valid(ok), "{ok}");
        }
        for bad in [
            "ab",
            "-abc",
            ".abc",
            "Abc",
            "a..b",
            "a/b",
            "a b",
            "",
            &"x".repeat(64),
            "nöde",
        ] {
            assert!(!NodeId::is_valid(bad), "{bad}");
        }
        assert_eq!(
            NodeId::parse("laptop-1").map(|n| n.to_string()),
            Ok("laptop-1".to_owned())
        );
        assert!(serde_json::from_str::<NodeId>("\"UP\"").is_err());
        assert_eq!(
            serde_json::to_string(&NodeId::parse("n-1").expect("id"))
                .ok()
                .as_deref(),
            Some("\"n-1\"")
        );
    }
}
