//! Users and their access rules, kept in `<data>/config/users`.
//!
//! The file is JSON, `{"version": 1, "users": [...]}`, replaced atomically (a temp file
//! created with mode 0600, fsync, rename, fsync of the folder) on every change. It holds
//! the secrets in clear, as the RocketMQ broker does: HMAC verification needs them, so the
//! file's mode is what protects them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SecurityError;

/// The version of the users file this code writes and reads.
const FORMAT_VERSION: u32 = 1;

/// What a request does to a resource (RocketMQ ACL 2.0's `Pub`, `Sub`, and management).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Produce to a topic (and transactions, timers and recalls on it).
    Pub,
    /// Consume: pull, receive, ack, commit offsets, join a group.
    Sub,
    /// Create, change or delete the resource; reset or delete a group.
    Admin,
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pub" => Ok(Self::Pub),
            "sub" => Ok(Self::Sub),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown action {other:?} (use pub, sub or admin)")),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pub => "pub",
            Self::Sub => "sub",
            Self::Admin => "admin",
        })
    }
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A topic. `%RETRY%G` and `%DLQ%G` are never matched as topics: they follow group G.
    Topic,
    /// A consumer group (or a producer group of transactions).
    Group,
}

/// A topic or group, by exact name or by prefix (`topic:orders-*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Resource {
    /// Topic or group.
    pub kind: ResourceKind,
    /// The name, or the prefix when `prefix` is set.
    pub name: String,
    /// Whether `name` is a prefix (written with a trailing `*`).
    pub prefix: bool,
}

impl Resource {
    /// Whether this resource covers `name` of `kind`.
    pub fn matches(&self, kind: ResourceKind, name: &str) -> bool {
        self.kind == kind
            && if self.prefix {
                name.starts_with(&self.name)
            } else {
                name == self.name
            }
    }
}

impl FromStr for Resource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| format!("resource {s:?} is not topic:NAME or group:NAME"))?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "topic" => ResourceKind::Topic,
            "group" => ResourceKind::Group,
            other => return Err(format!("unknown resource kind {other:?} (topic or group)")),
        };
        let (name, prefix) = match name.strip_suffix('*') {
            Some(p) => (p, true),
            None => (name, false),
        };
        if name.contains('*') {
            return Err(format!("resource {s:?}: `*` may only end a prefix"));
        }
        if name.is_empty() && !prefix {
            return Err(format!("resource {s:?} names nothing"));
        }
        Ok(Self {
            kind,
            name: name.to_string(),
            prefix,
        })
    }
}

impl TryFrom<String> for Resource {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Resource> for String {
    fn from(r: Resource) -> String {
        r.to_string()
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
        };
        let star = if self.prefix { "*" } else { "" };
        write!(f, "{kind}:{}{star}", self.name)
    }
}

/// Whether a matching rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Grants the actions.
    Allow,
    /// Refuses the actions, whatever else allows them.
    Deny,
}

impl FromStr for Decision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            other => Err(format!("unknown decision {other:?} (allow or deny)")),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// One access rule of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    /// What it covers.
    pub resource: Resource,
    /// The actions it grants or refuses.
    pub actions: Vec<Action>,
    /// Grant or refuse.
    pub decision: Decision,
}

/// A user: an access key, its secret, and what it may do.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The access key, which is also the user's name.
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
    /// An administrator may do everything.
    pub admin: bool,
    /// Access rules, in the order they were set; unused for administrators.
    #[serde(default)]
    pub rules: Vec<AclRule>,
}

