//! The simulated clusters of `meridian dev`: their Gateway API YAML and the shared demo route.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;

/// One simulated cluster.
#[derive(Clone, Debug)]
pub struct DevCluster {
    /// Cluster name (`us-east`).
    pub name: &'static str,
    /// Its region (`us`).
    pub region: &'static str,
    /// The client subnet the demo geo map sends to this region.
    pub client_subnet: &'static str,
    /// The loopback address its gateway listens on (and DNS answers with).
    pub gateway_ip: IpAddr,
}

/// The namespace and name of the Gateway every simulated cluster runs.
pub const GATEWAY_NAMESPACE: &str = "meridian-system";
/// See [`GATEWAY_NAMESPACE`].
pub const GATEWAY_NAME: &str = "global";
/// The `kubernetes.io/tls` Secret (in [`GATEWAY_NAMESPACE`]) the HTTPS listener serves; it is
/// not in the clusters' YAML: the hub distributes it (`PUT /v1/certificates/...`).
pub const TLS_SECRET: &str = "demo-tls";

/// The two clusters the issue asks for.
pub fn clusters() -> Vec<DevCluster> {
    vec![
        DevCluster {
            name: "us-east",
            region: "us",
            client_subnet: "203.0.113.0/24",
            gateway_ip: IpAddr::from([127, 0, 1, 1]),
        },
        DevCluster {
            name: "eu-west",
            region: "eu",
            client_subnet: "198.51.100.0/24",
            gateway_ip: IpAddr::from([127, 0, 1, 2]),
        },
    ]
}

/// Writes the cluster's Gateway API objects (what `kubectl get -o yaml` would show in a real
/// cluster): the Gateway, the demo namespace, the `echo` Service and one EndpointSlice per demo
/// backend (each backend listens on its own port, and EndpointSlice ports are per slice).
/// The Gateway has an HTTP listener and an HTTPS listener for `*.{zone}` whose certificate
/// Secret comes from the hub.
pub fn write_config(
    dir: &Path,
    cluster: &DevCluster,
    gateway_port: u16,
    https_port: u16,
    zone: &str,
    backends: &[SocketAddr],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let gateway = format!(
        r#"# The cluster's gateway: HTTP on {ip}:{port} and HTTPS on {ip}:{https_port}, open to routes
# from every namespace. The HTTPS certificate (Secret {TLS_SECRET}) is distributed by the hub.
apiVersion: v1
kind: Namespace
metadata:
  name: {GATEWAY_NAMESPACE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {GATEWAY_NAME}
  namespace: {GATEWAY_NAMESPACE}
spec:
  gatewayClassName: meridian
  addresses:
    - type: IPAddress
      value: "{ip}"
  listeners:
    - name: http
      port: {port}
      protocol: HTTP
      allowedRoutes:
        namespaces:
          from: All
    - name: https
      port: {https_port}
      protocol: HTTPS
      hostname: "*.{zone}"
      tls:
        mode: Terminate
        certificateRefs:
          - name: {TLS_SECRET}
      allowedRoutes:
        namespaces:
          from: All
"#,
        ip = cluster.gateway_ip,
        port = gateway_port,
    );
    std::fs::write(dir.join("gateway.yaml"), gateway)?;

    let mut backend_yaml = format!(
        r#"# The demo application in cluster {name}: a Service and its endpoints.
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: demo
spec:
  ports:
    - name: http
      port: 8080
"#,
        name = cluster.name
    );
    for (n, backend) in backends.iter().enumerate() {
        backend_yaml.push_str(&format!(
            r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-{n}
  namespace: demo
  labels:
    kubernetes.io/service-name: echo
addressType: IPv4
ports:
  - name: http
    port: {port}
endpoints:
  - addresses: ["{ip}"]
    conditions:
      ready: true
"#,
            n = n + 1,
            ip = backend.ip(),
            port = backend.port(),
        ));
    }
    std::fs::write(dir.join("echo.yaml"), backend_yaml)?;
    Ok(())
}

/// The global route the hub pushes to every cluster: `hostname` → Service `demo/echo:8080`,
/// resolved in each cluster to that cluster's own backends.
pub fn shared_route(hostname: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "app", "namespace": "demo" },
        "spec": {
            "parentRefs": [{ "name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE }],
            "hostnames": [hostname],
            "rules": [{ "backendRefs": [{ "name": "echo", "port": 8080 }] }]
        }
    })
}
