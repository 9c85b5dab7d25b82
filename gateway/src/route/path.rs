//! Request path normalization, done once per request before any route matches (what Envoy
//! Gateway and Istio do by default), so that a path cannot slip past a PathPrefix or Exact
//! rule by spelling the same resource differently, and the backend sees the path that was
//! routed on.
//!
//! The normal form, in this order:
//! 1. Percent-encoding (RFC 3986 §6.2.2.2): escapes of unreserved characters (`ALPHA DIGIT - .
//!    _ ~`) are decoded (`/%61dmin` is `/admin`, `%2e%2e` is `..`); every other escape keeps
//!    its encoding with upper-case hex (`%2f` becomes `%2F`). An escape that is not `%` and two
//!    hex digits is an error (the request is answered 400).
//! 2. Dot segments are removed (RFC 3986 §5.2.4): `.` goes, `..` removes the segment before
//!    it, and a `..` above the root stays at the root.
//! 3. Consecutive slashes are merged (`//admin` is `/admin`).
//!
//! `%2F` (`/`) and `%5C` (`\`) stay encoded: decoding them would turn one segment into two (or
//! into a Windows separator) behind the matcher's back, and the escape is the only way a
//! client can put a literal slash inside a segment. So `/api%2F..%2Fadmin` is one segment; it
//! matches neither PathPrefix `/api` nor `/admin`, only rules that accept any path. A backend
//! that decodes `%2F` itself sees what the gateway saw as one segment.
//!
//! The query is not part of the path and is never touched.

use std::borrow::Cow;

/// Why a request path cannot be normalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// The path does not start with `/` (origin-form, RFC 9112 §3.2.1).
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding at byte {at} of the request path")]
    InvalidEscape {
        /// Byte offset of the `%`.
        at: usize,
    },
}

/// The normal form of `path` (which holds no query). Returns the input unchanged, without
/// allocating, when it is already normal, which is the common case and is decided by one scan.
pub(crate) fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let normal = remove_dot_segments(&decoded);
    if normal == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(normal))
    }
}

/// True when `path` (starting with `/`) has no `%`, no `//` and no `.` or `..` segment, so it
/// is already normal.
fn is_plain(path: &[u8]) -> bool {
    for (i, &byte) in path.iter().enumerate() {
        match byte {
            b'%' => return false,
            b'/' => match path.get(i + 1) {
                Some(b'/') => return false,
                Some(b'.') => match path.get(i + 2) {
                    None | Some(b'/') => return false,
                    Some(b'.') if matches!(path.get(i + 3), None | Some(b'/')) => return false,
                    _ => {}
                },
                _ => {}
            },
            _ => {}
        }
    }
    true
}

/// Step 1: decodes escapes of unreserved characters and upper-cases the hex of the others.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy the run up to the next escape; `%` is ASCII, so this slices on a char
            // boundary.
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |offset| i + offset);
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        let digits = (
            bytes.get(i + 1).and_then(|&b| hex_value(b)),
            bytes.get(i + 2).and_then(|&b| hex_value(b)),
        );
        let (Some(high), Some(low)) = digits else {
            return Err(PathError::InvalidEscape { at: i });
        };
        let value = (high << 4) | low;
        if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(high)]));
            out.push(char::from(HEX[usize::from(low)]));
        }
        i += 3;
    }
    Ok(out)
}

