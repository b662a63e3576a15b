//! [`PinnedKey`]: the client's certificate check. The server's certificate is parsed as
//! webpki parses it for the handshake signature, its public key must be ed25519 and
//! (unless enrolling) the pinned one; nothing else in the certificate counts.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

use crate::{KeyBytes, SeenKey};

/// The DER of an ed25519 SubjectPublicKeyInfo (RFC 8410) before its 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Which server keys are accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Exactly this key; `None`: none (nothing pinned yet), the key is only recorded.
    Pinned(Option<KeyBytes>),
    /// Any ed25519 key: enrollment, which sends no request.
    Any,
}

#[derive(Debug)]
pub(crate) struct PinnedKey {
    expect: Expect,
    seen: SeenKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedKey {
    pub(crate) fn new(expect: Expect, seen: SeenKey, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { expect, seen, algorithms }
    }
}

/// The ed25519 public key of a certificate, read from its parsed SubjectPublicKeyInfo.
pub(crate) fn ed25519_key(cert: &CertificateDer<'_>) -> Result<KeyBytes, Error> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(ED25519_SPKI_PREFIX.as_slice())
        .and_then(|rest| KeyBytes::try_from(rest).ok())
        .ok_or_else(|| Error::General("the agent's certificate key is not ed25519".into()))?;
    Ok(key)
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let key = ed25519_key(end_entity)?;
        self.seen.set(key);
        match self.expect {
            Expect::Any => Ok(ServerCertVerified::assertion()),
            Expect::Pinned(Some(pinned)) if pinned == key => Ok(ServerCertVerified::assertion()),
            Expect::Pinned(_) => Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // The configurations allow TLS 1.3 only; a 1.2 handshake never gets here.
        Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOfferedOrEnabled))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
