//! HTTPRoute conformance tests (GA: conformance/tests/httproute-*.go/yaml), by upstream name.

use std::time::Duration;

use super::harness::*;

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";
const GW: &str = "gateway-conformance-infra/same-namespace";

fn route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n{spec}---\n"
    )
}

fn start(routes: &str) -> Suite {
    Suite::new().start(GW, &format!("{SAME_NAMESPACE_GATEWAY}{routes}"))
}

#[tokio::test]
async fn http_route_simple_same_namespace() {
    let suite = start(&route(
        "gateway-conformance-infra-test",
        "  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    ));
    check_all(
        &suite,
        &[(
            get("example.com", "/"),
            ok(V1).namespace("gateway-conformance-infra"),
        )],
    )
    .await;
}

#[tokio::test]
async fn http_route_matching() {
    let suite = start(&route(
        "matching",
        r#"  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /v2}
    - headers: [{name: version, value: two}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/"), ok(V1)),
            (get("example.com", "/example"), ok(V1)),
            (get("example.com", "/").header("Version", "one"), ok(V1)),
            (get("example.com", "/v2"), ok(V2)),
            (get("example.com", "/v2/"), ok(V2)),
            (get("example.com", "/v2/example"), ok(V2)),
            (get("example.com", "/").header("Version", "two"), ok(V2)),
            (get("example.com", "/v2example"), ok(V1)),
            (get("example.com", "/foo/v2/example"), ok(V1)),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_exact_path_matching() {
    let suite = start(&route(
        "exact-path-matching",
        r#"  rules:
  - matches: [{path: {type: Exact, value: /one}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /two}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/one"), ok(V1)),
            (get("example.com", "/two"), ok(V2)),
            (get("example.com", "/"), status(&[404])),
            (get("example.com", "/one/example"), status(&[404])),
            (get("example.com", "/two/"), status(&[404])),
            (get("example.com", "/Two"), status(&[404])),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_path_match_order() {
    let suite = start(&route(
        "path-matching-order",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /match}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/prefix}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/prefix/one}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /match/exact/one}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: Exact, value: /match/exact}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /match}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/match/exact/one"), ok(V3)),
            (get("example.com", "/match/exact"), ok(V2)),
            (get("example.com", "/match"), ok(V1)),
            (get("example.com", "/match/prefix/one/any"), ok(V2)),
            (get("example.com", "/match/prefix/any"), ok(V1)),
            (get("example.com", "/match/any"), ok(V3)),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_header_matching() {
    let suite = start(&route(
        "header-matching",
        r#"  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/").header("Version", "one"), ok(V1)),
            (get("example.com", "/").header("Version", "two"), ok(V2)),
            (
                get("example.com", "/")
                    .header("Version", "two")
                    .header("Color", "orange"),
                ok(V1),
            ),
            (
                get("example.com", "/")
                    .header("Version", "two")
                    .header("Color", "blue"),
                ok(V2),
            ),
            (get("example.com", "/").header("Color", "blue"), ok(V1)),
            (get("example.com", "/").header("Color", "green"), ok(V1)),
            (get("example.com", "/").header("Color", "red"), ok(V2)),
            (get("example.com", "/").header("Color", "yellow"), ok(V2)),
            (
                get("example.com", "/").header("Color", "orange"),
                status(&[404]),
            ),
            (
                get("example.com", "/").header("Some-Other-Header", "one"),
                status(&[404]),
            ),
            (
                get("example.com", "/").header("Color", "purple"),
                status(&[404]),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_query_param_matching() {
    let suite = start(&route(
        "query-param-matching",
        r#"  rules:
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches:
    - queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]
    - queryParams: [{name: ANIMAL, value: Whale}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/?animal=whale"), ok(V1)),
            (get("example.com", "/?animal=dolphin"), ok(V2)),
            (get("example.com", "/?animal=dolphin&color=blue"), ok(V3)),
            (get("example.com", "/?ANIMAL=Whale"), ok(V3)),
            (
                get("example.com", "/?animal=whale&otherparam=irrelevant"),
                ok(V1),
            ),
            (get("example.com", "/?animal=dolphin&color=yellow"), ok(V2)),
            (get("example.com", "/?animal=whaledolphin"), status(&[404])),
            (get("example.com", "/?animal=dog"), status(&[404])),
            (get("example.com", "/"), status(&[404])),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_method_matching() {
    let suite = start(&route(
        "method-matching",
        r#"  rules:
  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: GET}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path1}, method: GET}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/").method("POST"), ok(V1)),
            (get("example.com", "/"), ok(V2)),
            (get("example.com", "/path1"), ok(V3)),
            (get("example.com", "/path1").method("POST"), ok(V1)),
            (get("example.com", "/").method("HEAD"), status(&[404])),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_matching_across_routes() {
    let suite = start(&format!(
        "{}{}",
        route(
            "matching-part1",
            "  hostnames: [example.com, example.net]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n"
        ),
        route(
            "matching-part2",
            "  hostnames: [example.com]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n"
        ),
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/"), ok(V1)),
            (get("example.com", "/example"), ok(V1)),
            (get("example.net", "/"), ok(V1)),
            (get("example.com", "/v2"), ok(V2)),
            (get("example.com", "/v2/example"), ok(V2)),
            (get("example.com", "/").header("Version", "two"), ok(V2)),
            (get("example.net", "/v2"), ok(V1)),
            (get("example.net", "/").header("Version", "two"), ok(V1)),
            (get("example.org", "/"), status(&[404])),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_hostname_intersection() {
    let gateway = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-hostname-intersection, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: listener-1, port: {{HTTP}}, protocol: HTTP, hostname: very.specific.com}
  - {name: listener-2, port: {{HTTP}}, protocol: HTTP, hostname: "*.wildcard.io"}
  - {name: listener-3, port: {{HTTP}}, protocol: HTTP, hostname: "*.anotherwildcard.io"}
---
"#;
    let r = |name: &str, hosts: &str, path: &str, backend: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: httproute-hostname-intersection}}]\n  hostnames: {hosts}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: {backend}, port: 8080}}]\n---\n"
        )
    };
    let manifests = format!(
        "{gateway}{}{}{}{}{}",
        r(
            "specific-host-matches-listener-specific-host",
            "[non.matching.com, \"*.nonmatchingwildcard.io\", very.specific.com]",
            "/s1",
            V1
        ),
        r(
            "specific-host-matches-listener-wildcard-host",
            "[non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]",
            "/s2",
            V2
        ),
        r(
            "wildcard-host-matches-listener-specific-host",
            "[non.matching.com, \"*.specific.com\"]",
            "/s3",
            V3
        ),
        r(
            "wildcard-host-matches-listener-wildcard-host",
            "[\"*.anotherwildcard.io\"]",
            "/s4",
            V1
        ),
        r(
            "no-intersecting-hosts",
            "[specific.but.wrong.com, wildcard.io]",
            "/",
            V1
        ),
    );
    let suite = Suite::new().start(
        "gateway-conformance-infra/httproute-hostname-intersection",
        &manifests,
    );
    check_all(
        &suite,
        &[
            (get("very.specific.com", "/s1"), ok(V1)),
            (get("very.specific.com:1234", "/s1"), ok(V1)),
            (get("non.matching.com", "/s1"), status(&[404])),
            (get("foo.nonmatchingwildcard.io", "/s1"), status(&[404])),
            (get("foo.wildcard.io", "/s2"), ok(V2)),
            (get("bar.wildcard.io", "/s2"), ok(V2)),
            (get("foo.bar.wildcard.io", "/s2"), ok(V2)),
            (get("wildcard.io", "/s2"), status(&[404])),
            (get("very.specific.com", "/s3"), ok(V3)),
            (get("anotherinstance.specific.com", "/s3"), status(&[404])),
            (get("foo.anotherwildcard.io", "/s4"), ok(V1)),
            (get("foo.bar.anotherwildcard.io", "/s4"), ok(V1)),
            (get("anotherwildcard.io", "/s4"), status(&[404])),
            (get("specific.but.wrong.com", "/"), status(&[404])),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_listener_hostname_matching() {
    let manifests = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: listener-1, port: {{HTTP}}, protocol: HTTP, hostname: bar.com}
  - {name: listener-2, port: {{HTTP}}, protocol: HTTP, hostname: foo.bar.com}
  - {name: listener-3, port: {{HTTP}}, protocol: HTTP, hostname: "*.bar.com"}
  - {name: listener-4, port: {{HTTP}}, protocol: HTTP, hostname: "*.foo.com"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-listener-hostname-matching, sectionName: listener-1}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v2, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: httproute-listener-hostname-matching, sectionName: listener-2}]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v3, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: httproute-listener-hostname-matching, sectionName: listener-3}
  - {name: httproute-listener-hostname-matching, sectionName: listener-4}
  rules: [{backendRefs: [{name: infra-backend-v3, port: 8080}]}]
"#;
    let suite = Suite::new().start(
        "gateway-conformance-infra/httproute-listener-hostname-matching",
        manifests,
    );
    check_all(
        &suite,
        &[
            (get("bar.com", "/"), ok(V1)),
            (get("foo.bar.com", "/"), ok(V2)),
            (get("baz.bar.com", "/"), ok(V3)),
            (get("boo.bar.com", "/"), ok(V3)),
            (get("multiple.prefixes.bar.com", "/"), ok(V3)),
            (get("multiple.prefixes.foo.com", "/"), ok(V3)),
            (get("foo.com", "/"), status(&[404])),
            (get("no.matching.host", "/"), status(&[404])),
        ],
    )
    .await;
}

#[tokio::test]
async fn gateway_http_listener_isolation() {
    let manifests = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-listener-isolation, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: empty-hostname, port: {{HTTP}}, protocol: HTTP}
  - {name: wildcard-example-com, port: {{HTTP}}, protocol: HTTP, hostname: "*.example.com"}
  - {name: wildcard-foo-example-com, port: {{HTTP}}, protocol: HTTP, hostname: "*.foo.example.com"}
  - {name: abc-foo-example-com, port: {{HTTP}}, protocol: HTTP, hostname: abc.foo.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-empty-hostname, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, sectionName: empty-hostname}]
  rules: [{matches: [{path: {type: PathPrefix, value: /empty-hostname}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-example-com, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, sectionName: wildcard-example-com}]
  rules: [{matches: [{path: {type: PathPrefix, value: /wildcard-example-com}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-wildcard-foo-example-com, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, sectionName: wildcard-foo-example-com}]
  rules: [{matches: [{path: {type: PathPrefix, value: /wildcard-foo-example-com}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attaches-to-abc-foo-example-com, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: http-listener-isolation, sectionName: abc-foo-example-com}]
  rules: [{matches: [{path: {type: PathPrefix, value: /abc-foo-example-com}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"#;
    let suite = Suite::new().start(
        "gateway-conformance-infra/http-listener-isolation",
        manifests,
    );
    let n = || status(&[404]);
    check_all(
        &suite,
        &[
            (get("bar.com", "/empty-hostname"), ok(V1)),
            (get("bar.com", "/wildcard-example-com"), n()),
            (get("bar.com", "/wildcard-foo-example-com"), n()),
            (get("bar.com", "/abc-foo-example-com"), n()),
            (get("bar.example.com", "/wildcard-example-com"), ok(V1)),
            (get("bar.example.com", "/empty-hostname"), n()),
            (get("bar.example.com", "/wildcard-foo-example-com"), n()),
            (
                get("bar.foo.example.com", "/wildcard-foo-example-com"),
                ok(V1),
            ),
            (get("bar.foo.example.com", "/wildcard-example-com"), n()),
            (get("abc.foo.example.com", "/abc-foo-example-com"), ok(V1)),
            (get("abc.foo.example.com", "/wildcard-foo-example-com"), n()),
            (get("abc.foo.example.com", "/empty-hostname"), n()),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_request_header_modifier() {
    let suite = start(&route(
        "request-header-modifier",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: X-Header-Add, value: add-appends-values}]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [X-Header-Remove]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /multiple}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}]
        add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}]
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /case-insensitivity}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: header-set}]
        add: [{name: X-Header-Add, value: header-add}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (
                get("example.com", "/set").header("Some-Other-Header", "val"),
                ok(V1)
                    .sees("X-Header-Set", "set-overwrites-values")
                    .sees("Some-Other-Header", "val"),
            ),
            (
                get("example.com", "/set").header("X-Header-Set", "some-other-value"),
                ok(V1).sees("X-Header-Set", "set-overwrites-values"),
            ),
            (
                get("example.com", "/add").header("Some-Other-Header", "val"),
                ok(V1).sees("X-Header-Add", "add-appends-values"),
            ),
            (
                get("example.com", "/add").header("X-Header-Add", "some-other-value"),
                ok(V1).sees("X-Header-Add", "some-other-value,add-appends-values"),
            ),
            (
                get("example.com", "/remove").header("X-Header-Remove", "val"),
                ok(V1).not_sees("X-Header-Remove"),
            ),
            (
                get("example.com", "/multiple")
                    .header("X-Header-Set-2", "set-val")
                    .header("X-Header-Add-2", "add-val")
                    .header("X-Header-Remove-1", "val")
                    .header("X-Header-Remove-2", "val")
                    .header("Another-Header", "another-header-val"),
                ok(V1)
                    .sees("X-Header-Set-1", "header-set-1")
                    .sees("X-Header-Set-2", "header-set-2")
                    .sees("X-Header-Add-1", "header-add-1")
                    .sees("X-Header-Add-2", "add-val,header-add-2")
                    .sees("X-Header-Add-3", "header-add-3")
                    .sees("Another-Header", "another-header-val")
                    .not_sees("X-Header-Remove-1")
                    .not_sees("X-Header-Remove-2"),
            ),
            (
                get("example.com", "/case-insensitivity")
                    .header("x-header-set", "original-val-set")
                    .header("x-header-add", "original-val-add")
                    .header("x-header-remove", "val"),
                ok(V1)
                    .sees("X-Header-Set", "header-set")
                    .sees("X-Header-Add", "original-val-add,header-add")
                    .not_sees("X-Header-Remove"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_response_header_modifier() {
    let suite = start(&route(
        "response-header-modifier",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-Header-Add, value: add-appends-values}]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [X-Header-Remove]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /case-insensitivity}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: X-Header-Set, value: header-set}], add: [{name: X-Header-Add, value: header-add}], remove: [X-Header-Remove]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(&suite, &[
        (get("example.com", "/set"), ok(V1).responds("X-Header-Set", "set-overwrites-values")),
        (get("example.com", "/set").header("X-Echo-Set-Header", "X-Header-Set:some-other-value"), ok(V1).responds("X-Header-Set", "set-overwrites-values")),
        (get("example.com", "/add"), ok(V1).responds("X-Header-Add", "add-appends-values")),
        (get("example.com", "/add").header("X-Echo-Set-Header", "X-Header-Add:some-other-value"), ok(V1).responds("X-Header-Add", "some-other-value,add-appends-values")),
        (get("example.com", "/remove").header("X-Echo-Set-Header", "X-Header-Remove:val"), ok(V1).responds_without("X-Header-Remove")),
        (
            get("example.com", "/case-insensitivity").header("X-Echo-Set-Header", "x-header-set:original-val-set,x-header-add:original-val-add,x-header-remove:val"),
            ok(V1).responds("X-Header-Set", "header-set").responds("X-Header-Add", "original-val-add,header-add").responds_without("X-Header-Remove"),
        ),
    ])
    .await;
}

#[tokio::test]
async fn http_route_redirects() {
    // HTTPRouteRedirectHostAndStatus, HTTPRouteRedirectPath, HTTPRouteRedirectPort,
    // HTTPRouteRedirectScheme, HTTPRoute303/307/308Redirect.
    let suite = start(&route(
        "redirects",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}}]
  - matches: [{path: {type: PathPrefix, value: /path-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
  - matches: [{path: {type: PathPrefix, value: /port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: PathPrefix, value: /port-and-host-and-status}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083, hostname: example.org, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-and-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
  - matches: [{path: {type: PathPrefix, value: /see-other}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 303}}]
  - matches: [{path: {type: PathPrefix, value: /temporary}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]
  - matches: [{path: {type: PathPrefix, value: /permanent}}]
    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 308}}]
"#,
    ));
    let port = suite.addr("HTTP").port();
    let here = |path: &str| format!("http://redirect.example:{port}{path}");
    check_all(
        &suite,
        &[
            (
                get("redirect.example", "/hostname-redirect"),
                redirect(302, &format!("http://example.org:{port}/hostname-redirect")),
            ),
            (
                get("redirect.example", "/host-and-status"),
                redirect(301, &format!("http://example.org:{port}/host-and-status")),
            ),
            (
                get("redirect.example", "/original-prefix/lemon"),
                redirect(302, &here("/replacement-prefix/lemon")),
            ),
            (
                get("redirect.example", "/full/path/original"),
                redirect(302, &here("/full-path-replacement")),
            ),
            (
                get("redirect.example", "/path-and-host"),
                redirect(
                    302,
                    &format!("http://example.org:{port}/replacement-prefix"),
                ),
            ),
            (
                get("redirect.example", "/port"),
                redirect(302, "http://redirect.example:8083/port"),
            ),
            (
                get("redirect.example", "/port-and-host-and-status"),
                redirect(301, "http://example.org:8083/port-and-host-and-status"),
            ),
            (
                get("redirect.example", "/scheme"),
                redirect(302, "https://redirect.example/scheme"),
            ),
            (
                get("redirect.example", "/scheme-and-host"),
                redirect(302, "https://example.org/scheme-and-host"),
            ),
            (
                get("redirect.example", "/scheme-and-port"),
                redirect(302, "https://redirect.example:8443/scheme-and-port"),
            ),
            (
                get("redirect.example", "/see-other").method("POST"),
                redirect(303, &here("/see-other")),
            ),
            (
                get("redirect.example", "/temporary?x=1"),
                redirect(307, &here("/temporary?x=1")),
            ),
            (
                get("redirect.example", "/permanent"),
                redirect(308, &here("/permanent")),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_rewrite_host_and_path() {
    // HTTPRouteRewriteHost, HTTPRouteRewritePath.
    let suite = start(&route(
        "rewrite",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /one}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /rewrite-path-and-modify-headers}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /prefix}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}]}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (
                get("rewrite.example", "/one"),
                ok(V1).host("one.example.org"),
            ),
            (
                get("rewrite.example", "/prefix/one/two"),
                ok(V1).path("/one/two"),
            ),
            (get("rewrite.example", "/full/one/two"), ok(V1).path("/one")),
            (
                get("rewrite.example", "/full/one/two?q=1"),
                ok(V1).path("/one?q=1"),
            ),
            (
                get("rewrite.example", "/strip-prefix/three"),
                ok(V1).path("/three"),
            ),
            (get("rewrite.example", "/strip-prefix"), ok(V1).path("/")),
            (
                get("rewrite.example", "/rewrite-path-and-modify-headers/one")
                    .header("X-Header-Set", "x"),
                ok(V1)
                    .path("/prefix/one")
                    .sees("X-Header-Set", "set-overwrites-values"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_request_mirror() {
    // HTTPRouteRequestMirror and HTTPRouteRequestMultipleMirrors.
    let suite = start(&route(
        "request-mirror",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /multi-mirror}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v3, port: 8080}}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[(
            get(
                "example.com",
                "/mirror?gateway-api-conformance-request-id=m1",
            ),
            ok(V1),
        )],
    )
    .await;
    check_all(
        &suite,
        &[(
            get(
                "example.com",
                "/multi-mirror?gateway-api-conformance-request-id=m2",
            ),
            ok(V1),
        )],
    )
    .await;
    meridian_tests::eventually(
        "mirrored requests in the mirror backends' logs",
        Duration::from_secs(10),
        || async {
            let v2 = suite.echo_log(V2);
            let v3 = suite.echo_log(V3);
            if v2.contains("request made to /mirror?gateway-api-conformance-request-id=m1")
                && v2
                    .contains("request made to /multi-mirror?gateway-api-conformance-request-id=m2")
                && v3
                    .contains("request made to /multi-mirror?gateway-api-conformance-request-id=m2")
                && !v3.contains("request-id=m1")
            {
                Ok(())
            } else {
                Err("not mirrored yet")
            }
        },
    )
    .await;
}

#[tokio::test]
async fn http_route_weight() {
    let suite = start(&route(
        "weighted-backends",
        r#"  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
"#,
    ));
    check_all(&suite, &[(get("example.com", "/"), status(&[200]))]).await;
    // 500 requests, concurrency 10. Upstream conformance allows 5 percentage points either
    // way; this gateway's choice is deterministic, so any 500 consecutive requests split
    // exactly 350/150, and weight 0 never gets one.
    let client = client();
    let addr = suite.addr("HTTP");
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..50 {
                let body: serde_json::Value = client
                    .get(format!("http://{addr}/"))
                    .header("host", "example.com")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                seen.push(
                    body["pod"]
                        .as_str()
                        .unwrap()
                        .split("-6c8d")
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
            seen
        }));
    }
    for task in tasks {
        for backend in task.await.unwrap() {
            *counts.entry(backend).or_default() += 1;
        }
    }
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert_eq!(count(V1), 350, "{counts:?}");
    assert_eq!(count(V2), 150, "{counts:?}");
    assert_eq!(count(V3), 0, "{counts:?}");
}

#[tokio::test]
async fn http_route_timeouts() {
    // HTTPRouteTimeoutRequest and HTTPRouteTimeoutBackendRequest.
    let suite = start(&route(
        "timeouts",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /request-timeout}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /disable-request-timeout}}]
    timeouts: {request: 0s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-timeout}}]
    timeouts: {request: 2s, backendRequest: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/request-timeout"), ok(V1)),
            (
                get("example.com", "/request-timeout?delay=1s"),
                status(&[504]),
            ),
            (
                get("example.com", "/disable-request-timeout?delay=1s"),
                ok(V1),
            ),
            (get("example.com", "/backend-timeout"), ok(V1)),
            (
                get("example.com", "/backend-timeout?delay=1s"),
                status(&[504]),
            ),
        ],
    )
    .await;

    // The request timeout covers the whole exchange: a body still streaming when it runs out
    // is cut short (the head, 200, is already sent), and the client sees it incomplete.
    let client = client();
    let addr = suite.addr("HTTP");
    let fetch = |path: &'static str| {
        let client = client.clone();
        async move {
            let started = std::time::Instant::now();
            let response = client
                .get(format!("http://{addr}{path}"))
                .header("host", "example.com")
                .send()
                .await
                .expect("the response head arrives");
            let status = response.status().as_u16();
            (status, response.bytes().await, started.elapsed())
        }
    };
    let (code, body, took) = fetch("/request-timeout?bodyDelay=3s").await;
    assert_eq!(code, 200);
    assert!(
        body.is_err(),
        "a body past the request timeout arrived: {body:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "cut after {took:?}, not at 500 ms"
    );
    let (code, body, _) = fetch("/disable-request-timeout?bodyDelay=1s").await;
    assert_eq!(code, 200);
    let body = body.expect("without a timeout the body arrives whole");
    assert!(String::from_utf8_lossy(&body).contains(V1));
    // So does backendRequest (2 s request timeout, 500 ms per attempt): the body is cut at
    // 500 ms, not at 2 s.
    let (code, body, took) = fetch("/backend-timeout?bodyDelay=3s").await;
    assert_eq!(code, 200);
    assert!(
        body.is_err(),
        "a body past the backendRequest timeout arrived: {body:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "cut after {took:?}, not at 500 ms"
    );
}

#[tokio::test]
async fn http_route_retry() {
    // HTTPRouteRetry and HTTPRouteRetryConnectionError.
    let suite = start(&route(
        "retry",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/code-500-attempts-3}}]
    retry: {codes: [500], attempts: 3, backoff: 10ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /retry/code-all-attempts-2}}]
    retry: {codes: [500, 502, 503, 504], attempts: 2}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /retry/connection-error}}]
    retry: {attempts: 3}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[(get("example.com", "/retry/code-500-attempts-3"), ok(V1))],
    )
    .await;
    let client = client();
    let addr = suite.addr("HTTP");
    // Each case uses a fresh uuid, so the echo's failure counter starts at zero; no retrying
    // of the check itself (that would consume the counted failures).
    let cases: &[(&str, u16)] = &[
        (
            "/retry/code-500-attempts-3?uuid=a1&succeedAfter=2&responseCode=500",
            200,
        ),
        (
            "/retry/code-500-attempts-3?uuid=a2&succeedAfter=4&responseCode=500",
            500,
        ),
        (
            "/retry/code-500-attempts-3?uuid=a3&succeedAfter=1&responseCode=503",
            503,
        ),
        (
            "/retry/code-all-attempts-2?uuid=b1&succeedAfter=1&responseCode=502",
            200,
        ),
        (
            "/retry/code-all-attempts-2?uuid=b2&succeedAfter=3&responseCode=504",
            504,
        ),
        ("/retry/connection-error?uuid=c1&succeedAfter=2", 200),
    ];
    for (path, want) in cases {
        let response = client
            .get(format!("http://{addr}{path}"))
            .header("host", "example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), *want, "{path}");
    }
    let exhausted = client
        .get(format!(
            "http://{addr}/retry/connection-error?uuid=c2&succeedAfter=4"
        ))
        .header("host", "example.com")
        .send()
        .await
        .unwrap();
    assert!(
        [500, 503].contains(&exhausted.status().as_u16()),
        "{}",
        exhausted.status()
    );
}

