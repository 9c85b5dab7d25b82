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

    // Breaking a file that has served keeps its last good content, while an endpoint change in
    // another file still applies.
    suite.write(
        "10-test.yaml",
        &format!(
            "{SAME_NAMESPACE_GATEWAY}{}",
            route("stable", "stable.example.com", BAD_REGEX)
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
}
