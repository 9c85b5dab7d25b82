//! HTTP helpers for end-to-end tests.

use std::net::SocketAddr;
use std::time::Duration;

/// A client with short timeouts and no connection reuse surprises across restarts.
pub fn client() -> reqwest::Client {
    crate::init_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .expect("http client")
}

/// GETs `path` from `addr` with the given `Host` and returns status and parsed JSON body
/// (`Null` when the body is not JSON).
pub async fn get_host(
    client: &reqwest::Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, serde_json::Value), String> {
    let response = client
        .get(format!("http://{addr}{path}"))
        .header("host", host)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

/// Sends `method` with a JSON body to an admin URL; returns status and JSON body.
pub async fn send_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    ))
}

/// GETs `url`; returns status and body text (for `/metrics`).
pub async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, text))
}
