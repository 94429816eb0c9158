//! Throwaway certificates for TLS tests, made with rcgen.

use std::sync::Arc;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::Upstream;

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

/// Serves `app` over TLS with `cert` (ALPN h2 and http/1.1) on
/// `127.0.0.1:0`. With `client_ca`, a client certificate signed by it is
/// required (mTLS); a failed handshake just drops the connection.
pub async fn spawn_tls_upstream(
    app: Router,
    cert: &TestCert,
    client_ca: Option<&TestCa>,
) -> Upstream {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert_der()).expect("client CA");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(vec![cert.cert_der.clone()], cert.private_key())
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_io(TokioIo::new(tls), app).await;
                }
            });
        }
    });
    Upstream { addr, task }
}

/// Serves one connection with `app`, HTTP/1.1 or HTTP/2, upgrades allowed.
pub async fn serve_io<I>(io: TokioIo<I>, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        hyper::service::service_fn(move |req: http::Request<Incoming>| app.clone().oneshot(req));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}
