//! Reloading a standalone gateway's config directory with broken files: a file is the unit of
//! change, so one file's mistake keeps that file's last good content while every other file's
//! changes (routes, endpoints) still apply.

use super::harness::*;

const GW: &str = "gateway-conformance-infra/same-namespace";

fn route(name: &str, host: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  hostnames: [{host}]\n  rules:\n  - {rule}\n---\n"
    )
}

fn backend(name: &str) -> String {
    format!("backendRefs: [{{name: {name}, port: 8080}}]")
}

const BAD_REGEX: &str = "matches: [{path: {type: RegularExpression, value: '/(unclosed'}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]";

#[tokio::test]
async fn a_broken_file_keeps_its_last_good_content_while_other_files_apply() {
    let suite = Suite::new().start(
        GW,
        &format!(
            "{SAME_NAMESPACE_GATEWAY}{}",
            route("stable", "stable.example.com", &backend("infra-backend-v1"))
        ),
    );
    check_all(
        &suite,
        &[(get("stable.example.com", "/"), ok("infra-backend-v1"))],
    )
    .await;

    // A tenant's new route with an invalid regex, and a CRLF header value in another; at the
    // same time a third file moves a Service to another endpoint: that change applies.
    suite.write(
        "40-tenant.yaml",
        &route("tenant", "tenant.example.com", BAD_REGEX),
    );
    suite.write(
        "50-crlf.yaml",
        &route(
            "crlf",
            "crlf.example.com",
            "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: \"a\\r\\nInjected: 1\"}]}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]",
        ),
    );
    suite.write(
        "20-moved.yaml",
        &format!(
            "{}{}",
            service_manifest("moved", "http", 8080, "{{PORT:infra-backend-v2}}", None),
            route("moved", "moved.example.com", &backend("moved"))
        ),
    );
    check_all(
        &suite,
        &[
            (get("moved.example.com", "/"), ok("infra-backend-v2")),
            (get("stable.example.com", "/"), ok("infra-backend-v1")),
            (get("tenant.example.com", "/"), status(&[404])),
            (get("crlf.example.com", "/"), status(&[404])),
        ],
    )
    .await;
    let log = suite.gateway_log();
    assert!(
        log.contains("40-tenant.yaml") && log.contains("invalid regular expression"),
        "the broken file is named with its problem:\n{log}"
    );
    assert!(
        log.contains("50-crlf.yaml") && log.contains("not allowed in a header value"),
        "the CRLF header value is named:\n{log}"
    );
    assert!(
        !log.contains("config rejected"),
        "nothing reaches the gateway that it refuses:\n{log}"
    );

    // Fixing the tenant's file serves its route.
    suite.write(
        "40-tenant.yaml",
        &route("tenant", "tenant.example.com", &backend("infra-backend-v3")),
    );
    check_all(
        &suite,
        &[(get("tenant.example.com", "/"), ok("infra-backend-v3"))],
    )
    .await;

    // Breaking a file that has served (an object validation drops: a type error) keeps its
    // last good content, while an endpoint change in another file still applies.
    suite.write(
        "10-test.yaml",
        &format!(
            "{SAME_NAMESPACE_GATEWAY}{}",
            route("stable", "stable.example.com", "matches: 7")
        ),
    );
    suite.write(
        "20-moved.yaml",
        &format!(
            "{}{}",
            service_manifest("moved", "http", 8080, "{{PORT:infra-backend-v3}}", None),
            route("moved", "moved.example.com", &backend("moved"))
        ),
    );
    check_all(
        &suite,
        &[
            (get("moved.example.com", "/"), ok("infra-backend-v3")),
            (get("stable.example.com", "/"), ok("infra-backend-v1")),
            (get("tenant.example.com", "/"), ok("infra-backend-v3")),
        ],
    )
    .await;
    assert!(
        suite
            .gateway_log()
            .contains("keeping the file's last good content"),
        "{}",
        suite.gateway_log()
    );

    // A problem that keeps its object is status, not a broken file: the route whose only rule
    // has an invalid regex is applied and rejected (no valid rule left), as Kubernetes would
    // store it; the Gateway in the same file keeps serving the other routes.
    suite.write(
        "10-test.yaml",
        &format!(
            "{SAME_NAMESPACE_GATEWAY}{}",
            route("stable", "stable.example.com", BAD_REGEX)
        ),
    );
    check_all(
        &suite,
        &[
            (get("stable.example.com", "/"), status(&[404])),
            (get("moved.example.com", "/"), ok("infra-backend-v3")),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_secret_whose_key_does_not_match_its_certificate_fails_its_listener_alone() {
    // The HTTPS listener's Secret holds one certificate with another certificate's key, from
    // the start: the HTTP listener serves anyway, later changes apply, and the log says why
    // the HTTPS listener is not programmed. Before, the whole config was refused (nothing
    // served at start, nothing changed later).
    let mut suite = Suite::new();
    suite.cert("one", &["secure.example.com"]);
    suite.cert("other", &["secure.example.com"]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: mismatched, namespace: gateway-conformance-infra}}
type: kubernetes.io/tls
data: {{tls.crt: "{{{{CERT:one}}}}", tls.key: "{{{{KEY:other}}}}"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {{{{HTTP}}}}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}
  - name: https
    port: {{{{HTTPS}}}}
    protocol: HTTPS
    allowedRoutes: {{namespaces: {{from: Same}}}}
    tls: {{certificateRefs: [{{name: mismatched}}]}}
---
{}"#,
        route("stable", "stable.example.com", &backend("infra-backend-v1"))
    );
    let suite = suite.start(GW, &manifest);
    check_all(
        &suite,
        &[(get("stable.example.com", "/"), ok("infra-backend-v1"))],
    )
    .await;
    suite.write(
        "20-later.yaml",
        &route("later", "later.example.com", &backend("infra-backend-v2")),
    );
    check_all(
        &suite,
        &[(get("later.example.com", "/"), ok("infra-backend-v2"))],
    )
    .await;
    let log = suite.gateway_log();
    assert!(
        log.contains("does not match the certificate") && log.contains("mismatched"),
        "the listener's problem is named:\n{log}"
    );
    assert!(!log.contains("config rejected"), "{log}");
    assert!(
        std::net::TcpStream::connect(suite.addr("HTTPS")).is_err(),
        "no TLS listener serves the unusable certificate"
    );
}
