//! TLS for the connection, as libpq's `sslmode` and `sslrootcert` say, through rustls
//! (ring): no OpenSSL, so the statically linked `statesafe` binary stays static.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | if the server offers it | not verified |
//! | `require` | always | not verified; verified like `verify-ca` when `sslrootcert` is given (as libpq) |
//! | `verify-ca` | always | signed by a root in `sslrootcert` |
//! | `verify-full` | always | signed by a root in `sslrootcert`, and issued for the URL's host |
//!
//! Over TCP the TLS request is made by `startup.rs`'s connector, which also refuses a
//! request for the password in clear text or as MD5 unless the certificate was
//! verified (the last two rows, or `require` with `sslrootcert`).
//!
//! `sslrootcert` is a PEM file, or `system` for the system's roots
//! (`/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`); default
//! `~/.postgresql/root.crt`, as libpq.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How to connect.
#[derive(Clone)]
pub(crate) enum Tls {
    /// `sslmode=disable`.
    Off,
    /// Everything else: the connector (tokio-postgres decides from its own
    /// `sslmode`, `prefer` or `require`, whether TLS is optional).
    On(MakeRustlsConnect),
    /// Every host of the URL a TCP one: the TLS request made by statesafe's connector,
    /// which answers no request for the password in clear text or MD5 unless the
    /// server's certificate was verified (`postgres/startup.rs`).
    Guarded(super::startup::Guarded),
}

impl Tls {
    /// The same, with the start-up's requests for a password watched: `mode` and
    /// `rootcert` as given to [`for_mode`], and `direct` for `sslnegotiation=direct`.
    pub(crate) fn guarded(self, mode: &str, rootcert: Option<&str>, direct: bool) -> Tls {
        use super::startup::{Certificate, Guarded, Negotiate};
        let negotiate = match mode {
            "disable" => Negotiate::Never,
            _ if direct => Negotiate::Direct,
            "allow" | "prefer" => Negotiate::IfOffered,
            _ => Negotiate::Always,
        };
        let certificate = match (mode, rootcert) {
            ("verify-ca" | "verify-full", _) | ("require", Some(_)) => Certificate::Verified,
            _ => Certificate::Unverified,
        };
        let tls = match self {
            Tls::On(make) => Some(make),
            Tls::Off => None,
            guarded @ Tls::Guarded(_) => return guarded,
        };
        Tls::Guarded(Guarded::new(negotiate, tls, certificate))
    }
}

/// How the server's certificate is checked.
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The connector for `mode` (libpq's names) and `rootcert`; the error says why not.
pub(crate) fn for_mode(mode: &str, rootcert: Option<&str>) -> Result<Tls, String> {
    let check = match mode {
        "disable" => return Ok(Tls::Off),
        "allow" | "prefer" => Check::Nothing,
        "require" if rootcert.is_some() => Check::Chain,
        "require" => Check::Nothing,
        "verify-ca" => Check::Chain,
        "verify-full" => Check::ChainAndName,
        other => {
            return Err(format!(
                "`sslmode={other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("set up TLS: {e}"))?;
    let config = match check {
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        Check::Chain | Check::ChainAndName => {
            let roots = roots(rootcert)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("set up certificate verification: {e}"))?;
            let verifier: Arc<dyn ServerCertVerifier> = match check {
                Check::ChainAndName => webpki,
                _ => Arc::new(AnyName(webpki)),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(Tls::On(MakeRustlsConnect::new(config)))
}

/// The trusted roots: `sslrootcert`, or libpq's default file.
fn roots(rootcert: Option<&str>) -> Result<RootCertStore, String> {
    let file: PathBuf = match rootcert {
        Some("system") => std::env::var_os("SSL_CERT_FILE")
            .map_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"), PathBuf::from),
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".postgresql/root.crt"))
            .filter(|p| p.exists())
            .ok_or("certificate verification needs the roots to trust: give `sslrootcert=PATH` (a PEM file) or `sslrootcert=system`, or put them in ~/.postgresql/root.crt")?,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&file)
        .map_err(|e| format!("read the root certificates `{}`: {e}", file.display()))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| format!("read the root certificates `{}`: {e}", file.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "a root certificate in `{}` is not usable: {e}",
                file.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!("`{}` holds no certificate", file.display()));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must verify; the name need not match.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

/// `prefer` and `require` without roots: encrypted, the certificate not checked (the
/// handshake's signatures still are), as libpq does.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
