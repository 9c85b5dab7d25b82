//! Config validation: every rejection names the bad part; nothing half-compiles.

use meridian_proto::model::gateway::{
    Attached, GatewayConfig, ListenerProtocol, ListenerTls, TlsCertificate, TlsMode,
};
use meridian_proto::model::route::{HttpFilter, PathModifier, RequestRedirect, UrlRewrite};

use crate::fixtures::*;

fn base() -> GatewayConfig {
    GatewayConfig {
        version: 3,
        listeners: vec![http_listener("http", 8080, None)],
        backends: vec![backend("default/v1", "127.0.0.1:9".parse().unwrap())],
        ..GatewayConfig::default()
    }
}

fn error_of(config: GatewayConfig) -> String {
    compile_config(&config).unwrap_err().to_string()
}

#[test]
fn valid_config_compiles() {
    let mut config = base();
    config.http_routes = vec![attach(
        route(
            "default/r",
            0,
            &[],
            vec![rule(vec![prefix("/")], vec![to("default/v1", 1)])],
        ),
        "http",
        &[],
    )];
    let compiled = compile_config(&config).unwrap();
    assert_eq!(compiled.version, 3);
    assert_eq!(compiled.ports.len(), 1);
    assert_eq!(compiled.summary.listeners[0].entries, 1);
}

#[test]
fn rejections_name_the_bad_field() {
    let with_route = |rule_: meridian_proto::model::route::HttpRouteRule| {
        let mut config = base();
        config.http_routes = vec![attach(route("default/r", 0, &[], vec![rule_]), "http", &[])];
        config
    };
    let mut duplicate = base();
    duplicate.listeners.push(http_listener("http", 9090, None));

    let mut unknown_listener = base();
    unknown_listener.http_routes = vec![attach(
        route("default/r", 0, &[], vec![rule(vec![prefix("/")], vec![])]),
        "nope",
        &[],
    )];

    let mut missing_backend = base();
    missing_backend.backends.clear();
    missing_backend.http_routes = vec![attach(
        route(
            "default/r",
            0,
            &[],
            vec![rule(vec![prefix("/")], vec![to("default/v1", 1)])],
        ),
        "http",
        &[],
    )];

    let mut https_without_tls = base();
    https_without_tls.listeners[0].protocol = ListenerProtocol::Https;

    let mut bad_cert = base();
    bad_cert.listeners[0].protocol = ListenerProtocol::Https;
    bad_cert.listeners[0].tls = Some(ListenerTls {
        mode: TlsMode::Terminate,
        certificates: vec![TlsCertificate {
            key: key("default/web-cert"),
            cert_chain_pem: "not pem".into(),
            private_key_pem: "nope".into(),
        }],
        client_validation: None,
    });

    let mut port_conflict = base();
    let mut tls_listener = http_listener("https", 8080, Some("a.example.com"));
    tls_listener.protocol = ListenerProtocol::Tls;
    tls_listener.tls = Some(ListenerTls {
        mode: TlsMode::Passthrough,
        certificates: vec![],
        client_validation: None,
    });
    port_conflict.listeners.push(tls_listener);

    let mut same_host = base();
    same_host
        .listeners
        .push(http_listener("http-2", 8080, None));

    let redirect = |status| {
        HttpFilter::RequestRedirect(RequestRedirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: status,
        })
    };
    let cases: Vec<(GatewayConfig, &str)> = vec![
        (duplicate, r#"listener "http" is defined twice"#),
        (
            unknown_listener,
            r#"HTTPRoute default/r: attached to unknown listener "nope""#,
        ),
        (
            missing_backend,
            "HTTPRoute default/r rule 0: backendRefs[0]: backendRef default/v1 resolves to Service port default/v1:8080 which is missing from backends",
        ),
        (
            https_without_tls,
            r#"listener "http": protocol HTTPS requires tls settings"#,
        ),
        (
            bad_cert,
            r#"listener "http": certificate default/web-cert: no certificate found in the PEM chain"#,
        ),
        (
            port_conflict,
            "share port 8080 but one is plain HTTP and the other TLS",
        ),
        (same_host, "conflict: same port 8080 and hostname (none)"),
        (
            with_route(rule(vec![regex("/(unclosed")], vec![])),
            "HTTPRoute default/r rule 0: matches[0]: path: invalid regular expression",
        ),
        (
            with_route(rule(vec![exact("relative")], vec![])),
            r#"matches[0]: path "relative" must start with '/'"#,
        ),
        (
            with_route(rule(vec![prefix("/").header("bad header", "x")], vec![])),
            r#"matches[0]: headers[0]: invalid header name "bad header""#,
        ),
        (
            with_route(rule_with(
                vec![prefix("/")],
                vec![redirect(307), redirect(302)],
                vec![],
            )),
            "filters[1]: RequestRedirect may appear only once per rule",
        ),
        (
            with_route(rule_with(vec![prefix("/")], vec![redirect(305)], vec![])),
            "filters[0]: RequestRedirect statusCode 305 must be 301, 302, 303, 307 or 308",
        ),
        (
            with_route(rule_with(
                vec![exact("/x")],
                vec![HttpFilter::UrlRewrite(UrlRewrite {
                    hostname: None,
                    path: Some(PathModifier::ReplacePrefixMatch("/y".into())),
                })],
                vec![],
            )),
            "ReplacePrefixMatch needs a rule with exactly one PathPrefix match",
        ),
        (
            with_route(rule_with(
                vec![prefix("/")],
                vec![
                    redirect(302),
                    HttpFilter::UrlRewrite(UrlRewrite {
                        hostname: Some("h".into()),
                        path: None,
                    }),
                ],
                vec![],
            )),
            "RequestRedirect and URLRewrite cannot be combined",
        ),
    ];
    for (config, want) in cases {
        let got = error_of(config);
        assert!(got.contains(want), "expected {want:?} in {got:?}");
    }
}

