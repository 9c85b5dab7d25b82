//! Validation tests: every CRD/CEL rule we replicate, the defaults we fill in, and how findings
//! drop a rule or reject a route.

use std::time::Duration;

use meridian_proto::model::route::{
    HttpFilter, HttpRoute, PathMatch, PathModifier, Resolution, SessionKind, SessionPersistence,
    StringMatch,
};

use super::field;
use crate::document::{Resource, Validated, parse_documents};
use crate::status::Reason;

const PREFIX: &str = "r.yaml doc 1 HTTPRoute ns/r: ";

/// Parses an HTTPRoute whose `spec` is `spec` (YAML, indented by the caller-free helper).
fn http(spec: &str) -> (Option<Validated<HttpRoute>>, Vec<String>) {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  namespace: ns\nspec:\n",
    );
    for line in spec.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    let (objects, problems) = parse_documents(&text, "r.yaml");
    let route = objects.into_iter().find_map(|o| match o.resource {
        Resource::HttpRoute(v) => Some(v),
        _ => None,
    });
    let problems = problems
        .iter()
        .map(|p| {
            let text = p.to_string();
            text.strip_prefix(PREFIX)
                .map(str::to_string)
                .unwrap_or(text)
        })
        .collect();
    (route, problems)
}

/// Validates one rule (a YAML flow mapping) and returns the problems (prefix stripped).
fn rule_problems(rule: &str) -> Vec<String> {
    http(&format!("parentRefs: [{{name: gw}}]\nrules:\n- {rule}")).1
}

