//! URLRewrite (host and path) and the path modifier shared with redirects.

use http::HeaderValue;
use meridian_proto::model::route::PathModifier;

/// A compiled URLRewrite filter.
#[derive(Debug)]
pub(crate) struct Rewrite {
    /// Replacement `Host`.
    pub(crate) hostname: Option<HeaderValue>,
    /// Path replacement.
    pub(crate) path: Option<PathModifier>,
}

/// Applies a path modifier. `matched_prefix` is the rule's PathPrefix value that matched
/// (without trailing `/`), required for `ReplacePrefixMatch`; the query is not part of `path`.
///
/// `ReplacePrefixMatch` is element-wise, per the spec's table: prefix `/foo` with `/xyz` turns
/// `/foo/bar` into `/xyz/bar`, `/foo` into `/xyz`, `/foo/` into `/xyz/`; an empty or `/`
/// replacement strips the prefix and never leaves an empty path.
pub(crate) fn modify_path(
    modifier: &PathModifier,
    path: &str,
    matched_prefix: Option<&str>,
) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(full) => full.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = matched_prefix.unwrap_or("");
            let rest = path.strip_prefix(prefix).unwrap_or(path);
            let replacement = replacement.trim_end_matches('/');
            let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
            out.push_str(replacement);
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            } else if !out.starts_with('/') {
                out.insert(0, '/');
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_match_follows_the_spec_table() {
        // (prefix, replacement, request path, expected) from the Gateway API HTTPPathModifier
        // documentation and conformance tests.
        let table = [
            ("/foo", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz", "/foo", "/xyz"),
            ("/foo", "/xyz", "/foo/", "/xyz/"),
            ("/foo", "", "/foo/bar", "/bar"),
            ("/foo", "", "/foo/", "/"),
            ("/foo", "", "/foo", "/"),
            ("/foo", "/", "/foo/", "/"),
            ("/foo", "/", "/foo", "/"),
            ("/prefix/one", "/one", "/prefix/one/two", "/one/two"),
            ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
            ("/strip-prefix", "/", "/strip-prefix", "/"),
            ("", "/xyz", "/foo", "/xyz/foo"),
            (
                "/original-prefix",
                "/replacement-prefix",
                "/original-prefix/lemon",
                "/replacement-prefix/lemon",
            ),
        ];
        for (prefix, replacement, path, want) in table {
            let modifier = PathModifier::ReplacePrefixMatch(replacement.to_string());
            assert_eq!(
                modify_path(&modifier, path, Some(prefix)),
                want,
                "prefix {prefix:?} replacement {replacement:?} path {path:?}"
            );
        }
    }

    #[test]
    fn replace_full_path_ignores_the_request_path() {
        let modifier = PathModifier::ReplaceFullPath("/one".into());
        assert_eq!(
            modify_path(&modifier, "/full/one/two", Some("/full")),
            "/one"
        );
    }
}
