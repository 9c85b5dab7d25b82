//! Validated names: cluster and region names, fully qualified domain names, object keys.
//!
//! Every name that crosses a boundary (admin API, agent stream, YAML) is parsed into one of these
//! types once, so the rest of the code never re-validates strings.

use std::fmt;
use std::str::FromStr;

use super::ModelError;

/// A cluster's name: a DNS-1123 label (lower-case letters, digits and '-', 1..=63 characters,
/// starting and ending with an alphanumeric character), as Kubernetes names clusters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterName(String);

/// A region's name (for example `us`, `eu-west`): the same DNS-1123 label rule as a cluster name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region(String);

/// A fully qualified domain name, normalized: lower case, no trailing dot, each label 1..=63
/// characters of letters, digits, '-' and '_' (the underscore for service labels such as
/// `_acme-challenge`), at most 253 characters in all.
///
/// DNS names are case-insensitive; normalizing once here means every map keyed by `Fqdn`
/// compares the way DNS does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fqdn(String);

/// The key of a namespaced object (`namespace/name`), used for routes, services, gateways and
/// secrets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The object's namespace (a DNS-1123 label).
    pub namespace: String,
    /// The object's name (a DNS-1123 subdomain).
    pub name: String,
}

// === impl ClusterName ===

impl ClusterName {
    /// Parses and validates a cluster name.
    pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        check_label(&name).map_err(|why| ModelError::invalid("cluster name", &name, why))?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

// === impl Region ===

impl Region {
    /// Parses and validates a region name.
    pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        check_label(&name).map_err(|why| ModelError::invalid("region", &name, why))?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Region {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

// === impl Fqdn ===

impl Fqdn {
    /// Parses a domain name, lower-casing it and dropping one trailing dot.
    pub fn new(name: impl AsRef<str>) -> Result<Self, ModelError> {
        let raw = name.as_ref();
        let trimmed = raw.strip_suffix('.').unwrap_or(raw);
        let lower = trimmed.to_ascii_lowercase();
        check_fqdn(&lower).map_err(|why| ModelError::invalid("domain name", raw, why))?;
        Ok(Self(lower))
    }

    /// The normalized name, without a trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` equals `zone` or lies below it (`a.b.example.com` is within `example.com`).
    pub fn is_within(&self, zone: &Fqdn) -> bool {
        self.0 == zone.0
            || (self.0.len() > zone.0.len()
                && self.0.ends_with(zone.0.as_str())
                && self.0.as_bytes()[self.0.len() - zone.0.len() - 1] == b'.')
    }

    /// The labels from left to right.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Fqdn {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

// === impl ObjectKey ===

impl ObjectKey {
    /// Builds a key, validating the namespace as a DNS-1123 label and the name as a DNS-1123
    /// subdomain (Kubernetes' rules for these objects).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self, ModelError> {
        let namespace = namespace.into();
        let name = name.into();
        check_label(&namespace).map_err(|why| ModelError::invalid("namespace", &namespace, why))?;
        check_subdomain(&name).map_err(|why| ModelError::invalid("name", &name, why))?;
        Ok(Self { namespace, name })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ObjectKey {
    type Err = ModelError;
    /// Parses `namespace/name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name)) => Self::new(namespace, name),
            None => Err(ModelError::invalid(
                "object key",
                s,
                "expected <namespace>/<name>".to_string(),
            )),
        }
    }
}

// === validation ===

/// Checks a DNS-1123 label: 1..=63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long, at most 63 are allowed",
            s.len()
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {bad:?}; only lower-case letters, digits and '-' are allowed"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn check_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!(
            "is {} characters long, at most 253 are allowed",
            s.len()
        ));
    }
    for label in s.split('.') {
        check_label(label)?;
    }
    Ok(())
}

/// Checks a lower-cased domain name without trailing dot.
fn check_fqdn(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "is {} characters long, at most 253 are allowed",
            s.len()
        ));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("has an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("label {label:?} contains {bad:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_dns_1123_labels() {
        assert!(ClusterName::new("us-east").is_ok());
        assert!(ClusterName::new("a1").is_ok());
        for bad in ["", "US", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(ClusterName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fqdn_is_normalized_and_checked() {
        let name = Fqdn::new("App.Demo.Meridian.TEST.").unwrap();
        assert_eq!(name.as_str(), "app.demo.meridian.test");
        assert!(Fqdn::new("_acme-challenge.example.com").is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a b.com",
            &format!("{}.com", "x".repeat(64)),
        ] {
            assert!(Fqdn::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fqdn_within_zone_respects_label_boundaries() {
        let zone = Fqdn::new("example.com").unwrap();
        assert!(Fqdn::new("example.com").unwrap().is_within(&zone));
        assert!(Fqdn::new("a.b.example.com").unwrap().is_within(&zone));
        assert!(!Fqdn::new("badexample.com").unwrap().is_within(&zone));
        assert!(!Fqdn::new("com").unwrap().is_within(&zone));
    }

    #[test]
    fn object_keys_parse_from_namespace_slash_name() {
        let key: ObjectKey = "shop/web.v2".parse().unwrap();
        assert_eq!(key.namespace, "shop");
        assert_eq!(key.name, "web.v2");
        assert_eq!(key.to_string(), "shop/web.v2");
        assert!("noslash".parse::<ObjectKey>().is_err());
        assert!("Shop/web".parse::<ObjectKey>().is_err());
    }
}
