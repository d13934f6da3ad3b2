//! TLS for a listener: a certificate chain and its key from PEM files,
//! read at start and again on request (SIGHUP), so a renewed certificate
//! needs no restart. A reload that fails keeps the certificate in use.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {detail}")]
    Certificate { path: String, detail: String },
    #[error("cannot read the TLS key {path}: {detail}")]
    Key { path: String, detail: String },
    #[error("the TLS certificate {cert} and key {key} do not make a server configuration: {detail}")]
    Config { cert: String, key: String, detail: String },
}

/// The certificate and key files, and the configuration made of them.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsFiles {
    /// Reads both files; fails (at start) when they cannot be used.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, TlsError> {
        let config = server_config(cert, key)?;
        Ok(TlsFiles { cert: cert.to_owned(), key: key.to_owned(), current: RwLock::new(Arc::new(config)) })
    }

    /// Reads both files again; on failure the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The configuration new connections get.
    pub(super) fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate { path: shown(cert), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate { path: shown(cert), detail: "no CERTIFICATE block".into() });
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: shown(key), detail: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| TlsError::Config { cert: shown(cert), key: shown(key), detail: e.to_string() })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
