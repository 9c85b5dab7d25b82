//! Manifests `meridian ctl apply -f` understands: YAML files with one or more documents, each a
//! Gateway API `HTTPRoute`, a Kubernetes `Secret` of type `kubernetes.io/tls` (pushed to every
//! cluster as a certificate) or a Meridian `Cluster` / `HostnamePolicy` / `DnsRecordSet`
//! (`apiVersion: meridian.dev/v1alpha1`), turned into admin API requests.
//!
//! ```yaml
//! apiVersion: meridian.dev/v1alpha1
//! kind: Cluster
//! metadata: {name: us-east}
//! spec: {region: us, addresses: [127.0.1.1]}
//! ---
//! apiVersion: meridian.dev/v1alpha1
//! kind: HostnamePolicy
//! metadata: {name: app.demo.meridian.test}
//! spec:
//!   ttl: 30
//!   targets: [{cluster: us-east, weight: 1}]
//!   routing: {geo: true}
//! ---
//! apiVersion: meridian.dev/v1alpha1
//! kind: DnsRecordSet
//! metadata: {name: www.demo.meridian.test}
//! spec: {type: CNAME, ttl: 300, values: [app.demo.meridian.test]}
//! ```

use base64::Engine as _;
use serde_json::{Value, json};

/// The API version of Meridian's own kinds.
pub const MERIDIAN_API_VERSION: &str = "meridian.dev/v1alpha1";

/// One object to apply or delete.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Where it came from, for messages (`routes.yaml doc 2`).
    pub source: String,
    /// What it is.
    pub kind: Kind,
    /// The admin API path of the object (`/v1/clusters/us-east`).
    pub path: String,
    /// The PUT body.
    pub body: Value,
}

/// The kinds `ctl` applies, in the order they are applied (a hostname needs its clusters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `meridian.dev/v1alpha1` `Cluster`.
    Cluster,
    /// `meridian.dev/v1alpha1` `HostnamePolicy`.
    HostnamePolicy,
    /// `meridian.dev/v1alpha1` `DnsRecordSet` (a static record set).
    DnsRecordSet,
    /// `v1` `Secret` of type `kubernetes.io/tls` (a certificate with its key).
    Certificate,
    /// `gateway.networking.k8s.io/v1` `HTTPRoute`.
    HttpRoute,
}

// === impl Resource ===

impl Resource {
    /// `cluster/us-east`, `route/shop/web`.
    pub fn label(&self) -> String {
        let name = self
            .path
            .trim_start_matches("/v1/")
            .split_once('/')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
        let kind = match self.kind {
            Kind::Cluster => "cluster",
            Kind::HostnamePolicy => "hostname",
            Kind::DnsRecordSet => "records",
            Kind::Certificate => "certificate",
            Kind::HttpRoute => "route",
        };
        format!("{kind}/{name}")
    }
}

/// Parses every document of `text`; `source` names the file in errors. Fails with every
/// problem found, so nothing is sent when any document is wrong.
pub fn parse(text: &str, source: &str) -> Result<Vec<Resource>, Vec<String>> {
    let documents: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(documents) => documents,
        Err(err) => return Err(vec![format!("{source}: {err}")]),
    };
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for (i, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let label = format!("{source} doc {}", i + 1);
        match resource(document, &label) {
            Ok(resource) => resources.push(resource),
            Err(problem) => problems.push(format!("{label}: {problem}")),
        }
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(problems)
    }
}

fn string_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    current.as_str()
}