/// Steps 2 and 3 on a path starting with `/`: RFC 3986 §5.2.4 with empty segments dropped. A
/// path that ends in `/`, `/.` or `/..` keeps a trailing slash, as §5.2.4 leaves it.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                kept.pop();
                trailing_slash = true;
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, want: Result<&str, PathError>) {
        let got = normalize_path(input);
        assert_eq!(got.as_deref().map_err(Clone::clone), want, "{input:?}");
        if let Ok(got) = &got {
            // The normal form is a fixed point.
            assert_eq!(
                normalize_path(got).ok().as_deref(),
                Some(&**got),
                "{got:?} again"
            );
        }
    }

    #[test]
    fn reviewer_examples_normalize_to_the_resource_they_name() {
        for (input, want) in [
            ("/api/../internal/secret.txt", "/internal/secret.txt"),
            ("/api/%2e%2e/internal/secret.txt", "/internal/secret.txt"),
            ("/api/%2E%2E/internal/secret.txt", "/internal/secret.txt"),
            ("/api/.%2e/internal/x", "/internal/x"),
            ("/x/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/./secret", "/secret"),
            ("//secret", "/secret"),
            ("/rw/../admin", "/admin"),
            ("/../../admin", "/admin"),
        ] {
            check(input, Ok(want));
        }
    }

    #[test]
    fn dot_segments_follow_rfc_3986_section_5_4() {
        // RFC 3986 §5.4.1 and §5.4.2 with base `http://a/b/c/d;p?q`: each reference merged
        // with the base path (§5.2.3, `/b/c/` + reference) is the input here, and the
        // section's result path is the expected output.
        for (merged, want) in [
            ("/b/c/g", "/b/c/g"),
            ("/b/c/./g", "/b/c/g"),
            ("/b/c/g/", "/b/c/g/"),
            ("/g", "/g"),
            ("/b/c/g;x", "/b/c/g;x"),
            ("/b/c/.", "/b/c/"),
            ("/b/c/./", "/b/c/"),
            ("/b/c/..", "/b/"),
            ("/b/c/../", "/b/"),
            ("/b/c/../g", "/b/g"),
            ("/b/c/../..", "/"),
            ("/b/c/../../", "/"),
            ("/b/c/../../g", "/g"),
            ("/b/c/../../../g", "/g"),
            ("/b/c/../../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/g..", "/b/c/g.."),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/./g/.", "/b/c/g/"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
            ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
            ("/b/c/g;x=1/../y", "/b/c/y"),
            // §5.2.4's own worked examples.
            ("/a/b/c/./../../g", "/a/g"),
        ] {
            check(merged, Ok(want));
        }
    }

    #[test]
    fn percent_encoding_is_normalized_but_slashes_stay_encoded() {
        for (input, want) in [
            ("/%7Euser/%41%42%2d%5F", "/~user/AB-_"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%5cb", "/a%5Cb"),
            ("/api%2F..%2Fadmin", "/api%2F..%2Fadmin"),
            ("/%2e%2e%2fadmin", "/..%2Fadmin"),
            ("/space%20here", "/space%20here"),
            ("/lower%3a", "/lower%3A"),
            ("/percent%25", "/percent%25"),
            ("/percent%252e", "/percent%252e"),
            ("/nul%00", "/nul%00"),
            ("/utf8%C3%A9", "/utf8%C3%A9"),
        ] {
            check(input, Ok(want));
        }
    }

    #[test]
    fn slashes_merge_and_trailing_slashes_stay() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("///a///b//", "/a/b/"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/.well-known/acme", "/.well-known/acme"),
            ("/a/...", "/a/..."),
        ] {
            check(input, Ok(want));
        }
    }

    #[test]
    fn invalid_paths_are_errors() {
        for (input, want) in [
            ("/a%zz", PathError::InvalidEscape { at: 2 }),
            ("/a%2", PathError::InvalidEscape { at: 2 }),
            ("/a%", PathError::InvalidEscape { at: 2 }),
            ("/%%41", PathError::InvalidEscape { at: 1 }),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("admin", PathError::NotAbsolute),
        ] {
            check(input, Err(want));
        }
    }

    #[test]
    fn normal_paths_are_returned_without_copying() {
        for input in ["/", "/api/v1/items", "/a.b/c..d/.e", "/x-y_z~"] {
            assert!(
                matches!(normalize_path(input), Ok(Cow::Borrowed(_))),
                "{input:?}"
            );
        }
    }
}
