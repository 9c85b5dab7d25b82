//! [`AdminTokens`]: the admin API's bearer tokens, read from a file at start.
//!
//! File format, one token per line: `TOKEN`, or `NAME TOKEN` (NAME becomes the audit actor of
//! that token's writes). Blank lines and lines starting with `#` are ignored. Tokens are at
//! least 16 characters without whitespace; the node keeps only their SHA-256 digests and
//! compares digests in constant time.

use std::path::Path;

use crate::config::ConfigError;

/// The shortest token accepted (a guessable token is no protection).
pub const MIN_TOKEN_LEN: usize = 16;
/// The longest token name (it is an audit actor).
const MAX_NAME_LEN: usize = 64;

/// The tokens a node accepts.
#[derive(Clone)]
pub struct AdminTokens {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    name: Option<String>,
    digest: [u8; 32],
}

/// Who a valid token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name from the file, if it has one.
    pub name: Option<String>,
}

impl std::fmt::Debug for AdminTokens {
    /// Names and counts only: never the digests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.name.as_deref().unwrap_or("-"))
            .collect();
        f.debug_struct("AdminTokens")
            .field("names", &names)
            .finish()
    }
}

// === impl AdminTokens ===

impl AdminTokens {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a token file; `origin` names it in errors (which never quote a
    /// token).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |line: usize, why: String| ConfigError::Invalid {
            field: format!("admin_auth.token_file ({origin} line {line})"),
            why,
        };
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, token) = match fields.as_slice() {
                [token] => (None, *token),
                [name, token] => (Some((*name).to_string()), *token),
                _ => {
                    return Err(invalid(
                        line_no,
                        "expected `TOKEN` or `NAME TOKEN`".to_string(),
                    ));
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(invalid(
                    line_no,
                    format!("the token is shorter than {MIN_TOKEN_LEN} characters"),
                ));
            }
            if let Some(name) = &name
                && (name.len() > MAX_NAME_LEN || name.chars().any(char::is_control))
            {
                return Err(invalid(
                    line_no,
                    format!("the name must be 1 to {MAX_NAME_LEN} printable characters"),
                ));
            }
            let digest = digest(token);
            if entries.iter().any(|e| e.digest == digest) {
                return Err(invalid(line_no, "the token is listed twice".to_string()));
            }
            entries.push(Entry { name, digest });
        }
        if entries.is_empty() {
            return Err(ConfigError::Invalid {
                field: "admin_auth.token_file".into(),
                why: format!("{origin} holds no token"),
            });
        }
        Ok(Self { entries })
    }

    /// The principal `token` belongs to, if it is valid. Every entry is compared (in constant
    /// time per entry), so the time taken does not tell which one matched.
    pub fn check(&self, token: &str) -> Option<Principal> {
        let presented = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(&entry.digest, &presented) && found.is_none() {
                found = Some(Principal {
                    name: entry.name.clone(),
                });
            }
        }
        found
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for a loaded file (an empty one is refused); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