#[tokio::test]
async fn http_route_cors() {
    let suite = start(&route(
        "cors",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /cors-1}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /cors-2}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    let preflight = |path: &str, origin: &str| {
        get("example.com", path)
            .method("OPTIONS")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "x-header-1")
    };
    check_all(
        &suite,
        &[
            (
                preflight("/cors-1", "https://www.foo.com"),
                status(&[200, 204])
                    .responds("access-control-allow-origin", "https://www.foo.com")
                    .responds("access-control-allow-methods", "GET, OPTIONS")
                    .responds("access-control-allow-headers", "x-header-1, x-header-2")
                    .responds("access-control-expose-headers", "x-header-3, x-header-4")
                    .responds("access-control-max-age", "3600")
                    .responds("access-control-allow-credentials", "true"),
            ),
            (
                preflight("/cors-1", "https://api.bar.com"),
                status(&[200, 204]).responds("access-control-allow-origin", "https://api.bar.com"),
            ),
            (
                preflight("/cors-1", "https://a.b.bar.com"),
                status(&[200, 204]).responds("access-control-allow-origin", "https://a.b.bar.com"),
            ),
            (
                preflight("/cors-1", "https://foobar.com"),
                status(&[200, 204, 403]).responds_without("access-control-allow-origin"),
            ),
            (
                get("example.com", "/cors-1").header("Origin", "https://www.foo.com"),
                ok(V1)
                    .responds("access-control-allow-origin", "https://www.foo.com")
                    .responds("access-control-allow-credentials", "true"),
            ),
            (
                get("example.com", "/cors-1").header("Origin", "https://www.baz.com"),
                ok(V1).responds_without("access-control-allow-origin"),
            ),
            (
                preflight("/cors-2", "https://anything.example"),
                status(&[200, 204])
                    .responds("access-control-allow-origin", "*")
                    .responds("access-control-allow-methods", "*")
                    .responds_without("access-control-allow-credentials"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_reference_grant() {
    // HTTPRouteReferenceGrant (grant, then revoke) and HTTPRouteInvalidCrossNamespaceBackendRef.
    let grant = r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: "", kind: Service, name: web-backend}]
"#;
    let routes = route(
        "reference-grant",
        "  rules:\n  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]\n",
    );
    let suite = start(&format!("{routes}{grant}"));
    check_all(
        &suite,
        &[(
            get("example.com", "/"),
            ok("web-backend").namespace("gateway-conformance-web-backend"),
        )],
    )
    .await;
    // Deleting the grant revokes access: the share becomes 500.
    suite.write("10-test.yaml", &format!("{SAME_NAMESPACE_GATEWAY}{routes}"));
    check_all(&suite, &[(get("example.com", "/"), status(&[500]))]).await;
}

#[tokio::test]
async fn http_route_invalid_backends() {
    // HTTPRouteInvalidNonExistentBackendRef, HTTPRouteInvalidBackendRefUnknownKind,
    // HTTPRouteNoBackendRefs, HTTPRoutePartiallyInvalidViaInvalidReferenceGrant (share).
    let suite = start(&route(
        "invalid",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /nonexistent}}]
    backendRefs: [{name: nonexistent, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /unknown-kind}}]
    backendRefs: [{group: unknown.example.com, kind: Unknown, name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /no-backends}}]
  - matches: [{path: {type: PathPrefix, value: /empty-backends}}]
    backendRefs: []
  - matches: [{path: {type: PathPrefix, value: /forward}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /cross-namespace}}]
    backendRefs: [{name: app-backend-v1, namespace: gateway-conformance-app-backend, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/forward"), ok(V1)),
            (get("example.com", "/nonexistent"), status(&[500])),
            (get("example.com", "/unknown-kind"), status(&[500])),
            (get("example.com", "/no-backends"), status(&[500])),
            (get("example.com", "/empty-backends"), status(&[500])),
            (get("example.com", "/cross-namespace"), status(&[500])),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_backend_protocol_h2c() {
    let suite = start(&route(
        "backend-protocol-h2c",
        "  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8081}]\n",
    ));
    meridian_tests::init_crypto();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let addr = suite.addr("HTTP");
    meridian_tests::eventually(
        "h2c through the gateway to an h2c backend",
        Duration::from_secs(30),
        || async {
            let response = h2
                .get(format!("http://{addr}/"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
            if body["proto"] == "HTTP/2.0" && body["pod"].as_str().unwrap_or("").starts_with(V1) {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn http_route_backend_protocol_websocket() {
    use meridian_gateway::echo::websocket::{Message, read_message, write_message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let suite = start(&route(
        "backend-protocol-websocket",
        "  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8082}]\n",
    ));
    check_all(&suite, &[(get("example.com", "/"), ok(V1))]).await;
    let mut stream = tokio::net::TcpStream::connect(suite.addr("HTTP"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for message in [
        Message::Text("Hello, World!".into()),
        Message::Binary(b"binary".to_vec()),
    ] {
        write_message(&mut stream, &message, Some([1, 2, 3, 4]))
            .await
            .unwrap();
        assert_eq!(read_message(&mut stream).await.unwrap(), Some(message));
    }
}

#[tokio::test]
async fn http_route_backend_request_header_modifier() {
    // HTTPRouteBackendRequestHeaderModifier: a backendRef's own filters apply to the requests
    // sent to that backend, after the rule's.
    let suite = start(&route(
        "backend-request-header-modifier",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /backend-only}}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{name: X-Header-Set, value: set-by-backend}]
          add: [{name: X-Header-Add, value: added-by-backend}]
          remove: [X-Header-Remove]
  - matches: [{path: {type: PathPrefix, value: /rule-and-backend}}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Rule, value: rule}], add: [{name: X-Both, value: from-rule}]}}]
    backendRefs:
    - name: infra-backend-v2
      port: 8080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: X-Both, value: from-backend}]}}]
"#,
    ));
    check_all(
        &suite,
        &[
            (
                get("example.com", "/backend-only")
                    .header("X-Header-Set", "original")
                    .header("X-Header-Add", "original")
                    .header("X-Header-Remove", "original"),
                ok(V1)
                    .sees("X-Header-Set", "set-by-backend")
                    .sees("X-Header-Add", "original,added-by-backend")
                    .not_sees("X-Header-Remove"),
            ),
            (
                get("example.com", "/rule-and-backend"),
                ok(V2)
                    .sees("X-Rule", "rule")
                    .sees("X-Both", "from-rule,from-backend"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_redirect_port_and_scheme() {
    // HTTPRouteRedirectPortAndScheme: a redirect's port is the scheme's well-known port when
    // the filter names a scheme but no port, the listener's port when it names neither, and a
    // well-known port for the scheme is left out of the Location.
    let suite = start(&route(
        "redirect-port-and-scheme",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 80}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-8080}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8080}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-and-port-80}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, port: 80}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-http-and-port-8080}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: http, port: 8080}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-nil}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-443}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443}}]
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-8443}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
"#,
    ));
    let port = suite.addr("HTTP").port();
    let host = "example.com";
    let cases: Vec<(Req, Expect)> = [
        ("/scheme-nil-and-port-nil", format!("http://{host}:{port}")),
        ("/scheme-nil-and-port-80", format!("http://{host}")),
        ("/scheme-nil-and-port-8080", format!("http://{host}:8080")),
        ("/scheme-http-and-port-nil", format!("http://{host}")),
        ("/scheme-http-and-port-80", format!("http://{host}")),
        ("/scheme-http-and-port-8080", format!("http://{host}:8080")),
        ("/scheme-https-and-port-nil", format!("https://{host}")),
        ("/scheme-https-and-port-443", format!("https://{host}")),
        (
            "/scheme-https-and-port-8443",
            format!("https://{host}:8443"),
        ),
    ]
    .into_iter()
    .map(|(path, origin)| (get(host, path), redirect(302, &format!("{origin}{path}"))))
    .collect();
    check_all(&suite, &cases).await;
}