#[test]
fn every_rule_level_rule_is_enforced() {
    let backend = "backendRefs: [{name: svc, port: 80}]";
    let cases: Vec<(String, &[&str])> = vec![
        // Path values (CEL on HTTPPathMatch).
        ("{matches: [{path: {type: PathPrefix, value: foo}}]}".into(), &["spec.rules[0].matches[0].path.value: must start with '/'"]),
        ("{matches: [{path: {type: Exact, value: /a//b}}]}".into(), &["spec.rules[0].matches[0].path.value: must not contain \"//\""]),
        ("{matches: [{path: {value: /a/../b}}]}".into(), &["spec.rules[0].matches[0].path.value: must not contain \"/../\""]),
        ("{matches: [{path: {value: /a/./b}}]}".into(), &["spec.rules[0].matches[0].path.value: must not contain \"/./\""]),
        ("{matches: [{path: {value: /a%2fb}}]}".into(), &["spec.rules[0].matches[0].path.value: must not contain \"%2f\""]),
        ("{matches: [{path: {value: '/a#b'}}]}".into(), &["spec.rules[0].matches[0].path.value: must not contain \"#\""]),
        ("{matches: [{path: {value: /a/..}}]}".into(), &["spec.rules[0].matches[0].path.value: must not end with '/..' or '/.'"]),
        ("{matches: [{path: {value: /a b}}]}".into(), &["spec.rules[0].matches[0].path.value: contains ' ', which is not allowed in a path (percent-encode it)"]),
        ("{matches: [{path: {value: /a%zz}}]}".into(), &["spec.rules[0].matches[0].path.value: '%' must be followed by two hex digits"]),
        (format!("{{matches: [{{path: {{value: /{}}}}}]}}", "a".repeat(1024)), &["spec.rules[0].matches[0].path.value: is 1025 characters long, at most 1024 are allowed"]),
        ("{matches: [{path: {type: Glob, value: /a}}]}".into(), &["spec.rules[0].matches[0].path.type: unsupported value \"Glob\" (supported: Exact, PathPrefix, RegularExpression)"]),
        ("{matches: [{path: {type: RegularExpression, value: '/a('}}]}".into(), &["spec.rules[0].matches[0].path.value: invalid regular expression: regex parse error: /a( ^ error: unclosed group"]),
        // Headers, query parameters, methods.
        ("{matches: [{headers: [{name: 'bad name', value: x}]}]}".into(), &["spec.rules[0].matches[0].headers[0].name: \"bad name\" is not a valid header name: ' ' is not allowed"]),
        ("{matches: [{headers: [{name: x, value: ''}]}]}".into(), &["spec.rules[0].matches[0].headers[0].value: must not be empty"]),
        ("{matches: [{headers: [{name: x, value: v, type: Prefix}]}]}".into(), &["spec.rules[0].matches[0].headers[0].type: unsupported value \"Prefix\" (supported: Exact, RegularExpression)"]),
        ("{matches: [{queryParams: [{name: q, value: '[', type: RegularExpression}]}]}".into(), &["spec.rules[0].matches[0].queryParams[0].value: invalid regular expression: regex parse error: [ ^ error: unclosed character class"]),
        ("{matches: [{method: get}]}".into(), &["spec.rules[0].matches[0].method: unsupported value \"get\" (supported: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)"]),
        (format!("{{matches: [{}]}}", vec!["{method: GET}"; 65].join(", ")), &["spec.rules[0].matches: has 65 entries, at most 64 are allowed"]),
        (format!("{{matches: [{{headers: [{}]}}]}}", (0..17).map(|i| format!("{{name: h{i}, value: v}}")).collect::<Vec<_>>().join(", ")), &["spec.rules[0].matches[0].headers: has 17 entries, at most 16 are allowed"]),
        // Filters: type/field consistency, repetition, combinations.
        ("{filters: [{type: RequestHeaderModifier, requestRedirect: {statusCode: 301}}]}".into(), &[
            "spec.rules[0].filters[0].requestRedirect: must not be set when type is RequestHeaderModifier (it belongs to type RequestRedirect)",
            "spec.rules[0].filters[0].requestHeaderModifier: must be set when type is RequestHeaderModifier",
        ]),
        ("{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: \"a\\r\\nInjected: 1\"}]}}]}".into(), &["spec.rules[0].filters[0].requestHeaderModifier.set[0].value: contains the control character '\\r', which is not allowed in a header value"]),
        ("{filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x, value: \"a\\u0000\"}]}}]}".into(), &["spec.rules[0].filters[0].responseHeaderModifier.add[0].value: contains the control character '\\0', which is not allowed in a header value"]),
        ("{filters: [{type: Rewrite}]}".into(), &["spec.rules[0].filters[0].type: unsupported value \"Rewrite\" (supported: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect, URLRewrite, CORS, ExtensionRef, ExternalAuth)"]),
        ("{filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Foo, name: f}}]}".into(), &["spec.rules[0].filters[0].type: filter type ExtensionRef is not supported by Meridian"]),
        (format!("{{filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: a, value: b}}]}}}}, {{type: RequestHeaderModifier, requestHeaderModifier: {{remove: [c]}}}}], {backend}}}"), &["spec.rules[0].filters[1].type: a RequestHeaderModifier filter may appear at most once in a filter list"]),
        ("{filters: [{type: RequestRedirect, requestRedirect: {hostname: a.com}}, {type: URLRewrite, urlRewrite: {hostname: b.com}}]}".into(), &["spec.rules[0].filters: RequestRedirect and URLRewrite filters cannot be combined"]),
        (format!("{{filters: [{{type: RequestRedirect, requestRedirect: {{hostname: a.com}}}}], {backend}}}"), &["spec.rules[0]: a RequestRedirect filter must not be combined with backendRefs"]),
        (format!("{{matches: [{{path: {{type: Exact, value: /a}}}}], filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /b}}}}}}], {backend}}}"), &["spec.rules[0].matches: a ReplacePrefixMatch path modifier needs exactly one match, with a PathPrefix path"]),
        ("{matches: [{path: {value: /a}}, {path: {value: /b}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /c}}}]}".into(), &["spec.rules[0].matches: a ReplacePrefixMatch path modifier needs exactly one match, with a PathPrefix path"]),
        ("{filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replacePrefixMatch: /x}}}]}".into(), &[
            "spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch: must not be set when type is ReplaceFullPath",
            "spec.rules[0].filters[0].requestRedirect.path.replaceFullPath: must be set when type is ReplaceFullPath",
        ]),
        ("{filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]}".into(), &["spec.rules[0].filters[0].requestRedirect.statusCode: unsupported value 304 (supported: 301, 302, 303, 307, 308)"]),
        ("{filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]}".into(), &["spec.rules[0].filters[0].requestRedirect.scheme: unsupported value \"ftp\" (supported: http, https)"]),
        ("{filters: [{type: RequestRedirect, requestRedirect: {hostname: '*.a.com'}}]}".into(), &["spec.rules[0].filters[0].requestRedirect.hostname: \"*.a.com\" is not a valid hostname: wildcards are not allowed here"]),
        ("{filters: [{type: RequestRedirect, requestRedirect: {port: 70000}}]}".into(), &["spec.rules[0].filters[0].requestRedirect.port: 70000 is not a valid port (1-65535)"]),
        (format!("{{filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-A, value: a}}, {{name: x-a, value: b}}]}}}}], {backend}}}"), &["spec.rules[0].filters[0].requestHeaderModifier.set[1].name: \"x-a\" is listed twice (names compare case-insensitively)"]),
        (format!("{{filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: m, port: 80}}, percent: 10, fraction: {{numerator: 1}}}}}}], {backend}}}"), &["spec.rules[0].filters[0].requestMirror: only one of percent or fraction may be specified"]),
        (format!("{{filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: m, port: 80}}, fraction: {{numerator: 5, denominator: 4}}}}}}], {backend}}}"), &["spec.rules[0].filters[0].requestMirror.fraction: numerator must be less than or equal to denominator"]),
        (format!("{{filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: m, port: 80}}, percent: 101}}}}], {backend}}}"), &["spec.rules[0].filters[0].requestMirror.percent: 101 is out of range (0-100)"]),
        (format!("{{filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: m}}}}}}], {backend}}}"), &["spec.rules[0].filters[0].requestMirror.backendRef.port: required when referring to a Service"]),
        (format!("{{filters: [{{type: CORS, cors: {{allowOrigins: ['ftp//x'], allowMethods: ['*', GET], maxAge: 0}}}}], {backend}}}"), &[
            "spec.rules[0].filters[0].cors.allowOrigins[0]: \"ftp//x\" is not a valid origin: expected scheme://host[:port] or *",
            "spec.rules[0].filters[0].cors.allowMethods: '*' cannot be combined with other values",
            "spec.rules[0].filters[0].cors.maxAge: 0 is out of range (at least 1 second)",
        ]),
        // Backends.
        ("{backendRefs: [{name: svc}]}".into(), &["spec.rules[0].backendRefs[0].port: required when referring to a Service"]),
        ("{backendRefs: [{name: svc, port: 80, weight: 1000001}]}".into(), &["spec.rules[0].backendRefs[0].weight: 1000001 is out of range (0-1000000)"]),
        ("{backendRefs: [{name: svc, port: 80, namespace: Bad}]}".into(), &["spec.rules[0].backendRefs[0].namespace: \"Bad\" is not a valid namespace: contains 'B'; only lower-case letters, digits and '-' are allowed"]),
        ("{backendRefs: [{name: svc, port: 80, filters: [{type: CORS, cors: {}}]}]}".into(), &["spec.rules[0].backendRefs[0].filters[0].type: filter type CORS is only supported on rules, not on backendRefs"]),
        (format!("{{backendRefs: [{}]}}", vec!["{name: s, port: 1}"; 17].join(", ")), &["spec.rules[0].backendRefs: has 17 entries, at most 16 are allowed"]),
        // Timeouts, retry, session persistence.
        (format!("{{timeouts: {{request: 1s, backendRequest: 2s}}, {backend}}}"), &["spec.rules[0].timeouts.backendRequest: must not be longer than the request timeout"]),
        (format!("{{timeouts: {{request: 1d}}, {backend}}}"), &["spec.rules[0].timeouts.request: \"1d\" is not a valid duration: expected 1 to 4 groups of up to 5 digits followed by h, m, s or ms (e.g. 1h30m, 500ms)"]),
        (format!("{{retry: {{codes: [500, 600], attempts: -1}}, {backend}}}"), &[
            "spec.rules[0].retry.codes[1]: 600 is out of range (400-599)",
            "spec.rules[0].retry.attempts: -1 is out of range (at least 0)",
        ]),
        (format!("{{sessionPersistence: {{type: Sticky, sessionName: \"a b\"}}, {backend}}}"), &[
            "spec.rules[0].sessionPersistence.type: \"Sticky\" is not a session persistence type (Cookie or Header)",
            "spec.rules[0].sessionPersistence.sessionName: \"a b\" is not a valid session name: 1 to 128 token characters (letters, digits and !#$%&'*+-.^_`|~)",
        ]),
        (format!("{{sessionPersistence: {{cookieConfig: {{lifetimeType: Permanent}}, idleTimeout: 0s}}, {backend}}}"), &[
            "spec.rules[0].sessionPersistence.idleTimeout: must be longer than zero",
            "spec.rules[0].sessionPersistence.absoluteTimeout: a Permanent cookie needs an absoluteTimeout (it becomes the cookie's Max-Age)",
        ]),
        (format!("{{sessionPersistence: {{type: Header, cookieConfig: {{lifetimeType: Session}}}}, {backend}}}"), &["spec.rules[0].sessionPersistence.cookieConfig: cookieConfig applies only to the Cookie type"]),
        ("{name: Bad_Name}".into(), &["spec.rules[0].name: \"Bad_Name\" is not a valid name: contains 'B'; only lower-case letters, digits and '-' are allowed"]),
    ];
    for (rule, expected) in &cases {
        assert_eq!(rule_problems(rule), *expected, "rule {rule}");
    }
}

