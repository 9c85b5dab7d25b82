//! Field-level checks copied from the Gateway API CRD schemas and CEL rules (patterns,
//! lengths, GEP-2257 durations). Each returns a message naming what is wrong.
//!
//! The patterns are written as character checks rather than regexes: they are simple, run on
//! every reload, and cannot fail to compile.

use std::time::Duration;

/// HTTP methods the Gateway API `HTTPMethod` enum allows.
pub(crate) const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `Hostname`: `^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`,
/// 1..=253 characters. Lower case only, as the CRD requires; IP addresses are not host names.
pub(crate) fn hostname(value: &str) -> Result<(), String> {
    let rest = value.strip_prefix("*.").unwrap_or(value);
    if rest.contains('*') {
        return Err(format!(
            "{value:?} is not a valid hostname: a wildcard is only allowed as the whole first label (`*.example.com`)"
        ));
    }
    check_dns_name(value, rest)?;
    if rest
        .split('.')
        .all(|label| label.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "{value:?} is not a valid hostname: IP addresses are not allowed"
        ));
    }
    Ok(())
}

/// `PreciseHostname`: a host name without wildcard (redirect and rewrite targets).
pub(crate) fn precise_hostname(value: &str) -> Result<(), String> {
    if value.contains('*') {
        return Err(format!(
            "{value:?} is not a valid hostname: wildcards are not allowed here"
        ));
    }
    check_dns_name(value, value)
}

fn check_dns_name(whole: &str, name: &str) -> Result<(), String> {
    if whole.len() > 253 {
        return Err(format!(
            "hostname is {} characters long, at most 253 are allowed",
            whole.len()
        ));
    }
    if name.is_empty() {
        return Err("hostname must not be empty".to_string());
    }
    for label in name.split('.') {
        let valid_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let valid_ends = !label.starts_with('-') && !label.ends_with('-');
        if label.is_empty() || !valid_chars || !valid_ends || label.len() > 63 {
            return Err(format!(
                "{whole:?} is not a valid hostname: each label must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// `HTTPPathMatch` CEL rules for `Exact` and `PathPrefix` values.
pub(crate) fn match_path(value: &str) -> Result<(), String> {
    if value.len() > 1024 {
        return Err(format!(
            "is {} characters long, at most 1024 are allowed",
            value.len()
        ));
    }
    if !value.starts_with('/') {
        return Err("must start with '/'".to_string());
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if value.contains(bad) {
            return Err(format!("must not contain {bad:?}"));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Err("must not end with '/..' or '/.'".to_string());
    }
    let bytes = value.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let b = bytes[index];
        if b == b'%' {
            let hex = bytes.get(index + 1..index + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err("'%' must be followed by two hex digits".to_string());
            }
            index += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&b)) {
            return Err(format!(
                "contains {:?}, which is not allowed in a path (percent-encode it)",
                char::from(b)
            ));
        }
        index += 1;
    }
    Ok(())
}

/// `HTTPHeaderName`: `^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`, 1..=256 characters.
pub(crate) fn header_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("name must not be empty".to_string());
    }
    if value.len() > 256 {
        return Err(format!(
            "name is {} characters long, at most 256 are allowed",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c)))
    {
        return Err(format!(
            "{value:?} is not a valid header name: {bad:?} is not allowed"
        ));
    }
    Ok(())
}

/// A header value the gateway can send (RFC 9110 §5.5 field-value, as the `http` crate
/// accepts it): visible ASCII, spaces, tabs and obs-text; never CR, LF, NUL or other control
/// characters, which would split the header or be refused when the gateway compiles the
/// config (the CRD only bounds the length).
pub(crate) fn header_value(value: &str) -> Result<(), String> {
    match value
        .bytes()
        .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        Some(bad) => Err(format!(
            "contains the control character {:?}, which is not allowed in a header value",
            char::from(bad)
        )),
        None => Ok(()),
    }
}

/// A string of `min..=max` characters.
pub(crate) fn length(value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min {
        return Err(if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must be at least {min} characters long")
        });
    }
    if n > max {
        return Err(format!("is {n} characters long, at most {max} are allowed"));
    }
    Ok(())
}

/// `SectionName` (listener and rule names): a DNS-1123 subdomain, 1..=253 characters.
pub(crate) fn section_name(value: &str) -> Result<(), String> {
    meridian_proto::model::names::check_subdomain(value)
        .map_err(|why| format!("{value:?} is not a valid name: {why}"))
}