fn resource(mut document: Value, source: &str) -> Result<Resource, String> {
    if !document.is_object() {
        return Err("a document must be a mapping with apiVersion and kind".into());
    }
    let api_version = string_at(&document, &["apiVersion"])
        .ok_or("apiVersion: required")?
        .to_string();
    let kind = string_at(&document, &["kind"])
        .ok_or("kind: required")?
        .to_string();
    let name = string_at(&document, &["metadata", "name"])
        .ok_or("metadata.name: required")?
        .to_string();
    if name.contains('/') || name.is_empty() {
        return Err(format!("metadata.name: {name:?} is not a valid name"));
    }
    let meridian_spec = |document: &Value| -> Result<Value, String> {
        if api_version != MERIDIAN_API_VERSION {
            return Err(format!(
                "apiVersion: {kind} needs {MERIDIAN_API_VERSION:?}, not {api_version:?}"
            ));
        }
        match document.get("spec") {
            Some(spec) if spec.is_object() => Ok(spec.clone()),
            Some(_) => Err("spec: must be a mapping".into()),
            None => Err("spec: required".into()),
        }
    };
    let source = source.to_string();
    match kind.as_str() {
        "Cluster" => {
            let mut body = meridian_spec(&document)?;
            body["name"] = Value::String(name.clone());
            Ok(Resource {
                source,
                kind: Kind::Cluster,
                path: format!("/v1/clusters/{name}"),
                body,
            })
        }
        "HostnamePolicy" => {
            let mut body = meridian_spec(&document)?;
            body["fqdn"] = Value::String(name.clone());
            Ok(Resource {
                source,
                kind: Kind::HostnamePolicy,
                path: format!("/v1/hostnames/{name}"),
                body,
            })
        }
        "DnsRecordSet" => {
            let body = meridian_spec(&document)?;
            let rtype = body
                .get("type")
                .and_then(Value::as_str)
                .ok_or("spec.type: required (A, AAAA, CNAME, TXT or MX)")?
                .to_ascii_uppercase();
            let mut body = body;
            body["name"] = Value::String(name.clone());
            Ok(Resource {
                source,
                kind: Kind::DnsRecordSet,
                path: format!("/v1/records/{name}/{rtype}"),
                body,
            })
        }
        "HTTPRoute" => {
            if !api_version.starts_with("gateway.networking.k8s.io/") {
                return Err(format!(
                    "apiVersion: HTTPRoute needs gateway.networking.k8s.io/v1, not {api_version:?}"
                ));
            }
            let namespace = string_at(&document, &["metadata", "namespace"])
                .unwrap_or("default")
                .to_string();
            if let Some(object) = document.as_object_mut() {
                // Status is the cluster's to write, not the hub's.
                object.remove("status");
            }
            document["metadata"]["namespace"] = Value::String(namespace.clone());
            Ok(Resource {
                source,
                kind: Kind::HttpRoute,
                path: format!("/v1/routes/{namespace}/{name}"),
                body: document,
            })
        }
        "Secret" => {
            if api_version != "v1" {
                return Err(format!(
                    "apiVersion: Secret needs \"v1\", not {api_version:?}"
                ));
            }
            let namespace = string_at(&document, &["metadata", "namespace"])
                .unwrap_or("default")
                .to_string();
            let body = tls_secret(&document)?;
            Ok(Resource {
                source,
                kind: Kind::Certificate,
                path: format!("/v1/certificates/{namespace}/{name}"),
                body,
            })
        }
        other => Err(format!(
            "kind: {other:?} is not one `meridian ctl` applies (Cluster, HostnamePolicy, DnsRecordSet, HTTPRoute, Secret)"
        )),
    }
}

