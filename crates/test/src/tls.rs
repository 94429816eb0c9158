//! Throwaway certificates for TLS tests, made with rcgen.

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority that signs leaf certificates for tests.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key.
#[derive(Debug)]
pub struct TestCert {
    /// Certificate chain, PEM (leaf only).
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// Key, DER.
    pub key_der: Vec<u8>,
}

impl TestCa {
    /// A new self-signed CA.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "towergate test CA");
        let cert = params.self_signed(&key).expect("ca cert");
        let issuer = rcgen::Issuer::new(params, key);
        Self {
            cert_pem: cert.pem(),
            cert,
            issuer,
        }
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), signed by
    /// this CA, usable for servers and clients.
    pub fn leaf(&self, names: &[&str]) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCert {
    /// The key as rustls wants it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}
