//! RequestMirror: sends a copy of the (buffered) request to another backend and ignores the
//! answer. Copies go to one endpoint of the mirror backend, in their own task, so a slow or
//! dead mirror never delays the real response.

use std::sync::Arc;

use http::Request;
use tracing::debug;

use crate::backend::BackendTarget;
use crate::backend::pool::EndpointPool;
use crate::proxy::body::ReqBody;

/// A compiled RequestMirror filter.
#[derive(Debug)]
pub(crate) struct Mirror {
    /// Where copies go (an invalid target mirrors nothing).
    pub(crate) target: BackendTarget,
    /// numerator / denominator of requests mirrored; `None` = all.
    pub(crate) fraction: Option<(u32, u32)>,
}

impl Mirror {
    /// Whether this request should be mirrored, drawing from `random`.
    pub(crate) fn sample(&self, random: u64) -> bool {
        match self.fraction {
            None => true,
            Some((_, 0)) => false,
            Some((numerator, denominator)) => {
                random % u64::from(denominator) < u64::from(numerator)
            }
        }
    }

    /// Sends `request` (a copy of the real one) to `endpoint` in the background.
    pub(crate) fn send_copy(
        &self,
        endpoint: Arc<EndpointPool>,
        request: Request<ReqBody>,
        backend: Arc<str>,
    ) {
        tokio::spawn(async move {
            match endpoint.send(request).await {
                Ok(response) => {
                    // Drain so the connection goes back to the pool.
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
                Err(failure) => debug!(%backend, error = %failure.error, "mirror request failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_sampling_is_proportional() {
        let mirror = Mirror {
            target: BackendTarget::Invalid {
                name: Arc::from("x"),
                reason: Arc::from("BackendNotFound"),
            },
            fraction: Some((25, 50)),
        };
        let hits = (0..10_000u64).filter(|&r| mirror.sample(r)).count();
        assert_eq!(hits, 5_000);
        let none = Mirror {
            fraction: Some((0, 100)),
            ..mirror
        };
        assert!(!(0..1000u64).any(|r| none.sample(r)));
    }
}