/// The certificate body of a `kubernetes.io/tls` Secret: `tls.crt` and `tls.key` from
/// `stringData` or base64 `data` (`stringData` wins, as in Kubernetes). Errors never quote the
/// key.
fn tls_secret(document: &Value) -> Result<Value, String> {
    match string_at(document, &["type"]) {
        Some("kubernetes.io/tls") => {}
        Some(other) => {
            return Err(format!(
                "type: only kubernetes.io/tls Secrets are applied (certificates), not {other:?}"
            ));
        }
        None => return Err("type: required (kubernetes.io/tls)".into()),
    }
    let field = |key: &str| -> Result<String, String> {
        if let Some(text) = string_at(document, &["stringData", key]) {
            return Ok(text.to_string());
        }
        let Some(encoded) = string_at(document, &["data", key]) else {
            return Err(format!("data.{key}: required (or stringData.{key})"));
        };
        // Kubernetes tolerates line breaks inside base64 data.
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| format!("data.{key}: not valid base64"))?;
        String::from_utf8(bytes).map_err(|_| format!("data.{key}: not PEM text"))
    };
    Ok(json!({
        "cert_chain_pem": field("tls.crt")?,
        "private_key_pem": field("tls.key")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec: {hostnames: [app.demo.meridian.test]}
status: {parents: []}
---
apiVersion: meridian.dev/v1alpha1
kind: HostnamePolicy
metadata: {name: app.demo.meridian.test}
spec: {targets: [{cluster: us-east}]}
---
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: us-east}
spec: {region: us, addresses: [127.0.1.1]}
---
apiVersion: meridian.dev/v1alpha1
kind: DnsRecordSet
metadata: {name: www.demo.meridian.test}
spec: {type: cname, values: [app.demo.meridian.test]}
"#;
        let resources = parse(text, "all.yaml").unwrap();
        assert_eq!(resources.len(), 4);
        assert_eq!(
            resources[3].path,
            "/v1/records/www.demo.meridian.test/CNAME"
        );
        assert_eq!(resources[3].label(), "records/www.demo.meridian.test/CNAME");
        assert_eq!(resources[0].path, "/v1/routes/shop/web");
        assert!(resources[0].body.get("status").is_none());
        assert_eq!(resources[0].label(), "route/shop/web");
        assert_eq!(resources[1].path, "/v1/hostnames/app.demo.meridian.test");
        assert_eq!(resources[1].body["fqdn"], "app.demo.meridian.test");
        assert_eq!(resources[2].body["region"], "us");
        assert_eq!(resources[2].label(), "cluster/us-east");
    }

    #[test]
    fn tls_secrets_become_certificates() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-tls, namespace: meridian-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: other}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: CERT\n  tls.key: KEY\n",
            b64("CERT"),
            b64("KEY")
        );
        let resources = parse(&text, "tls.yaml").unwrap();
        assert_eq!(resources.len(), 2);
        assert_eq!(
            resources[0].path,
            "/v1/certificates/meridian-system/demo-tls"
        );
        assert_eq!(resources[0].label(), "certificate/meridian-system/demo-tls");
        assert_eq!(resources[0].body["cert_chain_pem"], "CERT");
        assert_eq!(resources[0].body["private_key_pem"], "KEY");
        assert_eq!(resources[1].path, "/v1/certificates/default/other");
        assert_eq!(resources[1].body["private_key_pem"], "KEY");

        let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: Opaque\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\ntype: kubernetes.io/tls\ndata: {tls.crt: Q0VSVA==, tls.key: '%%%secret%%%'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: c}\ntype: kubernetes.io/tls\n";
        let problems = parse(bad, "bad.yaml").unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("only kubernetes.io/tls"),
            "{problems:?}"
        );
        assert!(problems[1].contains("data.tls.key: not valid base64"));
        assert!(!problems[1].contains("secret"), "never quotes the key");
        assert!(problems[2].contains("data.tls.crt: required"));
    }

    #[test]
    fn routes_default_to_the_default_namespace() {
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec: {}\n";
        let resources = parse(text, "r.yaml").unwrap();
        assert_eq!(resources[0].path, "/v1/routes/default/web");
    }

    #[test]
    fn problems_name_the_document_and_field() {
        let text = r#"
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: us-east}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
---
kind: Cluster
metadata: {name: x}
---
apiVersion: meridian.dev/v1
kind: Cluster
metadata: {name: x}
spec: {}
"#;
        let problems = parse(text, "bad.yaml").unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(problems[0], "bad.yaml doc 1: spec: required");
        assert!(problems[1].starts_with("bad.yaml doc 2: kind: \"Service\""));
        assert_eq!(problems[2], "bad.yaml doc 3: apiVersion: required");
        assert!(problems[3].contains("apiVersion: Cluster needs"));
        let problems = parse("key: [unclosed", "broken.yaml").unwrap_err();
        assert!(problems[0].starts_with("broken.yaml: "), "{problems:?}");
    }
}
