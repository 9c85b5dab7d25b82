//! Certificate choice by SNI: the most specific terminating listener for the name (exact,
//! then longer wildcards, then the hostname-less listener), then the first of that listener's
//! certificates whose SANs cover the name (several certificates per listener), else its first.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::{ServingCert, covers};
use crate::route::host::HostIndex;

/// A rustls resolver over one port's terminating listeners.
#[derive(Debug)]
pub(crate) struct SniResolver {
    listeners: HostIndex<Vec<ServingCert>>,
    /// Served when the client sends no SNI or no listener matches it.
    fallback: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Builds the resolver from (listener hostname, certificates) pairs.
    pub(crate) fn new(listeners: Vec<(Option<String>, Vec<ServingCert>)>) -> Self {
        let mut index: HostIndex<Vec<ServingCert>> = HostIndex::default();
        let mut catch_all = None;
        let mut first = None;
        for (hostname, certs) in listeners {
            if let Some(cert) = certs.first() {
                if hostname.is_none() && catch_all.is_none() {
                    catch_all = Some(Arc::clone(&cert.key));
                }
                if first.is_none() {
                    first = Some(Arc::clone(&cert.key));
                }
            }
            index
                .entry_or_insert_with(hostname.as_deref(), Vec::new)
                .extend(certs);
        }
        let fallback = catch_all.or(first);
        Self {
            listeners: index,
            fallback,
        }
    }

    /// The certificate for an SNI name.
    pub(crate) fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = sni else {
            return self.fallback.clone();
        };
        let sni = sni.to_ascii_lowercase();
        match self
            .listeners
            .candidates(&sni)
            .find(|certs| !certs.is_empty())
        {
            Some(certs) => {
                let chosen = certs
                    .iter()
                    .find(|c| covers(c, &sni))
                    .or_else(|| certs.first());
                chosen.map(|c| Arc::clone(&c.key))
            }
            None => self.fallback.clone(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name())
    }
}
