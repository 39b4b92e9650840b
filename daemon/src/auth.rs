//! Access control: an auth file of tokens, stored as SHA-256 hashes, each
//! scoped to namespaces (or all) with read, write or admin rights. A
//! connection presents its token in `Hello`; every operation outside the
//! token's scope fails with `Unauthorized` and changes nothing.
//!
//! The file is TOML:
//!
//! ```toml
//! [[token]]
//! name = "web"                      # shown in logs instead of the token
//! sha256 = "9f86d081884c7d65..."    # `sessiond hash-token` prints it
//! namespaces = ["app", "users"]     # or ["*"] for all
//! rights = "write"                  # read | write | admin
//! ```
//!
//! Tokens are high-entropy secrets, so a plain SHA-256 is the right hash (a
//! slow password hash would only slow every connection down); presented
//! tokens are hashed and compared with every entry in constant time.

use std::path::Path;

use serde::Deserialize;
use sessiond_protocol::Op;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// What a token may do; each level includes the ones below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rights {
    /// Get (without touch), ListByOwner, Ping.
    Read,
    /// Also every change: create, touch, update, incr, delete, rotate...
    Write,
    /// Also Stats (which names every namespace).
    Admin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    sha256: String,
    namespaces: Vec<String>,
    rights: Rights,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

/// What an authenticated connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (for logs).
    pub name: String,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Rights.
    pub rights: Rights,
}

/// The loaded auth file.
#[derive(Debug, Clone)]
pub struct AuthTable {
    entries: Vec<([u8; 32], Grant)>,
}

/// The SHA-256 of a token, as lowercase hex (what the auth file stores).
#[must_use]
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex(name: &str, hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(format!("token {name:?}: sha256 must be 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("token {name:?}: sha256 is not hex"))?;
    }
    Ok(out)
}

impl AuthTable {
    /// Loads and checks an auth file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses auth-file text.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.token.is_empty() {
            return Err("no [[token]] entries".into());
        }
        let mut entries = Vec::new();
        for e in file.token {
            let hash = parse_hex(&e.name, &e.sha256)?;
            if e.namespaces.is_empty() {
                return Err(format!(
                    "token {:?}: namespaces is empty (use [\"*\"] for all)",
                    e.name
                ));
            }
            let namespaces = (!e.namespaces.iter().any(|n| n == "*")).then_some(e.namespaces);
            entries.push((
                hash,
                Grant {
                    name: e.name,
                    namespaces,
                    rights: e.rights,
                },
            ));
        }
        Ok(Self { entries })
    }

    /// The grant of `token`, if it is in the table. Every entry is compared,
    /// in constant time, whatever matches.
    #[must_use]
    pub fn authenticate(&self, token: &str) -> Option<Grant> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, grant) in &self.entries {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(grant.clone());
            }
        }
        found
    }
}

/// The namespace an operation acts in, and the rights it needs.
fn needs(op: &Op) -> (Option<&str>, Rights) {
    match op {
        Op::Hello(_) | Op::Ping => (None, Rights::Read),
        Op::Stats | Op::ClusterAddNode(_) | Op::ClusterRemoveNode(_) => (None, Rights::Admin),
        Op::ClusterStatus => (None, Rights::Read),
        // Each namespace it names is checked when it starts.
        Op::Subscribe(_) => (None, Rights::Read),
        Op::Get(g) if !g.touch => (Some(&g.namespace), Rights::Read),
        Op::GetStale(g) => (Some(&g.namespace), Rights::Read),
        Op::Get(g) => (Some(&g.namespace), Rights::Write),
        Op::ListByOwner(l) => (Some(&l.namespace), Rights::Read),
        Op::Create(c) => (Some(&c.namespace), Rights::Write),
        Op::Touch(t) => (Some(&t.namespace), Rights::Write),
        Op::Update(u) => (Some(&u.namespace), Rights::Write),
        Op::Incr(i) => (Some(&i.namespace), Rights::Write),
        Op::Delete(d) => (Some(&d.namespace), Rights::Write),
        Op::DeleteByOwner(d) => (Some(&d.namespace), Rights::Write),
        Op::Rotate(r) => (Some(&r.namespace), Rights::Write),
    }
}

