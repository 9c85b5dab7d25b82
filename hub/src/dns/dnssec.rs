//! DNSSEC online signing with a zone's committed key (ECDSA P-256, one combined signing key):
//! DNSKEY, RRSIG over answer sets, compact denial NSEC, DS for the parent.
//!
//! **Denial of existence: compact NSEC ("black lies", RFC 9824).** A name that does not exist
//! gets NOERROR with one NSEC at the query name whose next name is `\000.<qname>` and whose
//! type bitmap holds only RRSIG, NSEC and NXNAME; a name without the queried type gets the same
//! shape with its real types. Why this and not NSEC3 or classic NSEC:
//! - the zone's names change with the hub state, so a pre-sorted NSEC chain would have to be
//!   rebuilt and re-signed on every change, and it lets anyone enumerate the zone;
//! - NSEC3 white lies need three signed NSEC3 records and a hash per negative answer;
//! - compact denial needs one NSEC and one signature per negative answer (the smallest
//!   response, and one signing operation that is cached per name), reveals nothing about other
//!   names, and validates with every DNSSEC resolver (it is an ordinary NODATA proof).
//!
//! **Invariant:** every node signs with the same committed key, so their signatures (which
//! differ byte-wise, ECDSA being randomized) all validate under the same DNSKEY and DS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::DnsError;

/// RFC 9824's NXNAME meta type, set in the bitmap of a compact denial for a name that does
/// not exist.
pub(crate) const NXNAME: RecordType = RecordType::Unknown(128);

/// How long a signature is valid; signatures are renewed once less than
/// [`RENEW_BEFORE`] is left.
pub(crate) const SIGNATURE_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);
/// Renew signatures this long before they expire.
pub(crate) const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Inception is back-dated to tolerate validators with slow clocks.
const INCEPTION_SLACK: Duration = Duration::from_secs(3600);

/// A zone's signer: the key, its DNSKEY record and key tag.
pub(crate) struct ZoneSigner {
    signer: DnssecSigner,
    dnskey: Record,
    key_tag: u16,
    origin: Name,
}

/// A signature validity window, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Validity {
    /// Signature inception.
    pub(crate) inception: u32,
    /// Signature expiration.
    pub(crate) expiration: u32,
}

// === impl Validity ===

impl Validity {
    /// A fresh window starting (back-dated) at `now`, aligned to the hour so that signatures
    /// made within the same hour share it (and can be cached together).
    pub(crate) fn starting(now: SystemTime) -> Self {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let hour = now - now % 3600;
        let inception = hour.saturating_sub(INCEPTION_SLACK.as_secs());
        let expiration = inception + SIGNATURE_VALIDITY.as_secs();
        Self {
            inception: inception as u32,
            expiration: expiration as u32,
        }
    }

    /// Whether signatures with this window are still good to serve at `now`.
    pub(crate) fn fresh_at(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        u64::from(self.expiration) > now + RENEW_BEFORE.as_secs()
    }

    /// When signatures with this window must be renewed.
    pub(crate) fn renew_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::from(self.expiration)) - RENEW_BEFORE
    }
}

// === impl ZoneSigner ===

