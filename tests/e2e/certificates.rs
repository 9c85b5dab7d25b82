//! Certificates distributed by the hub, through `meridian dev`: both clusters' gateways serve
//! HTTPS with the certificate dev PUT on the hub (`meridian-system/demo-tls`), and a
//! certificate replaced on the hub is served by both gateways within seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_tests::dev::DevEnv;
use meridian_tests::gateway::self_signed;
use meridian_tests::http::send_json;
use meridian_tests::tls::https_get;
use meridian_tests::wait::eventually;
use reqwest::Method;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::meridian_bin;

/// The name clients ask the gateways for (SNI and Host).
const SNI: &str = "app.demo.meridian.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_gateways_serve_the_hub_certificate_and_follow_its_rotation() {
    let env = DevEnv::start(meridian_bin(), &[]);
    let admin = env.admin();
    let client = meridian_tests::http::client();
    let pem = std::fs::read(
        env.json["tls"]["certificate"]
            .as_str()
            .expect("tls.certificate"),
    )
    .expect("read the demo certificate");
    let demo = CertificateDer::from_pem_slice(&pem).expect("PEM certificate");
    let clusters: Vec<(String, SocketAddr)> = env.json["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["gateway_https"]
                    .as_str()
                    .expect("gateway_https")
                    .parse()
                    .expect("addr"),
            )
        })
        .collect();
    assert_eq!(clusters.len(), 2);

    // Both gateways present the hub's certificate for the SNI name and serve the app from
    // their own cluster's backends.
    for (name, addr) in &clusters {
        let served = eventually("HTTPS served", Duration::from_secs(20), || async {
            let served = https_get(*addr, SNI, &demo).await?;
            if served.status == 200 {
                Ok(served)
            } else {
                Err(format!("status {}", served.status))
            }
        })
        .await;
        assert_eq!(served.leaf, demo, "{name} serves the hub's certificate");
        let backend = served.body["backend"].as_str().unwrap_or_default();
        assert!(
            backend.starts_with(&format!("{name}-echo-")),
            "{}",
            served.body
        );
        assert_eq!(served.body["headers"]["X-Forwarded-Proto"][0], "https");
    }

    // The hub shows the certificate without its key.
    let (status, listed) = send_json(
        &client,
        Method::GET,
        &format!("{admin}/v1/certificates"),
        None,
    )
    .await
    .expect("GET certificates");
    assert_eq!(status, 200);
    assert_eq!(listed["items"][0]["name"], "demo-tls");
    assert!(!listed.to_string().contains("PRIVATE KEY"), "{listed}");

    // Rotate: a new certificate PUT on the hub reaches both gateways.
    let next = self_signed(&["*.demo.meridian.test"]);
    let put_at = Instant::now();
    let (status, body) = send_json(
        &client,
        Method::PUT,
        &format!("{admin}/v1/certificates/meridian-system/demo-tls"),
        Some(&serde_json::json!({
            "cert_chain_pem": next.cert_pem,
            "private_key_pem": next.key_pem,
        })),
    )
    .await
    .expect("PUT certificate");
    assert_eq!(status, 200, "{body}");
    let mut slowest = Duration::ZERO;
    for (name, addr) in &clusters {
        eventually(
            "the new certificate served",
            Duration::from_secs(15),
            || async {
                let served = https_get(*addr, SNI, &next.der).await?;
                if served.leaf == next.der && served.status == 200 {
                    Ok(())
                } else {
                    Err(format!("{name}: status {}", served.status))
                }
            },
        )
        .await;
        slowest = slowest.max(put_at.elapsed());
    }
    eprintln!("measured: certificate PUT on the hub -> served by both gateways in {slowest:?}");
    // The old certificate is no longer trusted by a client that trusts only it.
    for (_, addr) in &clusters {
        assert!(https_get(*addr, SNI, &demo).await.is_err());
    }
}
