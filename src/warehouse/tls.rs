//! TLS to PostgreSQL as libpq's `sslmode` has it, through rustls: `disable` never,
//! `prefer` when the server offers it, `require` always; `verify-ca` also checks the
//! server's certificate chain and `verify-full` its host name too. The roots are
//! `sslrootcert` when given (a PEM file), else the system's. As in libpq, `require`
//! with an `sslrootcert` verifies the chain, and `prefer` and `require` without one
//! encrypt without verifying.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;

/// `sslmode`, as libpq names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A connection string's TLS settings, and the string without them for tokio-postgres
/// (which knows only `disable`, `prefer` and `require`, and not `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) root_cert: Option<String>,
    pub(crate) rest: String,
}

/// Reads `sslmode` (default `prefer`, as libpq) and `sslrootcert` out of a URL's query
/// or a key=value string.
pub(crate) fn settings(url: &str) -> Result<Settings, String> {
    let (mut mode, mut root_cert) = (None, None);
    let mut take = |kv: &str| -> Result<bool, String> {
        let Some((k, v)) = kv.split_once('=') else {
            return Ok(false);
        };
        match k {
            "sslmode" => {
                mode = Some(match v {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode `{other}` is not disable, prefer, require, verify-ca or verify-full"
                        ))
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(v.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = match url.split_once("://") {
        Some((scheme, tail)) => match tail.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for kv in query.split('&') {
                    if !take(kv)? {
                        kept.push(kv);
                    }
                }
                if kept.is_empty() {
                    format!("{scheme}://{base}")
                } else {
                    format!("{scheme}://{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        },
        None => {
            let mut kept = Vec::new();
            for kv in url.split_whitespace() {
                if !take(kv)? {
                    kept.push(kv);
                }
            }
            kept.join(" ")
        }
    };
    Ok(Settings {
        mode: mode.unwrap_or(Mode::Prefer),
        root_cert,
        rest,
    })
}

impl Settings {
    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The rustls client configuration for these settings.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verify = match self.mode {
            Mode::VerifyCa | Mode::VerifyFull => true,
            Mode::Require => self.root_cert.is_some(),
            Mode::Disable | Mode::Prefer => false,
        };
        let config = if verify {
            let roots = Arc::new(self.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| e.to_string())?;
            let verifier: Arc<dyn ServerCertVerifier> = if self.mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        };
        Ok(config)
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("sslrootcert {path}: no certificate in it"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err("no system root certificates found: set sslrootcert".to_owned());
                }
            }
        }
        Ok(roots)
    }
}

/// `verify-ca`: the chain must lead to a root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encrypted, the certificate not
/// checked (libpq's behaviour); the handshake signatures still are.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_and_removed() {
        let s =
            settings("postgresql://u@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem")
                .unwrap();
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(s.rest, "postgresql://u@h:5432/db?application_name=x");
        let s = settings("host=h user=u sslmode=require dbname=d").unwrap();
        assert_eq!(
            (s.mode, s.rest.as_str()),
            (Mode::Require, "host=h user=u dbname=d")
        );
        let s = settings("postgresql://u@h/db").unwrap();
        assert_eq!((s.mode, s.rest.as_str()), (Mode::Prefer, "postgresql://u@h/db"));
        let s = settings("postgresql://u@h/db?sslmode=disable").unwrap();
        assert_eq!((s.mode, s.rest.as_str()), (Mode::Disable, "postgresql://u@h/db"));
        assert!(settings("postgresql://h/db?sslmode=sometimes").is_err());
    }
}