#[tokio::test]
async fn http_route_request_percentage_mirror() {
    // HTTPRouteRequestPercentageMirror: `percent` and `fraction` mirror that share of the
    // requests; 0 % none, 100 % all.
    let suite = start(&route(
        "percentage-mirror",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /always}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, percent: 100}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /never}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, percent: 0}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, fraction: {numerator: 1, denominator: 2}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /twenty}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}, percent: 20}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    ));
    check_all(&suite, &[(get("example.com", "/always"), ok(V1))]).await;
    const N: usize = 200;
    let client = client();
    let base = format!("http://{}", suite.addr("HTTP"));
    for i in 0..N {
        for path in ["always", "never", "half", "twenty"] {
            let response = client
                .get(format!("{base}/{path}?n={i}"))
                .header("host", "example.com")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "/{path}");
        }
    }
    let mirrored = |path: &str| {
        let needle = format!("request made to /{path}?n=");
        suite.echo_log(V2).matches(&needle).count()
    };
    // Every /always request was mirrored; the mirrors of the others were sent before.
    meridian_tests::eventually(
        "all /always requests mirrored",
        Duration::from_secs(10),
        || async {
            match mirrored("always") {
                N => Ok(()),
                n => Err(format!("{n} of {N}")),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mirrored("never"), 0);
    // Binomial bounds at more than 6 standard deviations: 100 ± 43 and 40 ± 34.
    let half = mirrored("half");
    assert!((57..=143).contains(&half), "{half} of {N} mirrored at 1/2");
    let twenty = mirrored("twenty");
    assert!(
        (6..=74).contains(&twenty),
        "{twenty} of {N} mirrored at 20 %"
    );
}

#[tokio::test]
async fn http_route_service_types() {
    // HTTPRouteServiceTypes: a headless Service (clusterIP: None) and a Service without a
    // selector whose EndpointSlice is managed by hand route like any other.
    let services = r#"apiVersion: v1
kind: Service
metadata: {name: headless, namespace: gateway-conformance-infra}
spec:
  clusterIP: None
  selector: {app: infra-backend-v1}
  ports: [{name: http, port: 8080, targetPort: {{PORT:infra-backend-v1}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: headless-xyz12
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: headless, service.kubernetes.io/headless: ""}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
ports: [{name: http, port: {{PORT:infra-backend-v1}}}]
---
apiVersion: v1
kind: Service
metadata: {name: manual-endpoints, namespace: gateway-conformance-infra}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-endpoints-1
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: manual-endpoints, endpointslice.kubernetes.io/managed-by: someone-else}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
ports: [{name: http, port: {{PORT:infra-backend-v2}}}]
---
"#;
    let routes = route(
        "service-types",
        r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /headless}}]
    backendRefs: [{name: headless, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /manual}}]
    backendRefs: [{name: manual-endpoints, port: 8080}]
"#,
    );
    let suite = start(&format!("{services}{routes}"));
    check_all(
        &suite,
        &[
            (get("example.com", "/headless"), ok(V1)),
            (get("example.com", "/manual"), ok(V2)),
        ],
    )
    .await;
}

#[tokio::test]
async fn http_route_named_rule() {
    // HTTPRouteNamedRule: rules may carry a `name`; named and unnamed rules route alike.
    let suite = start(&route(
        "named-rule",
        r#"  rules:
  - name: named-rule
    matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /unnamed}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#,
    ));
    check_all(
        &suite,
        &[
            (get("example.com", "/named"), ok(V1)),
            (get("example.com", "/unnamed"), ok(V2)),
        ],
    )
    .await;
}
