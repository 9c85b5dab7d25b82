//! The hub admin API's HTTPRoute form: one HTTPRoute as JSON in, the model out, and back.

use meridian_proto::model::route::{
    BackendRef, HeaderMatch, HeaderModifier, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch,
    HttpRouteRule, ParentRef, PathMatch, PathModifier, QueryParamMatch, SessionKind,
    SessionPersistence, StringMatch,
};

use crate::document::{Resource, parse_value};
use crate::k8s;
use crate::problem::{Origin, Problem};
use crate::validate::{format_duration, format_timestamp_ms};

/// The source name problems about an admin API body carry.
const REQUEST: &str = "request";

/// Hub admin API: one HTTPRoute from JSON → model, or every validation problem.
///
/// Strict, unlike a file source: any problem, even one that would only drop a rule, rejects
/// the whole route, so nothing is half-applied. `apiVersion` and `kind` may be omitted (they
/// default to `gateway.networking.k8s.io/v1` and `HTTPRoute`); `metadata.namespace` defaults to
/// `default`. Callers that take the key from the URL should set `metadata` before calling.
pub fn http_route_from_json(value: &serde_json::Value) -> Result<HttpRoute, Vec<Problem>> {
    let origin = Origin::new(REQUEST, None);
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| "gateway.networking.k8s.io/v1".into());
        map.entry("kind").or_insert_with(|| "HTTPRoute".into());
    }
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "HTTPRoute" {
        return Err(vec![
            origin.problem(format!("kind: expected HTTPRoute, found {kind:?}")),
        ]);
    }
    let (object, problems) = parse_value(value, &origin);
    if !problems.is_empty() {
        return Err(problems);
    }
    match object.map(|o| o.resource) {
        Some(Resource::HttpRoute(validated)) => match validated.rejection {
            None => Ok(validated.route),
            Some(rejection) => Err(vec![origin.object_problem(
                "HTTPRoute",
                Some(&validated.route.key.to_string()),
                "",
                rejection.message,
            )]),
        },
        _ => Err(vec![origin.problem("not an HTTPRoute")]),
    }
}

/// Renders a route in its Gateway API form (`gateway.networking.k8s.io/v1` HTTPRoute), with
/// every default written out. `http_route_from_json` of the result gives the route back.
pub fn http_route_to_json(route: &HttpRoute) -> serde_json::Value {
    let object = k8s::HttpRoute {
        api_version: "gateway.networking.k8s.io/v1".to_string(),
        kind: "HTTPRoute".to_string(),
        metadata: k8s::ObjectMeta {
            name: route.key.name.clone(),
            namespace: Some(route.key.namespace.clone()),
            creation_timestamp: (route.created_unix_ms != 0)
                .then(|| format_timestamp_ms(route.created_unix_ms))
                .flatten(),
            ..k8s::ObjectMeta::default()
        },
        spec: k8s::HttpRouteSpec {
            parent_refs: route.parent_refs.iter().map(render_parent).collect(),
            hostnames: route.hostnames.clone(),
            rules: Some(route.rules.iter().map(render_rule).collect()),
        },
    };
    serde_json::to_value(object).unwrap_or_default()
}

fn render_parent(parent: &ParentRef) -> k8s::ParentReference {
    k8s::ParentReference {
        group: Some(parent.group.clone()),
        kind: Some(parent.kind.clone()),
        namespace: Some(parent.namespace.clone()),
        name: parent.name.clone(),
        section_name: parent.section_name.clone(),
        port: parent.port.map(i64::from),
    }
}

fn render_rule(rule: &HttpRouteRule) -> k8s::HttpRouteRule {
    let timeouts = (rule.timeouts.request.is_some() || rule.timeouts.backend_request.is_some())
        .then(|| k8s::HttpRouteTimeouts {
            request: rule.timeouts.request.map(format_duration),
            backend_request: rule.timeouts.backend_request.map(format_duration),
        });
    k8s::HttpRouteRule {
        name: rule.name.clone(),
        matches: Some(rule.matches.iter().map(render_match).collect()),
        filters: rule.filters.iter().map(render_filter).collect(),
        backend_refs: rule.backend_refs.iter().map(render_backend).collect(),
        timeouts,
        retry: rule.retry.as_ref().map(|r| k8s::HttpRouteRetry {
            codes: r.codes.iter().map(|c| i64::from(*c)).collect(),
            attempts: Some(i64::from(r.attempts)),
            backoff: r.backoff.map(format_duration),
        }),
        session_persistence: rule.session_persistence.as_ref().map(render_session),
    }
}

fn render_session(session: &SessionPersistence) -> k8s::SessionPersistence {
    k8s::SessionPersistence {
        session_name: session.name.clone(),
        absolute_timeout: session.absolute_timeout.map(format_duration),
        idle_timeout: session.idle_timeout.map(format_duration),
        type_: Some(
            match session.kind {
                SessionKind::Cookie => "Cookie",
                SessionKind::Header => "Header",
            }
            .to_string(),
        ),
        cookie_config: (session.kind == SessionKind::Cookie).then(|| k8s::CookieConfig {
            lifetime_type: Some(
                if session.permanent_cookie {
                    "Permanent"
                } else {
                    "Session"
                }
                .to_string(),
            ),
        }),
    }
}