impl Grant {
    /// Whether the token has admin rights (members present one to each other).
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.rights >= Rights::Admin
    }

    /// Whether this grant allows `op`; the error says why not.
    ///
    /// # Errors
    /// A message for the client naming the token and what it lacks.
    pub fn allows(&self, op: &Op) -> Result<(), String> {
        let (namespace, rights) = needs(op);
        self.allows_in(op.name(), namespace, rights)
    }

    /// Whether this grant allows the operation `name`, which needs `rights`
    /// in `namespace` (`None`: no namespace); the error says why not.
    ///
    /// # Errors
    /// A message for the client naming the token and what it lacks.
    pub fn allows_in(
        &self,
        name: &str,
        namespace: Option<&str>,
        rights: Rights,
    ) -> Result<(), String> {
        if self.rights < rights {
            return Err(format!(
                "token {:?} has {:?} rights; {name} needs {:?}",
                self.name, self.rights, rights
            ));
        }
        if let (Some(ns), Some(allowed)) = (namespace, &self.namespaces) {
            if !allowed.iter().any(|a| a == ns) {
                return Err(format!(
                    "token {:?} may not use namespace {ns:?}",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sessiond_protocol::{Get, SessionId};

    use super::*;

    fn table() -> AuthTable {
        AuthTable::parse(&format!(
            "[[token]]\nname = \"reader\"\nsha256 = \"{}\"\nnamespaces = [\"app\"]\nrights = \"read\"\n\n\
             [[token]]\nname = \"ops\"\nsha256 = \"{}\"\nnamespaces = [\"*\"]\nrights = \"admin\"\n",
            hash_token("r-secret"),
            hash_token("a-secret")
        ))
        .unwrap()
    }

    fn get(ns: &str, touch: bool) -> Op {
        Op::Get(Get {
            namespace: ns.into(),
            id: SessionId([0; 16]),
            touch,
        })
    }

    #[test]
    fn tokens_map_to_their_grants() {
        let t = table();
        assert_eq!(t.authenticate("r-secret").unwrap().name, "reader");
        assert_eq!(t.authenticate("a-secret").unwrap().rights, Rights::Admin);
        assert!(t.authenticate("wrong").is_none());
        assert!(t.authenticate("").is_none());
    }

    #[test]
    fn scope_and_rights_are_enforced() {
        let t = table();
        let reader = t.authenticate("r-secret").unwrap();
        assert!(reader.allows(&get("app", false)).is_ok());
        assert!(reader
            .allows(&get("app", true))
            .unwrap_err()
            .contains("rights"));
        assert!(reader
            .allows(&get("other", false))
            .unwrap_err()
            .contains("namespace"));
        assert!(reader.allows(&Op::Stats).is_err());
        let admin = t.authenticate("a-secret").unwrap();
        assert!(admin.allows(&Op::Stats).is_ok());
        assert!(admin.allows(&get("anything", true)).is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(AuthTable::parse("").unwrap_err().contains("no [[token]]"));
        let bad =
            "[[token]]\nname = \"x\"\nsha256 = \"abc\"\nnamespaces = [\"a\"]\nrights = \"read\"\n";
        assert!(AuthTable::parse(bad).unwrap_err().contains("64 hex"));
        let bad = format!(
            "[[token]]\nname = \"x\"\nsha256 = \"{}\"\nnamespaces = []\nrights = \"read\"\n",
            hash_token("t")
        );
        assert!(AuthTable::parse(&bad).unwrap_err().contains("empty"));
        let bad = format!(
            "[[token]]\nname = \"x\"\nsha256 = \"{}\"\nnamespaces = [\"a\"]\nrights = \"root\"\n",
            hash_token("t")
        );
        assert!(AuthTable::parse(&bad).is_err());
    }
}