#[test]
fn valid_rules_pass_untouched() {
    let valid = [
        "{}",
        "{backendRefs: [{name: svc, port: 80, weight: 0}]}",
        "{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}], backendRefs: [{name: s, port: 1}]}",
        "{matches: [{path: {value: /a}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}}]}",
        "{timeouts: {request: 0s, backendRequest: 10s}, backendRefs: [{name: s, port: 1}]}",
        "{matches: [{path: {value: '/a%2Ab/~!$&()*+,;=:@'}}]}",
        "{matches: [{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]}",
        "{filters: [{type: CORS, cors: {allowOrigins: ['*', 'https://*.example.com', 'http://a.b:8080'], allowMethods: ['*'], allowHeaders: [x-a], exposeHeaders: ['*']}}], backendRefs: [{name: s, port: 1}]}",
        "{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 1}}}, {type: RequestMirror, requestMirror: {backendRef: {name: m2, port: 1}, fraction: {numerator: 1}}}], backendRefs: [{name: s, port: 1}]}",
        "{backendRefs: [{name: s, port: 1, filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /x}}}]}]}",
        "{sessionPersistence: {type: Header, sessionName: x-session}, backendRefs: [{name: s, port: 1}]}",
    ];
    for rule in valid {
        assert_eq!(rule_problems(rule), Vec::<String>::new(), "rule {rule}");
    }
}

