//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` say, for every connection the
//! server makes: the pool, capture's own connections and the replication stream. rustls
//! does the TLS (no OpenSSL); `tokio-postgres-rustls` plugs it into the driver.
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (the default, as in libpq) | when the server offers it | no |
//! | `require` | yes | no |
//! | `verify-ca` | yes | its chain, against `sslrootcert` |
//! | `verify-full` | yes | its chain and its host name |
//!
//! `verify-ca` and `verify-full` need `sslrootcert` (a PEM file of the CAs to trust).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What is wrong with a database URL's TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the database URL does not parse: {0}")]
    Url(String),
    #[error("sslmode {0:?} is none of disable, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslmode={0} needs sslrootcert=<a PEM file of the CAs to trust>")]
    NoRootCert(&'static str),
    #[error("sslrootcert {path}: {problem}")]
    RootCert { path: String, problem: String },
}

/// How connections to one database use TLS.
#[derive(Clone)]
pub struct PgTls {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    connector: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).field("root_cert", &self.root_cert).finish()
    }
}

impl PgTls {
    /// Take `sslmode` and `sslrootcert` out of a `postgres://` URL (the driver knows
    /// neither `verify-*` nor `sslrootcert`): the connection settings without them, and the
    /// TLS to use.
    pub fn from_url(url: &str) -> Result<(postgres::Config, PgTls), TlsError> {
        let mut parsed = url::Url::parse(url).map_err(|e| TlsError::Url(e.to_string()))?;
        let (mut mode, mut root_cert) = (SslMode::Prefer, None);
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| match k.as_ref() {
                "sslmode" => {
                    mode = match v.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        _ => return Some(Err(TlsError::Mode(v.into_owned()))),
                    };
                    None
                }
                "sslrootcert" => {
                    root_cert = Some(PathBuf::from(v.as_ref()));
                    None
                }
                _ => Some(Ok((k.into_owned(), v.into_owned()))),
            })
            .collect::<Result<_, _>>()?;
        parsed.query_pairs_mut().clear().extend_pairs(kept);
        if parsed.query() == Some("") {
            parsed.set_query(None);
        }
        let mut config: postgres::Config =
            parsed.as_str().parse().map_err(|e: postgres::Error| TlsError::Url(e.to_string()))?;
        config.ssl_mode(match mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        });
        let connector = MakeRustlsConnect::new(client_config(mode, root_cert.as_ref())?);
        Ok((config, PgTls { mode, root_cert, connector }))
    }

    /// The connector for the `postgres` driver (pool and capture connections).
    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// The same settings for the replication stream.
    pub fn replication(&self) -> pgwire_replication::TlsConfig {
        use pgwire_replication::TlsConfig;
        match self.mode {
            SslMode::Disable => TlsConfig::disabled(),
            SslMode::Prefer => {
                TlsConfig { mode: pgwire_replication::SslMode::Prefer, ..TlsConfig::disabled() }
            }
            SslMode::Require => TlsConfig::require(),
            SslMode::VerifyCa => TlsConfig::verify_ca(self.root_cert.clone()),
            SslMode::VerifyFull => TlsConfig::verify_full(self.root_cert.clone()),
        }
    }
}

/// rustls's aws-lc-rs provider, named explicitly: the replication client's rustls defaults
/// compile *ring* in as well, so the process has no single default provider to fall back on.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(mode: SslMode, root_cert: Option<&PathBuf>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let name = if mode == SslMode::VerifyCa { "verify-ca" } else { "verify-full" };
            let path = root_cert.ok_or(TlsError::NoRootCert(name))?;
            let bad = |problem: String| TlsError::RootCert { path: path.display().to_string(), problem };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no certificate".into()));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| bad(e.to_string()))?;
            let verifier: Arc<dyn ServerCertVerifier> =
                if mode == SslMode::VerifyCa { Arc::new(ChainOnly(webpki)) } else { webpki };
            builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
        }
    };
    Ok(config)
}

/// `require`: the connection is encrypted; the server's certificate is not checked (as
/// libpq does without a root certificate). Handshake signatures are still verified.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
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
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // The chain was verified before the name was compared.
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url() {
        let (config, tls) =
            PgTls::from_url("postgres://u@db.example:5433/app?sslmode=require&application_name=x").unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        let (config, tls) = PgTls::from_url("postgres://u@h/app").unwrap();
        assert_eq!((tls.mode, config.get_ssl_mode()), (SslMode::Prefer, postgres::config::SslMode::Prefer));
        assert!(matches!(
            PgTls::from_url("postgres://u@h/app?sslmode=verify-full"),
            Err(TlsError::NoRootCert(_))
        ));
        assert!(matches!(PgTls::from_url("postgres://u@h/app?sslmode=bogus"), Err(TlsError::Mode(_))));
        let missing = PgTls::from_url("postgres://u@h/app?sslmode=verify-ca&sslrootcert=/nonexistent.pem");
        assert!(matches!(missing, Err(TlsError::RootCert { .. })), "{missing:?}");
    }
}
