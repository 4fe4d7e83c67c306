//! Opportunistic TLS for outbound SMTP.
//!
//! Like Postfix's `smtp_tls_security_level = may`, we encrypt whenever the server offers STARTTLS but
//! do not verify its certificate: most MX hosts present self-signed or mismatched certificates, and
//! refusing them would only push the mail back to plaintext. This protects against passive
//! eavesdropping, not against an active attacker; authenticated modes (DANE, `verify`) are a later,
//! separate `TlsMode` that will use a real verifier. The handshake signature is still checked, so the
//! server must hold the key of the certificate it sends.

use std::sync::{Arc, OnceLock};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts any certificate chain; checks only the handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The shared client configuration for opportunistic STARTTLS, built once per process.
pub(crate) fn opportunistic_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            };
            let config = rustls::ClientConfig::builder_with_provider(
                Arc::clone(&provider) as Arc<CryptoProvider>
            )
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// The name to send in SNI: the host name when it is a valid DNS name, else the IP address.
pub(crate) fn server_name(host: &str, ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::IpAddress(ip.into()))
}

/// `"TLSv1.3 TLS13_AES_256_GCM_SHA384"`, the same form the inbound side records.
pub(crate) fn describe(conn: &rustls::ClientConnection) -> String {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_string(),
    };
    match conn.negotiated_cipher_suite() {
        Some(suite) => {
            let cipher = suite.suite();
            let name = cipher
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{cipher:?}"));
            format!("{protocol} {name}")
        }
        None => protocol,
    }
}