impl ZoneSigner {
    /// Loads a PKCS#8 ECDSA P-256 key for the zone `origin`; `dnskey_ttl` is the DNSKEY TTL.
    pub(crate) fn new(origin: &Name, pkcs8: &[u8], dnskey_ttl: u32) -> Result<Self, DnsError> {
        let key_error = |why: String| DnsError::Zone {
            zone: origin.to_ascii(),
            why,
        };
        let key = EcdsaSigningKey::from_pkcs8(
            &PrivatePkcs8KeyDer::from(pkcs8),
            Algorithm::ECDSAP256SHA256,
        )
        .map_err(|e| key_error(format!("zone key is not a PKCS#8 ECDSA P-256 key: {e}")))?;
        let public = key
            .to_public_key()
            .map_err(|e| key_error(format!("zone key has no public key: {e}")))?;
        // One combined signing key: zone key + secure entry point (flags 257).
        let dnskey = DNSKEY::from_key(&public);
        let key_tag = dnskey
            .calculate_key_tag()
            .map_err(|e| key_error(format!("cannot compute key tag: {e}")))?;
        let dnskey_record = Record::from_rdata(
            origin.clone(),
            dnskey_ttl,
            RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone())),
        );
        let signer = DnssecSigner::new(dnskey, Box::new(key), origin.clone(), SIGNATURE_VALIDITY);
        Ok(Self {
            signer,
            dnskey: dnskey_record,
            key_tag,
            origin: origin.clone(),
        })
    }

    /// The zone's DNSKEY record.
    pub(crate) fn dnskey(&self) -> &Record {
        &self.dnskey
    }

    /// The key tag.
    pub(crate) fn key_tag(&self) -> u16 {
        self.key_tag
    }

    /// The DS record for the parent zone (SHA-256 digest), in presentation format.
    pub(crate) fn ds(&self) -> Result<String, DnsError> {
        let RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)) = &self.dnskey.data else {
            return Err(DnsError::Zone {
                zone: self.origin.to_ascii(),
                why: "DNSKEY record holds no key".into(),
            });
        };
        let digest = dnskey
            .to_digest(&self.origin, DigestType::SHA256)
            .map_err(|e| DnsError::Zone {
                zone: self.origin.to_ascii(),
                why: format!("cannot digest DNSKEY: {e}"),
            })?;
        let ds = DS::new(
            self.key_tag,
            Algorithm::ECDSAP256SHA256,
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        );
        Ok(format!("{} IN DS {ds}", self.origin))
    }

    /// Signs the RRset `records` (same owner, type and class; non-empty), returning its RRSIG
    /// record with the RRset's TTL.
    pub(crate) fn sign(&self, records: &[Record], validity: Validity) -> Result<Record, DnsError> {
        let sign_error = |why: String| DnsError::Zone {
            zone: self.origin.to_ascii(),
            why,
        };
        let Some(first) = records.first() else {
            return Err(sign_error("cannot sign an empty RRset".into()));
        };
        let input = SigInput {
            type_covered: first.record_type(),
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: first.name.num_labels(),
            original_ttl: first.ttl,
            sig_expiration: SerialNumber::new(validity.expiration),
            sig_inception: SerialNumber::new(validity.inception),
            key_tag: self.key_tag,
            signer_name: self.origin.clone(),
        };
        let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, records.iter())
            .map_err(|e| sign_error(format!("cannot serialize RRset for signing: {e}")))?;
        let signature = self
            .signer
            .sign(&tbs)
            .map_err(|e| sign_error(format!("signing failed: {e}")))?;
        Ok(Record::from_rdata(
            first.name.clone(),
            first.ttl,
            RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, signature))),
        ))
    }
}

/// The compact-denial NSEC for `owner` (RFC 9824): next name `\000.<owner>`, bitmap `types`
/// plus RRSIG and NSEC. `ttl` should be the zone's negative TTL.
pub(crate) fn compact_nsec(
    owner: &Name,
    types: impl IntoIterator<Item = RecordType>,
    ttl: u32,
) -> Option<Record> {
    // `\000.<owner>` is the immediate successor of `owner` in canonical order; it can only fail
    // when `owner` is already 254 bytes long, in which case no proof can be built.
    let next = owner.prepend_label(&[0u8][..]).ok()?;
    Some(Record::from_rdata(
        owner.clone(),
        ttl,
        RData::DNSSEC(DNSSECRData::NSEC(NSEC::new_cover_self(next, types))),
    ))
}

/// Generates a new zone key: PKCS#8 DER of an ECDSA P-256 key, for the hub leader to commit.
pub fn generate_zone_key() -> Result<Vec<u8>, DnsError> {
    EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256)
        .map(|key| key.secret_pkcs8_der().to_vec())
        .map_err(|e| DnsError::Zone {
            zone: String::new(),
            why: format!("cannot generate an ECDSA P-256 key: {e}"),
        })
}
