//! TLS for the REST API: the configured certificate, or a self-signed one generated at first
//! start and kept in `https.auto_cert_dir` (default `<data_dir>/tls`) so clients can pin it across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::HttpsConfig;

/// Returns the server config and the certificate file in use; without configured files the
/// certificate is generated into (or reused from) `auto_cert_dir`.
pub fn server_config(
    cfg: &HttpsConfig,
    auto_cert_dir: &Path,
) -> Result<(Arc<rustls::ServerConfig>, PathBuf), String> {
    let (cert_path, key_path) = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => ensure_self_signed(auto_cert_dir)?,
        _ => return Err("config: https.cert and https.key must be given together".into()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect())
        .map_err(|e| format!("https cert {}: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("https key {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("https: {e}"))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(sc), cert_path))
}

fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| format!("self-signed cert: {e}"))?;
    std::fs::write(&cert, ck.cert.pem()).map_err(|e| format!("write {}: {e}", cert.display()))?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
    tracing::warn!(
        cert = %cert.display(),
        "no https.cert configured: generated a self-signed certificate for localhost (clients must trust it explicitly)"
    );
    Ok((cert, key))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("write {}: {e}", path.display()))
}