fn render_match(m: &HttpRouteMatch) -> k8s::HttpRouteMatch {
    let (type_, value) = match &m.path {
        PathMatch::Exact(v) => ("Exact", v),
        PathMatch::Prefix(v) => ("PathPrefix", v),
        PathMatch::RegularExpression(v) => ("RegularExpression", v),
    };
    k8s::HttpRouteMatch {
        path: Some(k8s::HttpPathMatch {
            type_: Some(type_.to_string()),
            value: Some(value.clone()),
        }),
        headers: m
            .headers
            .iter()
            .map(|HeaderMatch { name, value }| render_string_match(name, value))
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|QueryParamMatch { name, value }| render_string_match(name, value))
            .collect(),
        method: m.method.clone(),
    }
}

fn render_string_match(name: &str, value: &StringMatch) -> k8s::HttpHeaderMatch {
    let (type_, value) = match value {
        StringMatch::Exact(v) => ("Exact", v),
        StringMatch::RegularExpression(v) => ("RegularExpression", v),
    };
    k8s::HttpHeaderMatch {
        type_: Some(type_.to_string()),
        name: name.to_string(),
        value: value.clone(),
    }
}

fn render_filter(filter: &HttpFilter) -> k8s::HttpRouteFilter {
    let mut out = k8s::HttpRouteFilter::default();
    match filter {
        HttpFilter::RequestHeaderModifier(m) => {
            out.type_ = "RequestHeaderModifier".into();
            out.request_header_modifier = Some(render_modifier(m));
        }
        HttpFilter::ResponseHeaderModifier(m) => {
            out.type_ = "ResponseHeaderModifier".into();
            out.response_header_modifier = Some(render_modifier(m));
        }
        HttpFilter::RequestRedirect(r) => {
            out.type_ = "RequestRedirect".into();
            out.request_redirect = Some(k8s::HttpRequestRedirectFilter {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(render_path_modifier),
                port: r.port.map(i64::from),
                status_code: Some(i64::from(r.status_code)),
            });
        }
        HttpFilter::UrlRewrite(r) => {
            out.type_ = "URLRewrite".into();
            out.url_rewrite = Some(k8s::HttpUrlRewriteFilter {
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(render_path_modifier),
            });
        }
        HttpFilter::RequestMirror(m) => {
            out.type_ = "RequestMirror".into();
            let (percent, fraction) = match m.fraction {
                None => (None, None),
                Some((n, 100)) => (Some(i64::from(n)), None),
                Some((n, d)) => (
                    None,
                    Some(k8s::Fraction {
                        numerator: i64::from(n),
                        denominator: Some(i64::from(d)),
                    }),
                ),
            };
            out.request_mirror = Some(k8s::HttpRequestMirrorFilter {
                backend_ref: render_object_ref(&m.backend_ref),
                percent,
                fraction,
            });
        }
        HttpFilter::Cors(c) => {
            out.type_ = "CORS".into();
            out.cors = Some(k8s::HttpCorsFilter {
                allow_origins: c.allow_origins.clone(),
                allow_credentials: Some(c.allow_credentials),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                max_age: Some(i64::from(c.max_age_seconds)),
            });
        }
    }
    out
}

fn render_modifier(m: &HeaderModifier) -> k8s::HttpHeaderFilter {
    let pairs = |list: &[(String, String)]| {
        list.iter()
            .map(|(name, value)| k8s::HeaderValue {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    k8s::HttpHeaderFilter {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.clone(),
    }
}

fn render_path_modifier(p: &PathModifier) -> k8s::HttpPathModifier {
    match p {
        PathModifier::ReplaceFullPath(v) => k8s::HttpPathModifier {
            type_: "ReplaceFullPath".into(),
            replace_full_path: Some(v.clone()),
            replace_prefix_match: None,
        },
        PathModifier::ReplacePrefixMatch(v) => k8s::HttpPathModifier {
            type_: "ReplacePrefixMatch".into(),
            replace_full_path: None,
            replace_prefix_match: Some(v.clone()),
        },
    }
}

fn render_object_ref(b: &BackendRef) -> k8s::BackendObjectReference {
    k8s::BackendObjectReference {
        group: Some(b.group.clone()),
        kind: Some(b.kind.clone()),
        name: b.name.clone(),
        namespace: Some(b.namespace.clone()),
        port: b.port.map(i64::from),
    }
}

fn render_backend(b: &HttpBackendRef) -> k8s::HttpBackendRef {
    let r = &b.backend_ref;
    k8s::HttpBackendRef {
        group: Some(r.group.clone()),
        kind: Some(r.kind.clone()),
        name: r.name.clone(),
        namespace: Some(r.namespace.clone()),
        port: r.port.map(i64::from),
        weight: Some(i64::from(b.weight)),
        filters: b.filters.iter().map(render_filter).collect(),
    }
}
