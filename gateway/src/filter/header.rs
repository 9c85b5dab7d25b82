//! RequestHeaderModifier / ResponseHeaderModifier: set overwrites, add appends to the existing
//! value (`foo` + add `bar` ⇒ `foo,bar`), remove deletes. Names are case-insensitive because
//! `http::HeaderName` is always lower case.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A compiled header modifier.
#[derive(Debug, Default)]
pub(crate) struct HeaderModifier {
    /// Headers to overwrite.
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    /// Values to append.
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
    /// Headers to delete.
    pub(crate) remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Compiles a model modifier; the error names the bad header.
    pub(crate) fn compile(
        model: &meridian_proto::model::route::HeaderModifier,
    ) -> Result<Self, String> {
        let pair = |(name, value): &(String, String)| -> Result<(HeaderName, HeaderValue), String> {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("header {name:?}: invalid value {value:?}"))?;
            Ok((header, value))
        };
        Ok(Self {
            set: model.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: model.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: model
                .remove
                .iter()
                .map(|name| {
                    HeaderName::try_from(name.as_str())
                        .map_err(|_| format!("invalid header name {name:?}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the modifier to `headers`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            let joined = {
                let mut existing = headers.get_all(name).iter().peekable();
                if existing.peek().is_none() {
                    None
                } else {
                    let mut bytes = Vec::new();
                    for v in existing {
                        bytes.extend_from_slice(v.as_bytes());
                        bytes.push(b',');
                    }
                    bytes.extend_from_slice(value.as_bytes());
                    HeaderValue::from_bytes(&bytes).ok()
                }
            };
            headers.insert(name.clone(), joined.unwrap_or_else(|| value.clone()));
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::model::route::HeaderModifier as Model;

    fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn set_add_remove_case_insensitively() {
        let modifier = HeaderModifier::compile(&Model {
            set: s(&[("X-Header-Set", "set-overwrites-values")]),
            add: s(&[("X-Header-Add", "add-appends-values")]),
            remove: vec!["X-Header-Remove".into()],
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-header-set", HeaderValue::from_static("some-other-value"));
        headers.insert("x-header-add", HeaderValue::from_static("add-value"));
        headers.insert("x-header-remove", HeaderValue::from_static("val"));
        modifier.apply(&mut headers);
        assert_eq!(headers["x-header-set"], "set-overwrites-values");
        assert_eq!(headers["x-header-add"], "add-value,add-appends-values");
        assert!(!headers.contains_key("x-header-remove"));

        let mut empty = HeaderMap::new();
        modifier.apply(&mut empty);
        assert_eq!(empty["x-header-add"], "add-appends-values");
    }

    #[test]
    fn bad_names_are_named() {
        let error = HeaderModifier::compile(&Model {
            set: s(&[("bad header", "v")]),
            ..Model::default()
        })
        .unwrap_err();
        assert!(error.contains("\"bad header\""), "{error}");
    }
}
