//! How routes attach to a Gateway's listeners (GA: conformance/tests/httproute-*.go/yaml), by
//! upstream name: parentRef `port` and `sectionName`, allowed namespaces and kinds. A route
//! that does not attach must serve nothing on any listener (404), while routes beside it do.

use super::harness::*;

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";

/// An HTTPRoute in `namespace` with `parent_ref` (a flow mapping), `/path` to `backend`.
fn route(namespace: &str, name: &str, parent_ref: &str, path: &str, backend: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{parent_ref}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: {backend}, namespace: {namespace}, port: 8080}}]}}]
---
"#
    )
}

#[tokio::test]
async fn http_route_listener_port_matching() {
    // HTTPRouteListenerPortMatching, HTTPRouteInvalidParentRefNotMatchingListenerPort,
    // HTTPRouteInvalidParentRefNotMatchingSectionName: three listeners on three ports;
    // routes pick them by port, by port and sectionName, or name one that does not exist.
    let infra = "gateway-conformance-infra";
    let manifests = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: port-matching, namespace: {infra}}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: first, port: {{{{HTTP}}}}, protocol: HTTP}}
  - {{name: second, port: {{{{HTTP_2}}}}, protocol: HTTP}}
  - {{name: third, port: {{{{HTTP_3}}}}, protocol: HTTP, hostname: foo.example.com}}
---
{}{}{}{}{}{}"#,
        route(
            infra,
            "by-port",
            "{name: port-matching, port: {{HTTP}}}",
            "/first",
            V1
        ),
        route(
            infra,
            "by-second-port",
            "{name: port-matching, port: {{HTTP_2}}}",
            "/second",
            V2
        ),
        route(
            infra,
            "by-port-and-section",
            "{name: port-matching, sectionName: third, port: {{HTTP_3}}}",
            "/third",
            V3
        ),
        route(infra, "all-listeners", "{name: port-matching}", "/all", V1),
        route(
            infra,
            "section-on-another-port",
            "{name: port-matching, sectionName: first, port: {{HTTP_2}}}",
            "/mismatched-port",
            V1
        ),
        route(
            infra,
            "unknown-section",
            "{name: port-matching, sectionName: nonexistent}",
            "/unknown-section",
            V1
        ),
    );
    let suite = Suite::new().start(&format!("{infra}/port-matching"), &manifests);
    let none = || status(&[404]);
    let (first, second, third) = (
        suite.addr("HTTP"),
        suite.addr("HTTP_2"),
        suite.addr("HTTP_3"),
    );
    check_all_at(
        &suite,
        "http",
        first,
        &[
            (get("example.com", "/first"), ok(V1)),
            (get("example.com", "/second"), none()),
            (get("example.com", "/all"), ok(V1)),
            (get("example.com", "/mismatched-port"), none()),
            (get("example.com", "/unknown-section"), none()),
        ],
    )
    .await;
    check_all_at(
        &suite,
        "http",
        second,
        &[
            (get("example.com", "/second"), ok(V2)),
            (get("example.com", "/first"), none()),
            (get("example.com", "/all"), ok(V1)),
            (get("example.com", "/mismatched-port"), none()),
        ],
    )
    .await;
    check_all_at(
        &suite,
        "http",
        third,
        &[
            (get("foo.example.com", "/third"), ok(V3)),
            (get("foo.example.com", "/all"), ok(V1)),
            (get("bar.example.com", "/third"), none()),
            (get("foo.example.com", "/first"), none()),
            (get("foo.example.com", "/unknown-section"), none()),
        ],
    )
    .await;
    // The ones that attached nowhere say why.
    assert_reported(
        &suite,
        &["section-on-another-port", "unknown-section"],
        "NoMatchingParent",
    );
}

#[tokio::test]
async fn http_route_cross_namespace() {
    // HTTPRouteCrossNamespace, HTTPRouteInvalidCrossNamespaceParentRef: a listener admits
    // routes from namespaces whose labels match its selector; one that admits only its own
    // namespace ignores a route from another.
    let infra = "gateway-conformance-infra";
    let web = "gateway-conformance-web-backend";
    let manifests = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: backend-namespaces, namespace: {infra}}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - name: selected
    port: {{{{HTTP}}}}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{gateway-conformance: backend}}}}}}}}
  - name: same-only
    port: {{{{HTTP_2}}}}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
---
{}{}{}"#,
        route(
            web,
            "cross-namespace",
            "{name: backend-namespaces, namespace: gateway-conformance-infra, sectionName: selected}",
            "/",
            "web-backend"
        ),
        route(
            web,
            "invalid-cross-namespace-parent-ref",
            "{name: backend-namespaces, namespace: gateway-conformance-infra, sectionName: same-only}",
            "/",
            "web-backend"
        ),
        route(
            infra,
            "not-selected",
            "{name: backend-namespaces, sectionName: selected}",
            "/infra",
            V1
        ),
    );
    let suite = Suite::new().start(&format!("{infra}/backend-namespaces"), &manifests);
    check_all(
        &suite,
        &[
            (get("example.com", "/"), ok("web-backend").namespace(web)),
            // The infra namespace lacks the label: its route does not attach.
            (
                get("example.com", "/infra"),
                ok("web-backend").namespace(web),
            ),
        ],
    )
    .await;
    check_all_at(
        &suite,
        "http",
        suite.addr("HTTP_2"),
        &[(get("example.com", "/"), status(&[404]))],
    )
    .await;
    assert_reported(
        &suite,
        &["invalid-cross-namespace-parent-ref", "not-selected"],
        "NotAllowedByListeners",
    );
}

/// Each route in `names` is logged by the gateway with the condition reason `reason`.
fn assert_reported(suite: &Suite, names: &[&str], reason: &str) {
    let log = suite.gateway_log();
    for name in names {
        assert!(
            log.lines()
                .any(|line| line.contains(name) && line.contains(reason)),
            "{name} not reported with {reason} in:\n{log}"
        );
    }
}

#[tokio::test]
async fn http_route_disallowed_kind() {
    // HTTPRouteDisallowedKind: a listener that allows only GRPCRoutes takes no HTTPRoute.
    let infra = "gateway-conformance-infra";
    let manifests = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: grpc-only, namespace: {infra}}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - name: grpc
    port: {{{{HTTP}}}}
    protocol: HTTP
    allowedRoutes: {{kinds: [{{kind: GRPCRoute}}]}}
  - name: any
    port: {{{{HTTP_2}}}}
    protocol: HTTP
---
{}"#,
        route(infra, "disallowed-kind", "{name: grpc-only}", "/", V1),
    );
    let suite = Suite::new().start(&format!("{infra}/grpc-only"), &manifests);
    // Attached where HTTPRoutes are allowed, and only there.
    check_all_at(
        &suite,
        "http",
        suite.addr("HTTP_2"),
        &[(get("example.com", "/"), ok(V1))],
    )
    .await;
    check_all(&suite, &[(get("example.com", "/"), status(&[404]))]).await;
}
