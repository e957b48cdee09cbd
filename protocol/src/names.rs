//! Naming rules for topics and groups, shared so the client can refuse a bad name before
//! sending it and the broker can refuse it when it arrives.

/// Longest topic or group name.
pub const MAX_NAME_LEN: usize = 127;
/// Names starting with this are reserved for the broker (`%RETRY%G`, `%DLQ%G`, ...).
pub const RESERVED_PREFIX: char = '%';
/// Prefix of a group's retry topic, `%RETRY%<group>`.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic, `%DLQ%<group>`.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// The broker's timer topic: timer messages wait there until due.
pub const TIMER_TOPIC: &str = "%TIMER%";

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong,
    /// The name holds a character outside `[A-Za-z0-9_.-]`, or is `.` or `..`.
    BadCharacter(char),
    /// The name starts with [`RESERVED_PREFIX`], which only the broker may use.
    Reserved,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "name is empty"),
            Self::TooLong => write!(f, "name is longer than {MAX_NAME_LEN} characters"),
            Self::BadCharacter(c) => write!(
                f,
                "character {c:?} is not allowed (use letters, digits, '-', '_' and '.')"
            ),
            Self::Reserved => write!(f, "names starting with '%' are reserved for the broker"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a user-chosen topic or group name.
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_user_name(name: &str) -> Result<(), NameError> {
    if name.starts_with(RESERVED_PREFIX) {
        return Err(NameError::Reserved);
    }
    validate_any_name(name)
}

/// Checks a name that may be a broker-internal one (`%RETRY%orders`).
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_any_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    // Topic names become folder names under the data directory.
    if name == "." || name == ".." {
        return Err(NameError::BadCharacter('.'));
    }
    let body = name.trim_start_matches(RESERVED_PREFIX);
    let body = body.split(RESERVED_PREFIX).collect::<String>();
    match body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(NameError::BadCharacter(c)),
        None if body.is_empty() => Err(NameError::Empty),
        None => Ok(()),
    }
}

/// The retry topic of a consumer group.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of a consumer group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_user_name("orders.v2-eu_1").is_ok());
        assert_eq!(validate_user_name(""), Err(NameError::Empty));
        assert_eq!(validate_user_name("a b"), Err(NameError::BadCharacter(' ')));
        assert_eq!(validate_user_name("%RETRY%g"), Err(NameError::Reserved));
        assert_eq!(
            validate_user_name(&"x".repeat(128)),
            Err(NameError::TooLong)
        );
        assert!(validate_any_name(&retry_topic("g1")).is_ok());
        assert!(validate_any_name(&dlq_topic("g1")).is_ok());
        assert_eq!(validate_any_name("%"), Err(NameError::Empty));
        assert!(validate_user_name("..").is_err());
        assert!(validate_user_name(".").is_err());
    }
}
