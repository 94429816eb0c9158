//! TLS termination: certificates from PEM files, chosen by SNI.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;
use crate::config::schema::ListenerTls;
use crate::stack::resolve_path;

/// Builds the rustls server configuration of a listener.
pub(crate) fn server_config(
    t: &ListenerTls,
    base: Option<&Path>,
    http2: bool,
    path: &str,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut resolver = SniResolver::default();
    for (i, c) in t.certificates.iter().enumerate() {
        let p = format!("{path}.certificates[{i}]");
        let cert_path = resolve_path(base, &c.cert);
        let key_path = resolve_path(base, &c.key);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                ConfigError::new(
                    format!("{p}.cert"),
                    format!(
                        "cannot read certificates from `{}`: {e}",
                        cert_path.display()
                    ),
                )
            })?;
        if certs.is_empty() {
            return Err(ConfigError::new(
                format!("{p}.cert"),
                format!("no certificate in `{}`", cert_path.display()),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
            ConfigError::new(
                format!("{p}.key"),
                format!(
                    "cannot read a private key from `{}`: {e}",
                    key_path.display()
                ),
            )
        })?;
        let ck = certified_key(certs, key, &provider).map_err(|e| {
            ConfigError::new(
                format!("{p}.key"),
                format!("key does not fit the certificate: {e}"),
            )
        })?;
        let ck = Arc::new(ck);
        if c.server_names.is_empty() {
            resolver.default = Some(ck);
        } else {
            for n in &c.server_names {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                match n.strip_prefix("*.") {
                    Some(suffix) => resolver.wildcard.push((format!(".{suffix}"), ck.clone())),
                    None => {
                        resolver.exact.insert(n, ck.clone());
                    }
                }
            }
        }
    }
    // Longest suffix first, so `*.a.example.com` wins over `*.example.com`.
    resolver
        .wildcard
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(path, e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}

fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(certs, key, provider)
}

/// Chooses a certificate by SNI: exact name, then the longest wildcard
/// suffix, then the default.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(ck) = self.exact.get(&name) {
                return Some(ck.clone());
            }
            for (suffix, ck) in &self.wildcard {
                // A wildcard covers one label: `a.example.com`, not `a.b.example.com`.
                if let Some(label) = name.strip_suffix(suffix.as_str())
                    && !label.is_empty()
                    && !label.contains('.')
                {
                    return Some(ck.clone());
                }
            }
        }
        self.default.clone()
    }
}
