//! TLS material for STARTTLS: the admin's certificate, or a self-signed one made on first start.
//!
//! A self-signed certificate is enough for opportunistic TLS between MTAs (senders rarely verify),
//! and it means a fresh box encrypts from its first message on.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM has no usable certificate or key.
    #[error("{path}: {problem}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        problem: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// Loads `cert_file`/`key_file`, or (both empty) the self-signed pair under `<data_dir>/tls/`,
/// generating it for `hostname` the first time.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    data_dir: &Path,
    hostname: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_path, key_path) = if cert_file.as_os_str().is_empty() {
        ensure_self_signed(data_dir, hostname)?
    } else {
        (cert_file.to_path_buf(), key_file.to_path_buf())
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn ensure_self_signed(data_dir: &Path, hostname: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("self-signed-cert.pem");
    let key = dir.join("self-signed-key.pem");
    if cert.exists() && key.exists() {
        // Ours to replace if unusable: an older version wrote them without syncing, and a power
        // cut right after the first start could leave them empty (found by the HIL power cut).
        match (read_certs(&cert), read_key(&key)) {
            (Ok(_), Ok(_)) => return Ok((cert, key)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "the self-signed STARTTLS certificate is unreadable; making a new one")
            }
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let generated = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    // Each file is written in full and synced under a temporary name, then renamed, so a crash
    // leaves the old pair, a new pair, or a new key with no certificate (made again at start).
    let key_tmp = dir.join("self-signed-key.pem.tmp");
    let cert_tmp = dir.join("self-signed-cert.pem.tmp");
    write_private(&key_tmp, generated.key_pair.serialize_pem().as_bytes()).map_err(io(&key_tmp))?;
    write_private(&cert_tmp, generated.cert.pem().as_bytes()).map_err(io(&cert_tmp))?;
    let _ = std::fs::remove_file(&cert);
    std::fs::rename(&key_tmp, &key).map_err(io(&key))?;
    std::fs::rename(&cert_tmp, &cert).map_err(io(&cert))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    tracing::info!(cert = %cert.display(), hostname, "generated a self-signed TLS certificate for STARTTLS");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let f = std::fs::File::open(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            problem: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let f = std::fs::File::open(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            problem: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.into(),
            problem: "no PRIVATE KEY block found".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        server_config(Path::new(""), Path::new(""), dir.path(), "mx.test").unwrap();
        let cert = dir.path().join("tls/self-signed-cert.pem");
        let first = std::fs::read(&cert).unwrap();
        server_config(Path::new(""), Path::new(""), dir.path(), "mx.test").unwrap();
        assert_eq!(first, std::fs::read(&cert).unwrap());
    }

    #[test]
    fn an_empty_self_signed_certificate_left_by_a_power_cut_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), "gw.test").unwrap();
        std::fs::write(&cert, b"").unwrap();
        let (cert2, key2) = ensure_self_signed(dir.path(), "gw.test").unwrap();
        assert_eq!((&cert2, &key2), (&cert, &key));
        assert!(read_certs(&cert).is_ok() && read_key(&key).is_ok());
    }

    #[test]
    fn missing_certificate_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = server_config(
            &dir.path().join("nope.pem"),
            &dir.path().join("nope.key"),
            dir.path(),
            "mx.test",
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }
}