#[test]
fn tls_routes_need_tls_listeners() {
    let mut config = base();
    config.tls_routes = vec![Attached {
        route: meridian_proto::model::route::TlsRoute {
            key: key("default/t"),
            created_unix_ms: 0,
            parent_refs: vec![],
            hostnames: vec!["a.example.com".into()],
            backend_refs: vec![to("default/v1", 1)],
        },
        attachments: vec![meridian_proto::model::gateway::Attachment {
            listener: "http".into(),
            hostnames: vec!["a.example.com".into()],
        }],
    }];
    assert!(
        error_of(config).contains(r#"TLSRoute default/t: listener "http" is not a TLS listener"#)
    );
}

#[test]
fn client_validation_errors_name_the_listener_and_config_map() {
    use meridian_proto::model::gateway::{CaCertificate, ClientValidation, ClientValidationMode};
    let generated = rcgen::generate_simple_self_signed(vec!["example.org".to_string()]).unwrap();
    let https = |name: &str, hostname: &str, ca_pem: Option<&str>| {
        let mut listener = http_listener(name, 8443, Some(hostname));
        listener.protocol = ListenerProtocol::Https;
        listener.tls = Some(ListenerTls {
            mode: TlsMode::Terminate,
            certificates: vec![TlsCertificate {
                key: key("default/cert"),
                cert_chain_pem: generated.cert.pem(),
                private_key_pem: generated.signing_key.serialize_pem(),
            }],
            client_validation: ca_pem.map(|pem| ClientValidation {
                ca_certificates: vec![CaCertificate {
                    config_map: key("default/client-ca"),
                    pem: pem.to_string(),
                }],
                mode: ClientValidationMode::AllowValidOnly,
            }),
        });
        listener
    };
    let ca_pem = generated.cert.pem();

    let mut good = base();
    good.listeners
        .push(https("mtls", "example.org", Some(&ca_pem)));
    compile_config(&good).unwrap();

    let mut bad_pem = base();
    bad_pem
        .listeners
        .push(https("mtls", "example.org", Some("not a certificate")));
    let got = error_of(bad_pem);
    assert!(
        got.contains(r#"listener "mtls": CA certificate ConfigMap default/client-ca ca.crt"#),
        "{got}"
    );

    let mut mixed = base();
    mixed
        .listeners
        .push(https("mtls", "example.org", Some(&ca_pem)));
    mixed.listeners.push(https("open", "other.org", None));
    let got = error_of(mixed);
    assert!(
        got.contains("share port 8443 but ask for different client certificate validation"),
        "{got}"
    );
}

#[test]
fn a_session_cookie_is_scoped_to_the_rule_path_unless_the_path_could_add_attributes() {
    use meridian_proto::model::route::{SessionKind, SessionPersistence};
    let spec = SessionPersistence {
        name: Some("sid".into()),
        kind: SessionKind::Cookie,
        absolute_timeout: None,
        idle_timeout: None,
        permanent_cookie: false,
    };
    let cookie = |path: &str| {
        let m = prefix(path).0;
        let policy = super::session_policy(&spec, "default/r", 0, &[m]).unwrap();
        let (_, value) = policy
            .issue(None, "127.0.0.1:80".parse().unwrap(), 1, false)
            .unwrap();
        value.to_str().unwrap().to_string()
    };
    assert!(cookie("/shop").ends_with("; Path=/shop; HttpOnly"));
    let injected = cookie("/a;Domain=example.com");
    assert!(injected.ends_with("; Path=/; HttpOnly"), "{injected}");
    assert!(!injected.contains("Domain"), "{injected}");
}
