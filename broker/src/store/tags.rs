//! Tags: the hash stored in consume-queue entries and the filter expressions consumers send.

pub use protocol::hash::tag_hash;
use protocol::properties::{Properties, TAGS};
use protocol::tags::parse_tag_expression;

use super::{StoreError, StoreResult};

/// The tag of a property blob, if any (a malformed blob has none).
pub fn tag_of(properties: &[u8]) -> Option<&str> {
    Properties::new(properties)
        .get(TAGS)
        .filter(|t| !t.is_empty())
}

/// Tag hash of a property blob: `tag_hash(TAGS)` or 0 without a tag.
pub fn tag_hash_of(properties: &[u8]) -> u64 {
    tag_of(properties).map_or(0, tag_hash)
}

/// Which messages a consumer wants: `*` (all), `a`, or `a || b || ...`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum TagFilter {
    #[default]
    /// Every message.
    All,
    /// Any of these tags, with their hashes precomputed.
    Tags(Vec<(String, u64)>),
}

impl TagFilter {
    /// Parses a tag expression. Empty and `*` mean all messages.
    ///
    /// # Errors
    /// `BadTagExpression` for an empty alternative (`a ||`) or a tag with whitespace inside.
    pub fn parse(expr: &str) -> StoreResult<Self> {
        // The syntax lives in `protocol` so that the client checks it the same way.
        match parse_tag_expression(expr) {
            Ok(None) => Ok(Self::All),
            Ok(Some(tags)) => Ok(Self::Tags(
                tags.into_iter()
                    .map(|t| (t.to_owned(), tag_hash(t)))
                    .collect(),
            )),
            Err(e) => Err(StoreError::BadTagExpression {
                expr: expr.chars().take(256).collect(),
                reason: e.as_str(),
            }),
        }
    }

    /// Builds a filter from tags and explicit hashes; lets tests force hash collisions.
    #[cfg(test)]
    pub(crate) fn with_hashes(tags: Vec<(String, u64)>) -> Self {
        Self::Tags(tags)
    }

    /// Whether every message matches.
    pub fn is_all(&self) -> bool {
        matches!(self, Self::All)
    }

    /// Cheap first check on a consume-queue entry's hash.
    pub fn matches_hash(&self, hash: u64) -> bool {
        match self {
            Self::All => true,
            Self::Tags(tags) => hash != 0 && tags.iter().any(|(_, h)| *h == hash),
        }
    }

    /// Exact check on the record's properties, so a hash collision never delivers a
    /// message with another tag.
    pub fn matches_properties(&self, properties: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Tags(tags) => {
                tag_of(properties).is_some_and(|t| tags.iter().any(|(n, _)| n == t))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use protocol::properties::PropertiesBuilder;

    #[test]
    fn parses_expressions() {
        assert_eq!(TagFilter::parse("*").unwrap(), TagFilter::All);
        assert_eq!(TagFilter::parse("  ").unwrap(), TagFilter::All);
        assert_eq!(TagFilter::parse("a || *").unwrap(), TagFilter::All);
        let f = TagFilter::parse("red || blue||red").unwrap();
        assert_eq!(
            f,
            TagFilter::Tags(vec![
                ("red".into(), tag_hash("red")),
                ("blue".into(), tag_hash("blue"))
            ])
        );
        assert!(TagFilter::parse("a ||").is_err());
        assert!(TagFilter::parse("a b").is_err());
    }

    #[test]
    fn matches_hash_then_properties() {
        let f = TagFilter::parse("red||blue").unwrap();
        let red = PropertiesBuilder::new().with(TAGS, "red").build();
        let green = PropertiesBuilder::new().with(TAGS, "green").build();
        assert!(f.matches_hash(tag_hash("red")) && f.matches_properties(&red));
        assert!(!f.matches_hash(tag_hash("green")) && !f.matches_properties(&green));
        assert!(!f.matches_hash(0) && !f.matches_properties(&[]));
        assert!(TagFilter::All.matches_hash(0) && TagFilter::All.matches_properties(&[1, 2]));
        assert_eq!(tag_hash_of(&red), tag_hash("red"));
        assert_eq!(tag_hash_of(&[0xff]), 0);
    }
}