#[test]
fn session_persistence_is_read_with_its_timeouts() {
    let (route, problems) = http(
        "parentRefs: [{name: gw}]
rules:
- backendRefs: [{name: svc, port: 8080}]
  sessionPersistence:
    sessionName: shop-session
    absoluteTimeout: 1h
    idleTimeout: 10m
    cookieConfig: {lifetimeType: Permanent}
- backendRefs: [{name: svc, port: 8080}]
  sessionPersistence: {}",
    );
    assert_eq!(problems, Vec::<String>::new());
    let route = route.expect("route").route;
    assert_eq!(
        route.rules[0].session_persistence,
        Some(SessionPersistence {
            name: Some("shop-session".into()),
            kind: SessionKind::Cookie,
            absolute_timeout: Some(Duration::from_secs(3600)),
            idle_timeout: Some(Duration::from_secs(600)),
            permanent_cookie: true,
        })
    );
    assert_eq!(
        route.rules[1].session_persistence,
        Some(SessionPersistence {
            name: None,
            kind: SessionKind::Cookie,
            absolute_timeout: None,
            idle_timeout: None,
            permanent_cookie: false,
        })
    );
}

#[test]
fn defaults_are_filled_in() {
    let (route, problems) = http(
        "parentRefs: [{name: gw}]
rules:
- filters:
  - {type: RequestRedirect, requestRedirect: {hostname: example.org}}
- backendRefs: [{name: svc, port: 8080}]
  filters:
  - {type: CORS, cors: {allowOrigins: ['*']}}
  - {type: RequestMirror, requestMirror: {backendRef: {name: m, namespace: other, port: 80}}}
  - {type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 25}}
  - {type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 1}}}",
    );
    assert_eq!(problems, Vec::<String>::new());
    let route = route.expect("route").route;
    let parent = &route.parent_refs[0];
    assert_eq!(
        (
            parent.group.as_str(),
            parent.kind.as_str(),
            parent.namespace.as_str()
        ),
        ("gateway.networking.k8s.io", "Gateway", "ns")
    );
    assert_eq!(route.created_unix_ms, 0);
    let redirect_rule = &route.rules[0];
    assert_eq!(redirect_rule.matches.len(), 1);
    assert_eq!(redirect_rule.matches[0].path, PathMatch::Prefix("/".into()));
    let HttpFilter::RequestRedirect(redirect) = &redirect_rule.filters[0] else {
        panic!("expected a redirect");
    };
    assert_eq!(redirect.status_code, 302);
    let rule = &route.rules[1];
    let backend = &rule.backend_refs[0];
    assert_eq!(backend.weight, 1);
    assert_eq!(
        (
            backend.backend_ref.group.as_str(),
            backend.backend_ref.kind.as_str(),
            backend.backend_ref.namespace.as_str()
        ),
        ("", "Service", "ns")
    );
    assert_eq!(backend.backend_ref.resolution, Resolution::Unresolved);
    let HttpFilter::Cors(cors) = &rule.filters[0] else {
        panic!("expected CORS");
    };
    assert_eq!((cors.max_age_seconds, cors.allow_credentials), (5, false));
    let mirrors: Vec<_> = rule
        .filters
        .iter()
        .filter_map(|f| match f {
            HttpFilter::RequestMirror(m) => Some((m.backend_ref.namespace.as_str(), m.fraction)),
            _ => None,
        })
        .collect();
    assert_eq!(
        mirrors,
        [
            ("other", None),
            ("ns", Some((25, 100))),
            ("ns", Some((1, 100)))
        ]
    );
}

