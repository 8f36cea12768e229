//! X.509 for the in-cell services (rcgen to issue, x509-parser to inspect): a CA per cell, a
//! server certificate per tenant endpoint signed by it, a client CA and client certificate for
//! a tenant that asks the operator to issue one, and validation of a client CA a tenant
//! supplies. Keys are ECDSA P-256.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::pem::Pem;

/// How long certificates live and when they are renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// A cell CA.
    pub ca: Duration,
    /// A tenant endpoint's server certificate.
    pub server: Duration,
    /// A tenant's issued client certificate (and the client CA issued with it).
    pub client: Duration,
    /// Renewal happens once this share of a certificate's lifetime has passed (in percent).
    pub renew_at_percent: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Lifetimes {
            ca: Duration::from_secs(5 * 365 * DAY),
            server: Duration::from_secs(90 * DAY),
            client: Duration::from_secs(365 * DAY),
            renew_at_percent: 66,
        }
    }
}

impl Lifetimes {
    /// When a certificate valid from `not_before` to `not_after` (ms) should be renewed: a
    /// share of the time from its issue (notBefore is backdated) to its expiry.
    pub fn renew_at(&self, not_before_ms: i64, not_after_ms: i64) -> i64 {
        let issued = not_before_ms + BACKDATE.as_millis() as i64;
        let span = (not_after_ms - issued).max(0);
        issued + span / 100 * i64::from(self.renew_at_percent.min(100))
    }
}

/// notBefore is set this far in the past, for peers whose clocks run a little behind ours.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("could not issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn params(
    common_name: &str,
    sans: Vec<String>,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "cellplane");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // A minute of slack for clocks that run a little behind ours (see Lifetimes::backdate).
    params.not_before = offset(now - BACKDATE.min(now.duration_since(UNIX_EPOCH).unwrap_or_default()));
    params.not_after = offset(now + lifetime);
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>().map(|b| b & 0x7f)));
    Ok(params)
}

fn finish(cert: rcgen::Certificate, key: &KeyPair, params: &CertificateParams) -> Issued {
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before_ms: ms(params.not_before.into()),
        not_after_ms: ms(params.not_after.into()),
    }
}

/// A self-signed CA that signs end-entity certificates only (path length 0).
pub fn new_ca(common_name: &str, now: SystemTime, lifetime: Duration) -> Result<Issued, PkiError> {
    let mut params = params(common_name, Vec::new(), now, lifetime)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(finish(cert, &key, &params))
}

fn leaf(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Issued, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(finish(cert, &key, &params))
}

/// A server certificate for `host`, signed by the CA.
pub fn issue_server(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    host: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Issued, PkiError> {
    let params = params(host, vec![host.to_string()], now, lifetime)?;
    leaf(ca_cert_pem, ca_key_pem, params, ExtendedKeyUsagePurpose::ServerAuth)
}

/// A client certificate naming `common_name`, signed by the CA.
pub fn issue_client(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    common_name: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Issued, PkiError> {
    let params = params(common_name, Vec::new(), now, lifetime)?;
    leaf(ca_cert_pem, ca_key_pem, params, ExtendedKeyUsagePurpose::ClientAuth)
}

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub is_ca: bool,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub dns_names: Vec<String>,
}

/// Every certificate in a PEM bundle (other PEM blocks are refused).
pub fn inspect(pem: &str) -> Result<Vec<CertInfo>, PkiError> {
    let mut infos = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block = block.map_err(|e| PkiError::Invalid(format!("PEM block {} is not readable: {e}", i + 1)))?;
        if block.label != "CERTIFICATE" {
            return Err(PkiError::Invalid(format!("PEM block {} is a {}, not a CERTIFICATE", i + 1, block.label)));
        }
        let cert = block
            .parse_x509()
            .map_err(|e| PkiError::Invalid(format!("certificate {} is not valid X.509: {e}", i + 1)))?;
        let dns_names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        infos.push(CertInfo {
            subject: cert.subject().to_string(),
            is_ca: cert.is_ca(),
            not_before_ms: cert.validity().not_before.timestamp() * 1000,
            not_after_ms: cert.validity().not_after.timestamp() * 1000,
            dns_names,
        });
    }
    if infos.is_empty() {
        return Err(PkiError::Invalid("no PEM certificate found".into()));
    }
    Ok(infos)
}

/// Checks a client CA bundle a tenant supplies: every certificate parses, is a CA
/// (basicConstraints CA:true) and is valid now. The message says which one fails and why.
pub fn validate_client_ca(pem: &str, now: SystemTime) -> Result<Vec<CertInfo>, String> {
    let infos = inspect(pem).map_err(|e| e.to_string())?;
    let now_ms = ms(now);
    for (i, info) in infos.iter().enumerate() {
        let which = format!("certificate {} ({})", i + 1, info.subject);
        if !info.is_ca {
            return Err(format!("{which} is not a CA (basicConstraints CA:true is missing)"));
        }
        if info.not_after_ms <= now_ms {
            return Err(format!("{which} expired at {}", rfc3339(info.not_after_ms)));
        }
        if info.not_before_ms > now_ms {
            return Err(format!("{which} is not valid before {}", rfc3339(info.not_before_ms)));
        }
    }
    Ok(infos)
}

/// A time in milliseconds as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_server_certificate_names_its_host_and_chains_to_the_ca() {
        let now = SystemTime::now();
        let ca = new_ca("cell-1 CA", now, 10 * HOUR).unwrap();
        let server = issue_server(&ca.cert_pem, &ca.key_pem, "acme.cell-1.example.com", now, HOUR).unwrap();
        let info = &inspect(&server.cert_pem).unwrap()[0];
        assert_eq!(info.dns_names, ["acme.cell-1.example.com"]);
        assert!(!info.is_ca);
        assert!(inspect(&ca.cert_pem).unwrap()[0].is_ca);

        // webpki: the chain verifies for the host, and not for another one.
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let root = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        let leaf = CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap();
        let at = UnixTime::now();
        let host = ServerName::try_from("acme.cell-1.example.com").unwrap();
        verifier.verify_server_cert(&leaf, &[], &host, &[], at).unwrap();
        let other = ServerName::try_from("evil.cell-1.example.com").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &[], &other, &[], at).is_err());
    }

    #[test]
    fn client_cas_must_parse_be_cas_and_be_current() {
        let now = SystemTime::now();
        let ca = new_ca("tenant CA", now, HOUR).unwrap();
        assert!(validate_client_ca(&ca.cert_pem, now).is_ok());
        let leaf = issue_client(&ca.cert_pem, &ca.key_pem, "alice", now, HOUR).unwrap();
        assert!(validate_client_ca(&leaf.cert_pem, now).unwrap_err().contains("is not a CA"));
        let later = now + 2 * HOUR;
        assert!(validate_client_ca(&ca.cert_pem, later).unwrap_err().contains("expired at"));
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        assert!(validate_client_ca(garbage, now).unwrap_err().contains("not valid X.509"));
        assert!(validate_client_ca("hello", now).unwrap_err().contains("no PEM certificate"));
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_lifetime() {
        let l = Lifetimes::default();
        assert_eq!(l.renew_at(0, 360_000), 60_000 + 198_000);
    }
}
