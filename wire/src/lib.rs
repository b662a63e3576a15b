//! The agent API's TLS: both sides' rustls configurations, and nothing else. The agent
//! serves a self-signed certificate made from its ed25519 identity key
//! ([`server_config`]); a client accepts exactly the identity key pinned for the host
//! ([`client_config`]), still verifying the TLS 1.3 handshake signature with ring's
//! algorithms, and records the key it saw ([`SeenKey`]) so the controller can name it.
//!
//! Invariant: only this crate builds rustls configurations for the agent API; both are
//! TLS 1.3 only, with ring as the provider (no OpenSSL). Certificate names, dates and
//! issuers mean nothing here: the pinned key is the whole of the server's identity.

mod verifier;

use std::sync::{Arc, Mutex, PoisonError};

use hostctl_schemas::key::PUBLIC_KEY_LEN;
use hostctl_schemas::signing::SecretKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
pub use rustls::{ClientConfig, ServerConfig};

/// The raw bytes of an ed25519 identity public key.
pub type KeyBytes = [u8; PUBLIC_KEY_LEN];

/// Why a TLS configuration could not be built (never contains key material).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot make the TLS certificate from the identity key: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

#[expect(
    deprecated,
    reason = "ring is the chosen provider (no cmake, no C++ toolchain); its lack of post-quantum key exchange is accepted"
)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The agent's server configuration: TLS 1.3 only, a self-signed certificate for the
/// identity key, no client certificates (requests are signed instead), HTTP/1.1.
pub fn server_config(identity: &SecretKey) -> Result<Arc<ServerConfig>, WireError> {
    let pkcs8 = PrivatePkcs8KeyDer::from(identity.to_pkcs8_der());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
    let params = rcgen::CertificateParams::new(vec!["hostctl-agent".to_owned()])?;
    let cert: CertificateDer<'static> = params.self_signed(&key_pair)?.der().clone();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(pkcs8))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The identity key the server showed on the last handshake of a client configuration
/// (shared with it; cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct SeenKey(Arc<Mutex<Option<KeyBytes>>>);

impl SeenKey {
    /// The key, if a server has shown an ed25519 certificate yet.
    pub fn get(&self) -> Option<KeyBytes> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, key: KeyBytes) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
    }
}

/// A client configuration that accepts only a server whose identity key is `pinned`;
/// `None` accepts no server at all, but still completes the certificate check far
/// enough to record the key shown (`hostctl enroll` and "none pinned" errors).
/// [`accept_any`] is the enrollment variant.
pub fn client_config(pinned: Option<KeyBytes>) -> Result<(Arc<ClientConfig>, SeenKey), WireError> {
    build_client(verifier::Expect::Pinned(pinned))
}

/// A client configuration that accepts any ed25519 identity (the handshake signature is
/// still verified), for `hostctl enroll`, which shows the key before it is trusted; it
/// must never carry a request.
pub fn accept_any() -> Result<(Arc<ClientConfig>, SeenKey), WireError> {
    build_client(verifier::Expect::Any)
}

fn build_client(expect: verifier::Expect) -> Result<(Arc<ClientConfig>, SeenKey), WireError> {
    let seen = SeenKey::default();
    let provider = provider();
    let verifier = verifier::PinnedKey::new(expect, seen.clone(), provider.signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), seen))
}

/// The name a client gives the server: the agent serves one certificate whatever the
/// name, and the pin, not the name, is checked. An address (no SNI is sent for one) is
/// the name that cannot fail to parse.
pub fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}