#[test]
fn absent_rules_default_to_one_catch_all_rule() {
    let (route, problems) = http("parentRefs: [{name: gw}]");
    assert!(problems.is_empty());
    let route = route.expect("route");
    assert!(route.rejection.is_none());
    assert_eq!(route.route.rules.len(), 1);
    assert_eq!(
        route.route.rules[0].matches[0].path,
        PathMatch::Prefix("/".into())
    );
    assert!(route.route.rules[0].backend_refs.is_empty());
}

#[test]
fn header_and_query_duplicates_first_wins() {
    let (route, problems) = http(
        "rules:
- matches:
  - headers: [{name: Version, value: one}, {name: version, value: two}]
    queryParams: [{name: a, value: '1'}, {name: A, value: '2'}, {name: a, value: '3'}]",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let m = &route.expect("route").route.rules[0].matches[0];
    assert_eq!(m.headers.len(), 1);
    assert_eq!(m.headers[0].value, StringMatch::Exact("one".into()));
    let query: Vec<(&str, &StringMatch)> = m
        .query_params
        .iter()
        .map(|q| (q.name.as_str(), &q.value))
        .collect();
    assert_eq!(
        query,
        [
            ("a", &StringMatch::Exact("1".into())),
            ("A", &StringMatch::Exact("2".into()))
        ]
    );
}

#[test]
fn invalid_rules_are_dropped_and_the_rest_kept() {
    let (route, problems) = http(
        "parentRefs: [{name: gw}]
rules:
- name: good
  backendRefs: [{name: a, port: 80}]
- name: bad
  matches: [{path: {value: nope}}]
  backendRefs: [{name: b, port: 80}]
- name: good
  backendRefs: [{name: c, port: 80}]",
    );
    assert_eq!(
        problems,
        [
            "spec.rules[1].matches[0].path.value: must start with '/'",
            "spec.rules[2].name: \"good\" is used by an earlier rule; rule names must be unique",
        ]
    );
    let route = route.expect("route");
    assert!(route.rejection.is_none());
    assert_eq!(route.route.rules.len(), 1);
    assert_eq!(route.route.rules[0].backend_refs[0].backend_ref.name, "a");
    assert_eq!(
        route.dropped_rules,
        [
            "spec.rules[1].matches[0].path.value: must start with '/'",
            "spec.rules[2].name: \"good\" is used by an earlier rule; rule names must be unique",
        ]
    );
}

#[test]
fn a_route_without_valid_rules_is_rejected() {
    let cases: &[(&str, Reason, &str)] = &[
        (
            "rules: [{matches: [{method: FETCH}]}]",
            Reason::UnsupportedValue,
            "no valid rule: spec.rules[0].matches[0].method: unsupported value \"FETCH\" (supported: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)",
        ),
        (
            "rules: [{filters: [{type: RequestRedirect, requestRedirect: {port: 8080}}, {type: URLRewrite, urlRewrite: {hostname: a.b}}]}]",
            Reason::IncompatibleFilters,
            "no valid rule: spec.rules[0].filters: RequestRedirect and URLRewrite filters cannot be combined",
        ),
        (
            "rules: []",
            Reason::UnsupportedValue,
            "the route has no rules",
        ),
        (
            "hostnames: [Example.com]",
            Reason::UnsupportedValue,
            "spec.hostnames[0]: \"Example.com\" is not a valid hostname: each label must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
        ),
        (
            "hostnames: ['a.*.com']",
            Reason::UnsupportedValue,
            "spec.hostnames[0]: \"a.*.com\" is not a valid hostname: a wildcard is only allowed as the whole first label (`*.example.com`)",
        ),
        (
            "hostnames: ['10.0.0.1']",
            Reason::UnsupportedValue,
            "spec.hostnames[0]: \"10.0.0.1\" is not a valid hostname: IP addresses are not allowed",
        ),
        (
            "parentRefs: [{name: gw}, {name: gw}]",
            Reason::UnsupportedValue,
            "spec.parentRefs[0]: sectionName or port must be set when several parentRefs name the same parent; spec.parentRefs[1]: sectionName or port must be set when several parentRefs name the same parent; spec.parentRefs[1]: repeats an earlier parentRef (same parent, sectionName and port)",
        ),
        (
            "parentRefs: [{name: gw, sectionName: a}, {name: gw, sectionName: a}]",
            Reason::UnsupportedValue,
            "spec.parentRefs[1]: repeats an earlier parentRef (same parent, sectionName and port)",
        ),
        (
            "parentRefs: [{name: gw, port: 0}]",
            Reason::UnsupportedValue,
            "spec.parentRefs[0].port: 0 is not a valid port (1-65535)",
        ),
    ];
    for (spec, reason, message) in cases {
        let (route, problems) = http(spec);
        let route = route.expect("route is kept");
        let rejection = route.rejection.expect("route is rejected");
        assert_eq!(
            (rejection.reason, rejection.message.as_str()),
            (*reason, *message),
            "spec {spec}"
        );
        assert!(route.dropped_rules.is_empty());
        if *spec != "rules: []" {
            assert!(!problems.is_empty(), "spec {spec}");
        }
    }
    let many_hostnames = (0..17)
        .map(|i| format!("h{i}.com"))
        .collect::<Vec<_>>()
        .join(", ");
    let (route, _) = http(&format!("hostnames: [{many_hostnames}]"));
    assert_eq!(
        route.expect("route").rejection.expect("rejected").message,
        "spec.hostnames: has 17 entries, at most 16 are allowed"
    );
    let many_rules = vec!["{}"; 17].join(", ");
    let (route, _) = http(&format!("rules: [{many_rules}]"));
    assert_eq!(
        route.expect("route").rejection.expect("rejected").message,
        "spec.rules: has 17 rules, at most 16 are allowed"
    );
    let many_matches =
        vec!["{matches: [".to_string() + &vec!["{method: GET}"; 60].join(", ") + "]}"; 3]
            .join(", ");
    let (route, _) = http(&format!("rules: [{many_matches}]"));
    assert_eq!(
        route.expect("route").rejection.expect("rejected").message,
        "spec.rules: have 180 matches in all, at most 128 are allowed"
    );
}

#[test]
fn creation_timestamps_and_generations_are_read() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  generation: 7\n  creationTimestamp: '2024-05-01T10:00:00Z'\n";
    let (objects, problems) = parse_documents(text, "r.yaml");
    assert!(problems.is_empty());
    let Resource::HttpRoute(route) = &objects[0].resource else {
        panic!("expected a route");
    };
    assert_eq!(route.generation, 7);
    assert_eq!(route.route.created_unix_ms, 1_714_557_600_000);
    assert_eq!(route.route.key.namespace, "default");
}

