//! Helpers shared by the gateway's integration tests.

use std::time::Duration;

use meridian_gateway::{GatewayHandle, GatewayOptions};
use meridian_proto::model::route::ServiceKey;

/// An in-process gateway with an ephemeral admin port and a short drain.
pub async fn gateway() -> GatewayHandle {
    gateway_with(|_| {}).await
}

/// [`gateway`], with `adjust` applied to its options.
pub async fn gateway_with(adjust: impl FnOnce(&mut GatewayOptions)) -> GatewayHandle {
    let mut options = GatewayOptions::new("127.0.0.1:0".parse().unwrap(), "test");
    options.drain_timeout = Duration::from_secs(5);
    adjust(&mut options);
    meridian_gateway::spawn(options, meridian_gateway::Registry::default())
        .await
        .unwrap()
}

/// A loopback port outside the ephemeral range, so no bind to port 0 can take it first.
pub fn free_port() -> u16 {
    meridian_tests::net::free_port(std::net::Ipv4Addr::LOCALHOST.into())
}

/// `default/<name>:8080`.
pub fn service(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        name: name.into(),
        port: 8080,
    }
}
