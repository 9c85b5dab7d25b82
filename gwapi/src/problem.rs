//! [`Problem`]: one precise complaint about one document, naming where it came from and the
//! offending field.

use std::fmt;

/// One problem with one document: the source (file name or `request`), the document number in
/// a multi-document file, the object kind and key when known, the field path
/// (`spec.rules[1].matches[0].path.value`) and what is wrong.
///
/// Display: `routes.yaml doc 2 HTTPRoute shop/web: spec.rules[1].matches[0].path.value: must
/// start with '/'`.
///
/// A problem is either **fatal** (the document or object it is about was dropped: bad YAML, a
/// type error, an invalid name, a Gateway without listeners) or not (the object is kept and the
/// problem becomes part of its status: a listener with an unsupported protocol, a dropped route
/// rule, a rejected route, a Service port skipped). Sources keep an object's (or file's) last
/// good content only over fatal problems; see `validate`'s three levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// File name, or another label for where the text came from.
    pub source: String,
    /// 1-based document number within the source; `None` for a single JSON body.
    pub doc: Option<usize>,
    /// Object kind (`HTTPRoute`), when the document got that far.
    pub kind: Option<String>,
    /// `namespace/name` (or `name` for cluster-scoped objects), when known.
    pub key: Option<String>,
    /// Field path inside the object; empty for document-level problems.
    pub path: String,
    /// What is wrong, as a sentence fragment without a trailing period.
    pub message: String,
    /// Whether the object (or document) it is about was dropped. False when the object was
    /// kept with this problem turned into status (a listener condition, a dropped rule, a
    /// rejected route) or the offending entry skipped.
    pub fatal: bool,
}

impl std::error::Error for Problem {}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(doc) = self.doc {
            write!(f, " doc {doc}")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        if let Some(key) = &self.key {
            write!(f, " {key}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Where a document came from; every [`Problem`] about it starts from here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// File name (or `request`, or a cluster watch label).
    pub source: String,
    /// 1-based document number; `None` for a single JSON body.
    pub doc: Option<usize>,
    /// Unknown fields in a Gateway API object's `spec` are let through (a warning) instead of
    /// dropping the object: set for objects from the Kubernetes API server, which validated
    /// them against the installed CRDs (a newer Gateway API may have fields Meridian lacks).
    /// Hand-written files and admin API bodies leave it unset: there an unknown field is a
    /// typo, and ignoring it could widen a route (`matchez` would leave the match-all default).
    pub lenient_fields: bool,
}

// === impl Origin ===

impl Origin {
    /// This origin, letting unknown `spec` fields through (see [`Origin::lenient_fields`]).
    pub fn lenient(mut self) -> Self {
        self.lenient_fields = true;
        self
    }

    /// An origin for document `doc` (1-based) of `source`.
    pub fn new(source: impl Into<String>, doc: Option<usize>) -> Self {
        Self {
            source: source.into(),
            doc,
            lenient_fields: false,
        }
    }

    /// A problem about the whole document, before its kind is known (fatal until
    /// [`parse_documents`](crate::parse_documents) finds the object kept).
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            source: self.source.clone(),
            doc: self.doc,
            kind: None,
            key: None,
            path: String::new(),
            message: message.into(),
            fatal: true,
        }
    }

    /// A problem about field `path` of the object `kind` `key`.
    pub fn object_problem(
        &self,
        kind: &str,
        key: Option<&str>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            source: self.source.clone(),
            doc: self.doc,
            kind: Some(kind.to_string()),
            key: key.map(str::to_string),
            path: path.into(),
            message: message.into(),
            fatal: true,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(doc) = self.doc {
            write!(f, " doc {doc}")?;
        }
        Ok(())
    }
}