fn grpc_problems(spec: &str) -> Vec<String> {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: g\n  namespace: ns\nspec:\n",
    );
    for line in spec.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    parse_documents(&text, "g.yaml")
        .1
        .iter()
        .map(|p| p.to_string().replace("g.yaml doc 1 GRPCRoute ns/g: ", ""))
        .collect()
}

#[test]
fn grpc_route_rules() {
    let cases: &[(&str, &[&str])] = &[
        (
            "rules: [{matches: [{method: {service: pkg.Echo, method: Echo}}], backendRefs: [{name: s, port: 1}]}]",
            &[],
        ),
        (
            "rules: [{matches: [{method: {type: RegularExpression, service: 'pkg\\..*'}}]}]",
            &[],
        ),
        (
            "rules: [{matches: [{method: {type: Exact}}]}]",
            &["spec.rules[0].matches[0].method: one or both of service and method must be set"],
        ),
        (
            "rules: [{matches: [{method: {service: 'pkg/Echo'}}]}]",
            &[
                "spec.rules[0].matches[0].method.service: \"pkg/Echo\" is not a valid gRPC service name (pkg.Service)",
            ],
        ),
        (
            "rules: [{matches: [{method: {method: 'a.b'}}]}]",
            &["spec.rules[0].matches[0].method.method: \"a.b\" is not a valid gRPC method name"],
        ),
        (
            "rules: [{matches: [{method: {type: Prefix, method: A}}]}]",
            &[
                "spec.rules[0].matches[0].method.type: unsupported value \"Prefix\" (supported: Exact, RegularExpression)",
            ],
        ),
        (
            "rules: [{matches: [{method: {type: RegularExpression, method: '('}}]}]",
            &[
                "spec.rules[0].matches[0].method.method: invalid regular expression: regex parse error: ( ^ error: unclosed group",
            ],
        ),
        (
            "rules: [{filters: [{type: URLRewrite, urlRewrite: {hostname: a.b}}]}]",
            &["spec.rules[0].filters[0].type: filter type URLRewrite is not valid in a GRPCRoute"],
        ),
        (
            "rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: a, value: b}]}}]}]",
            &[],
        ),
    ];
    for (spec, expected) in cases {
        assert_eq!(grpc_problems(spec), *expected, "spec {spec}");
    }
}

