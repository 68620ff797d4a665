//! `--shard I/N`: a deterministic partition of the people across N machines. A person
//! belongs to shard `fnv1a64(name) mod N`, so all of one person's images (and their
//! generated faces) are processed by the same machine, whatever order the input has.
use core::fmt;
use core::str::FromStr;

use crate::train::manifest::fnv1a64;
use crate::{ModelError, Result};

/// Shard `index` of `count` (`0 <= index < count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSpec {
    /// Which shard, from 0.
    pub index: usize,
    /// How many shards.
    pub count: usize,
}

impl ShardSpec {
    /// The whole input as one shard.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// Whether the person `name` (as the names file spells it after cleaning) is this
    /// shard's.
    pub fn owns(&self, name: &str) -> bool {
        self.count <= 1 || fnv1a64(name.as_bytes()) % self.count as u64 == self.index as u64
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = ModelError;

    /// Parses `I/N`.
    ///
    /// # Errors
    /// Not two integers separated by `/`, `N = 0`, or `I >= N` (shards count from 0).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| ModelError::InvalidInput(format!("--shard {s:?}: {why}"));
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("I is not a whole number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad(&format!(
                "I must be below N (shards are numbered 0 to {})",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs_parse_and_partition() {
        assert_eq!(
            "1/2".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 1, count: 2 }
        );
        for bad in ["3/2", "2/2", "0/0", "a/2", "1", "-1/2", "1/2/3"] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
        let names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Marie Curie"];
        let shards: Vec<ShardSpec> = (0..3).map(|index| ShardSpec { index, count: 3 }).collect();
        for n in names {
            // Every person in exactly one shard.
            assert_eq!(shards.iter().filter(|s| s.owns(n)).count(), 1, "{n}");
            assert!(ShardSpec::WHOLE.owns(n));
        }
    }
}
