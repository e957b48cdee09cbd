//! Tag expressions (`*`, `a`, `a || b`): the syntax consumers send with a subscription,
//! shared so the client refuses a bad expression at once and the broker parses it alike.

/// Why a tag expression was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagExprError {
    /// `a ||`, `|| a` or `a |||| b`.
    EmptyAlternative,
    /// `a b`: a tag cannot hold whitespace (alternatives are separated by `||`).
    Whitespace,
}

impl TagExprError {
    /// The reason in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyAlternative => "empty tag between '||'",
            Self::Whitespace => "tags cannot contain whitespace (separate tags with '||')",
        }
    }
}

impl std::fmt::Display for TagExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TagExprError {}

/// Parses a tag expression: `None` for every message (empty, `*`, or `*` among the
/// alternatives), else the distinct tags in their first order.
///
/// # Errors
/// [`TagExprError`] for an empty alternative or a tag with whitespace inside.
pub fn parse_tag_expression(expr: &str) -> Result<Option<Vec<&str>>, TagExprError> {
    let expr = expr.trim();
    if expr.is_empty() || expr == "*" {
        return Ok(None);
    }
    let mut tags: Vec<&str> = Vec::new();
    for part in expr.split("||").map(str::trim) {
        if part.is_empty() {
            return Err(TagExprError::EmptyAlternative);
        }
        if part.chars().any(char::is_whitespace) {
            return Err(TagExprError::Whitespace);
        }
        if part == "*" {
            return Ok(None);
        }
        if !tags.contains(&part) {
            tags.push(part);
        }
    }
    Ok(Some(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse_tag_expression(" * ").unwrap(), None);
        assert_eq!(parse_tag_expression("a || *").unwrap(), None);
        assert_eq!(
            parse_tag_expression("red || blue||red").unwrap(),
            Some(vec!["red", "blue"])
        );
        assert_eq!(
            parse_tag_expression("a ||"),
            Err(TagExprError::EmptyAlternative)
        );
        assert_eq!(parse_tag_expression("a b"), Err(TagExprError::Whitespace));
    }
}