fn tls(
    api_version: &str,
    spec: &str,
) -> (
    Option<Validated<meridian_proto::model::route::TlsRoute>>,
    Vec<String>,
) {
    let mut text = format!(
        "apiVersion: gateway.networking.k8s.io/{api_version}\nkind: TLSRoute\nmetadata:\n  name: t\n  namespace: ns\nspec:\n"
    );
    for line in spec.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    let (objects, problems) = parse_documents(&text, "t.yaml");
    let route = objects.into_iter().find_map(|o| match o.resource {
        Resource::TlsRoute(v) => Some(v),
        _ => None,
    });
    let problems = problems
        .iter()
        .map(|p| p.to_string().replace("t.yaml doc 1 TLSRoute ns/t: ", ""))
        .collect();
    (route, problems)
}

#[test]
fn tls_route_rules() {
    let (route, problems) = tls("v1alpha3", "rules: [{backendRefs: [{name: s, port: 443}]}]");
    assert_eq!(
        problems,
        ["spec.hostnames: at least one hostname is required"]
    );
    assert!(route.expect("route").rejection.is_some());
    let (route, problems) = tls("v1alpha2", "rules: [{backendRefs: [{name: s, port: 443}]}]");
    assert!(problems.is_empty());
    assert!(route.expect("route").rejection.is_none());
    let (route, problems) = tls(
        "v1alpha3",
        "hostnames: [a.example.com]\nrules: [{backendRefs: [{name: s, port: 443, weight: 3}]}, {backendRefs: [{name: t, port: 443}]}, {}]",
    );
    assert_eq!(
        problems,
        [
            "spec.rules[1]: a TLSRoute has exactly one rule",
            "spec.rules[2]: a TLSRoute has exactly one rule",
            "spec.rules[2].backendRefs: at least one backendRef is required",
        ]
    );
    let route = route.expect("route");
    assert!(route.rejection.is_none());
    assert_eq!(route.dropped_rules.len(), 2);
    assert_eq!(route.route.backend_refs.len(), 1);
    assert_eq!(route.route.backend_refs[0].weight, 3);
}

fn gateway_problems(spec: &str) -> (bool, Vec<String>) {
    let mut text = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: ns\nspec:\n",
    );
    for line in spec.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    let (objects, problems) = parse_documents(&text, "gw.yaml");
    (
        !objects.is_empty(),
        problems
            .iter()
            .map(|p| p.to_string().replace("gw.yaml doc 1 Gateway ns/gw: ", ""))
            .collect(),
    )
}