/// `Group`: empty or a DNS-1123 subdomain.
pub(crate) fn group(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    meridian_proto::model::names::check_subdomain(value)
        .map_err(|why| format!("{value:?} is not a valid API group: {why}"))
}

/// `Kind`: `^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`, 1..=63 characters.
pub(crate) fn kind(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && !value.ends_with('-')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid kind"))
    }
}

/// `Namespace`: a DNS-1123 label.
pub(crate) fn namespace(value: &str) -> Result<(), String> {
    meridian_proto::model::names::check_label(value)
        .map_err(|why| format!("{value:?} is not a valid namespace: {why}"))
}

/// `ObjectName`: 1..=253 characters (the CRD checks only the length; Kubernetes names are
/// DNS-1123 subdomains in practice, so we check that too).
pub(crate) fn object_name(value: &str) -> Result<(), String> {
    meridian_proto::model::names::check_subdomain(value)
        .map_err(|why| format!("{value:?} is not a valid object name: {why}"))
}

/// `PortNumber`: 1..=65535.
pub(crate) fn port(value: i64) -> Result<u16, String> {
    match u16::try_from(value) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{value} is not a valid port (1-65535)")),
    }
}

/// GEP-2257 duration: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
pub(crate) fn duration(value: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{value:?} is not a valid duration: expected 1 to 4 groups of up to 5 digits followed by h, m, s or ms (e.g. 1h30m, 500ms)"
        )
    };
    let bytes = value.as_bytes();
    let mut total = Duration::ZERO;
    let mut groups = 0;
    let mut index = 0;
    while index < bytes.len() {
        let digits_start = index;
        while index < bytes.len() && bytes[index].is_ascii_digit() {
            index += 1;
        }
        let digits = &value[digits_start..index];
        if digits.is_empty() || digits.len() > 5 {
            return Err(invalid());
        }
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        let unit = match bytes.get(index..) {
            Some([b'm', b's', ..]) => {
                index += 2;
                Duration::from_millis(number)
            }
            Some([b'h', ..]) => {
                index += 1;
                Duration::from_secs(number * 3600)
            }
            Some([b'm', ..]) => {
                index += 1;
                Duration::from_secs(number * 60)
            }
            Some([b's', ..]) => {
                index += 1;
                Duration::from_secs(number)
            }
            _ => return Err(invalid()),
        };
        total += unit;
        groups += 1;
        if groups > 4 {
            return Err(invalid());
        }
    }
    if groups == 0 {
        return Err(invalid());
    }
    Ok(total)
}

/// A CORS origin: `*`, or `scheme://host[:port]` where the host may start with `*` (greedy
/// over labels to the left).
pub(crate) fn cors_origin(value: &str) -> Result<(), String> {
    if value == "*" {
        return Ok(());
    }
    let invalid = |why: &str| format!("{value:?} is not a valid origin: {why}");
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(invalid("expected scheme://host[:port] or *"));
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(invalid("bad scheme"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !ok {
            return Err(invalid("bad port"));
        }
    }
    if host == "*" {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !host_ok {
        return Err(invalid("bad host"));
    }
    Ok(())
}

/// A regular expression the gateway will compile (Rust `regex`, RE2-like syntax).
pub(crate) fn regex(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("regular expression must not be empty".to_string());
    }
    regex::Regex::new(value).map(|_| ()).map_err(|error| {
        format!(
            "invalid regular expression: {}",
            first_line(&error.to_string())
        )
    })
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An RFC 3339 timestamp as milliseconds since the Unix epoch.
pub(crate) fn timestamp_ms(value: &str) -> Result<i64, String> {
    let parsed = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|error| format!("{value:?} is not an RFC 3339 timestamp: {error}"))?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{value:?} is out of range"))
}

/// Formats milliseconds since the Unix epoch as RFC 3339 (UTC).
pub(crate) fn format_timestamp_ms(ms: i64) -> Option<String> {
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Formats a duration in GEP-2257 form (`1h30m`, `500ms`, `0s`).
pub(crate) fn format_duration(value: Duration) -> String {
    if value.is_zero() {
        return "0s".to_string();
    }
    let total_ms = value.as_millis();
    let mut parts = String::new();
    let hours = total_ms / 3_600_000;
    let minutes = (total_ms / 60_000) % 60;
    let seconds = (total_ms / 1000) % 60;
    let millis = total_ms % 1000;
    for (amount, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s"), (millis, "ms")] {
        if amount > 0 {
            parts.push_str(&format!("{amount}{unit}"));
        }
    }
    parts
}