impl fmt::Debug for User {
    // The secret stays out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("access_key", &self.access_key)
            .field("admin", &self.admin)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl User {
    /// Whether this user may do `action` on `name` of `kind`. Administrators may do
    /// everything; anyone else needs an allow rule and no deny rule that match (deny by
    /// default). A group's retry and dead-letter topics are decided as the group.
    pub fn may(&self, action: Action, kind: ResourceKind, name: &str) -> bool {
        if self.admin {
            return true;
        }
        let (kind, name) = effective(kind, name);
        let mut allowed = false;
        for rule in &self.rules {
            if rule.resource.matches(kind, name) && rule.actions.contains(&action) {
                match rule.decision {
                    Decision::Deny => return false,
                    Decision::Allow => allowed = true,
                }
            }
        }
        allowed
    }
}

/// `%RETRY%G` and `%DLQ%G` are group G's; every other name stands for itself.
pub fn effective(kind: ResourceKind, name: &str) -> (ResourceKind, &str) {
    if kind == ResourceKind::Topic {
        for prefix in [protocol::names::RETRY_PREFIX, protocol::names::DLQ_PREFIX] {
            if let Some(group) = name.strip_prefix(prefix) {
                return (ResourceKind::Group, group);
            }
        }
    }
    (kind, name)
}

#[derive(Serialize, Deserialize)]
struct UsersFile {
    version: u32,
    users: Vec<User>,
}

/// Every user, by access key, and the file they live in.
#[derive(Debug)]
pub struct UserTable {
    path: PathBuf,
    users: BTreeMap<String, User>,
}

impl UserTable {
    /// Reads `<data>/config/users`; a missing file is an empty table.
    ///
    /// # Errors
    /// `Users` when the file cannot be read or is not a users file of a known version.
    pub fn open(data_dir: &Path) -> Result<Self, SecurityError> {
        let path = data_dir.join("config").join("users");
        let users = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: UsersFile =
                    serde_json::from_slice(&bytes).map_err(|e| SecurityError::Users {
                        path: path.clone(),
                        reason: format!("not a users file: {e}"),
                    })?;
                if file.version != FORMAT_VERSION {
                    return Err(SecurityError::Users {
                        path,
                        reason: format!(
                            "version {} is not supported (this broker reads {FORMAT_VERSION})",
                            file.version
                        ),
                    });
                }
                file.users
                    .into_iter()
                    .map(|u| (u.access_key.clone(), u))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(SecurityError::Users {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self { path, users })
    }

    /// The user with this access key.
    pub fn get(&self, access_key: &str) -> Option<&User> {
        self.users.get(access_key)
    }

    /// Every user, sorted by access key.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Whether there is no user at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds `user` and writes the file; refused if the access key exists.
    ///
    /// # Errors
    /// `UserExists`, or `Users` when the file cannot be written (then nothing changed).
    pub fn add(&mut self, user: User) -> Result<(), SecurityError> {
        if self.users.contains_key(&user.access_key) {
            return Err(SecurityError::UserExists(user.access_key));
        }
        let mut next = self.users.clone();
        next.insert(user.access_key.clone(), user);
        self.replace(next)
    }

    /// Removes a user and writes the file.
    ///
    /// # Errors
    /// `NoSuchUser`, or `Users` when the file cannot be written.
    pub fn remove(&mut self, access_key: &str) -> Result<(), SecurityError> {
        let mut next = self.users.clone();
        if next.remove(access_key).is_none() {
            return Err(SecurityError::NoSuchUser(access_key.to_string()));
        }
        self.replace(next)
    }

    /// Adds a rule, or replaces the user's rule on the same resource, and writes the file.
    ///
    /// # Errors
    /// `NoSuchUser`, or `Users` when the file cannot be written.
    pub fn set_rule(&mut self, access_key: &str, rule: AclRule) -> Result<(), SecurityError> {
        let mut next = self.users.clone();
        let user = next
            .get_mut(access_key)
            .ok_or_else(|| SecurityError::NoSuchUser(access_key.to_string()))?;
        match user.rules.iter_mut().find(|r| r.resource == rule.resource) {
            Some(existing) => *existing = rule,
            None => user.rules.push(rule),
        }
        self.replace(next)
    }

    /// Removes the user's rule on `resource`.
    ///
    /// # Errors
    /// `NoSuchUser`, `NoSuchRule`, or `Users` when the file cannot be written.
    pub fn remove_rule(
        &mut self,
        access_key: &str,
        resource: &Resource,
    ) -> Result<(), SecurityError> {
        let mut next = self.users.clone();
        let user = next
            .get_mut(access_key)
            .ok_or_else(|| SecurityError::NoSuchUser(access_key.to_string()))?;
        let before = user.rules.len();
        user.rules.retain(|r| &r.resource != resource);
        if user.rules.len() == before {
            return Err(SecurityError::NoSuchRule {
                user: access_key.to_string(),
                resource: resource.to_string(),
            });
        }
        self.replace(next)
    }

    /// Writes `next` and then makes it the table: memory never runs ahead of the file.
    fn replace(&mut self, next: BTreeMap<String, User>) -> Result<(), SecurityError> {
        write_atomically(&self.path, &next).map_err(|e| SecurityError::Users {
            path: self.path.clone(),
            reason: format!("cannot write: {e}"),
        })?;
        self.users = next;
        Ok(())
    }
}

/// Temp file (0600, as `tempfile` creates them), fsync, rename over, fsync the folder.
fn write_atomically(path: &Path, users: &BTreeMap<String, User>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file = UsersFile {
        version: FORMAT_VERSION,
        users: users.values().cloned().collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::Builder::new()
        .prefix("users.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A new secret: 30 random bytes as 40 characters of URL-safe base64.
///
/// # Errors
/// When the system's random source fails.
pub fn generate_secret() -> Result<String, SecurityError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 30];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| SecurityError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn user(rules: Vec<AclRule>) -> User {
        User {
            access_key: "app".into(),
            secret_key: "s".into(),
            admin: false,
            rules,
        }
    }

    fn rule(resource: &str, actions: &[Action], decision: Decision) -> AclRule {
        AclRule {
            resource: resource.parse().unwrap(),
            actions: actions.to_vec(),
            decision,
        }
    }

    #[test]
    fn deny_by_default_prefixes_match_and_deny_wins() {
        let u = user(vec![
            rule("topic:orders-*", &[Action::Pub], Decision::Allow),
            rule("topic:orders-secret", &[Action::Pub], Decision::Deny),
        ]);
        assert!(u.may(Action::Pub, ResourceKind::Topic, "orders-eu"));
        assert!(!u.may(Action::Sub, ResourceKind::Topic, "orders-eu"));
        assert!(!u.may(Action::Pub, ResourceKind::Topic, "orders-secret"));
        assert!(!u.may(Action::Pub, ResourceKind::Topic, "payments"));
        assert!(!u.may(Action::Pub, ResourceKind::Group, "orders-eu"));
    }

    #[test]
    fn retry_and_dead_letter_topics_follow_their_group() {
        let u = user(vec![rule("group:billing", &[Action::Sub], Decision::Allow)]);
        assert!(u.may(Action::Sub, ResourceKind::Topic, "%RETRY%billing"));
        assert!(u.may(Action::Sub, ResourceKind::Topic, "%DLQ%billing"));
        assert!(!u.may(Action::Sub, ResourceKind::Topic, "%RETRY%other"));
        assert!(!u.may(Action::Sub, ResourceKind::Topic, "billing"));
    }

    #[test]
    fn resources_parse_and_print_back() {
        for s in ["topic:a", "group:g-*", "topic:*"] {
            assert_eq!(s.parse::<Resource>().unwrap().to_string(), s);
        }
        for bad in ["a", "queue:a", "topic:a*b", "topic:"] {
            assert!(bad.parse::<Resource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_file_survives_reopen_with_mode_0600() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut t = UserTable::open(dir.path()).unwrap();
        assert!(t.is_empty());
        t.add(user(vec![])).unwrap();
        assert!(matches!(
            t.add(user(vec![])),
            Err(SecurityError::UserExists(_))
        ));
        t.set_rule("app", rule("topic:a", &[Action::Pub], Decision::Allow))
            .unwrap();
        t.set_rule("app", rule("topic:a", &[Action::Sub], Decision::Allow))
            .unwrap();
        let again = UserTable::open(dir.path()).unwrap();
        let u = again.get("app").unwrap();
        assert_eq!(u.rules.len(), 1);
        assert_eq!(u.rules[0].actions, vec![Action::Sub]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join("config/users")).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        t.remove("app").unwrap();
        assert!(UserTable::open(dir.path()).unwrap().is_empty());
    }
}