#[test]
fn gateway_rules() {
    let cases: &[(&str, bool, &[&str])] = &[
        (
            "gatewayClassName: c\nlisteners: [{name: http, port: 80, protocol: HTTP}]",
            true,
            &[],
        ),
        (
            "listeners: [{name: http, port: 80, protocol: HTTP}]",
            false,
            &["spec.gatewayClassName: required field is missing"],
        ),
        (
            "gatewayClassName: c\nlisteners: []",
            false,
            &["spec.listeners: has 0 listeners; 1 to 64 are required"],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]",
            false,
            &[
                "spec.listeners[1].name: \"a\" is used by an earlier listener; listener names must be unique",
            ],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: s}]}}]",
            true,
            &["spec.listeners[0].tls: must not be set for protocol HTTP"],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 443, protocol: HTTPS}]",
            true,
            &["spec.listeners[0].tls: is required for protocol HTTPS"],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 443, protocol: HTTPS, tls: {mode: Terminate}}]",
            true,
            &[
                "spec.listeners[0].tls.certificateRefs: at least one certificateRef is required when mode is Terminate",
            ],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 0, protocol: UDP, hostname: 'Bad'}]",
            true,
            &[
                "spec.listeners[0].port: 0 is not a valid port (1-65535)",
                "spec.listeners[0].hostname: \"Bad\" is not a valid hostname: each label must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit",
                "spec.listeners[0].protocol: protocol \"UDP\" is not supported (supported: HTTP, HTTPS, TLS)",
            ],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}]",
            true,
            &[
                "spec.listeners[0].allowedRoutes.namespaces.selector: is required when from is Selector",
            ],
        ),
        (
            "gatewayClassName: c\nlisteners: [{name: a, port: 80, protocol: HTTP}]\naddresses: [{type: Hostname, value: gw.example.com}, {value: 'not-an-ip'}]",
            true,
            &[
                "spec.addresses[0]: address type \"Hostname\" is not supported (supported: IPAddress)",
                "spec.addresses[1]: value: \"not-an-ip\" is not an IP address",
            ],
        ),
    ];
    for (spec, kept, expected) in cases {
        let (got_kept, problems) = gateway_problems(spec);
        assert_eq!(got_kept, *kept, "spec {spec}");
        assert_eq!(problems, *expected, "spec {spec}");
    }
}

#[test]
fn field_durations() {
    let cases: &[(&str, Option<Duration>)] = &[
        ("0s", Some(Duration::ZERO)),
        ("500ms", Some(Duration::from_millis(500))),
        ("1h30m", Some(Duration::from_secs(5400))),
        ("1h2m3s4ms", Some(Duration::from_millis(3_723_004))),
        ("99999s", Some(Duration::from_secs(99_999))),
        ("100000s", None),
        ("1h2m3s4ms5s", None),
        ("1d", None),
        ("1.5s", None),
        ("s", None),
        ("", None),
        ("-1s", None),
    ];
    for (text, expected) in cases {
        assert_eq!(field::duration(text).ok(), *expected, "{text:?}");
    }
    for d in ["0s", "500ms", "1h30m", "1h2m3s4ms", "10s"] {
        let parsed = field::duration(d).expect("valid");
        assert_eq!(field::format_duration(parsed), d);
    }
}

#[test]
fn field_cors_origins() {
    let cases = [
        ("*", true),
        ("https://example.com", true),
        ("https://*.example.com", true),
        ("http://*", true),
        ("http://a.b:8080", true),
        ("http://a.b:0", false),
        ("http://a.b:99999", false),
        ("example.com", false),
        ("https://", false),
        ("https://a..b", false),
        ("1ttp://a.b", false),
    ];
    for (origin, ok) in cases {
        assert_eq!(field::cors_origin(origin).is_ok(), ok, "{origin}");
    }
}

#[test]
fn redirect_and_rewrite_paths_translate() {
    let (route, problems) = http(
        "rules:
- matches: [{path: {value: /old}}]
  filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
- backendRefs: [{name: s, port: 1}]
  filters: [{type: URLRewrite, urlRewrite: {hostname: internal.example, path: {type: ReplaceFullPath, replaceFullPath: /x}}}]",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let route = route.expect("route").route;
    let HttpFilter::RequestRedirect(r) = &route.rules[0].filters[0] else {
        panic!("redirect");
    };
    assert_eq!(
        (r.scheme.as_deref(), r.port, r.status_code, r.path.clone()),
        (
            Some("https"),
            Some(8443),
            301,
            Some(PathModifier::ReplacePrefixMatch("/new".into()))
        )
    );
    let HttpFilter::UrlRewrite(w) = &route.rules[1].filters[0] else {
        panic!("rewrite");
    };
    assert_eq!(w.hostname.as_deref(), Some("internal.example"));
    assert_eq!(w.path, Some(PathModifier::ReplaceFullPath("/x".into())));
}
