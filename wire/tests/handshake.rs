//! Real TLS 1.3 handshakes over localhost between [`server_config`] and the client
//! configurations: the pinned key is accepted, any other key refused, and the key seen is
//! recorded either way.

#![expect(clippy::unwrap_used, reason = "test code (helpers too): a failed step must fail the test")]

use std::sync::Arc;

use hostctl_schemas::signing::SecretKey;
use hostctl_wire::{accept_any, client_config, server_config, server_name, KeyBytes, SeenKey};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn identity(seed: u8) -> SecretKey {
    SecretKey::from_seed("web1", [seed; 32])
}

/// Serves one connection with `identity`'s certificate (echoing one line); connects with
/// `client` and returns whether the handshake and the echo worked.
async fn handshake(identity: &SecretKey, client: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, std::io::Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(identity).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = acceptor.accept(tcp).await else { return None };
        let version = tls.get_ref().1.protocol_version();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.ok()?;
        tls.write_all(&buf).await.ok()?;
        tls.shutdown().await.ok()?;
        version
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    let result = async {
        let mut tls = connector.connect(server_name(), tcp).await?;
        tls.write_all(b"hello").await?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await?;
        Ok(answer)
    }
    .await;
    let version = server.await.unwrap();
    if result.is_ok() {
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    }
    result
}

fn key_of(identity: &SecretKey) -> KeyBytes {
    identity.public().key
}

#[tokio::test]
async fn the_pinned_key_is_accepted_and_seen() {
    let agent = identity(1);
    let (config, seen) = client_config(Some(key_of(&agent))).unwrap();
    assert_eq!(handshake(&agent, config).await.unwrap(), b"hello");
    assert_eq!(seen.get(), Some(key_of(&agent)));
}

#[tokio::test]
async fn another_key_is_refused_and_named() {
    let (agent, impostor) = (identity(1), identity(2));
    let (config, seen) = client_config(Some(key_of(&agent))).unwrap();
    let err = handshake(&impostor, config).await.unwrap_err();
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
    assert_eq!(seen.get(), Some(key_of(&impostor)), "the key the impostor showed is recorded");
}

#[tokio::test]
async fn nothing_pinned_refuses_every_server_but_records_its_key() {
    let agent = identity(3);
    let (config, seen) = client_config(None).unwrap();
    assert!(handshake(&agent, config).await.is_err());
    assert_eq!(seen.get(), Some(key_of(&agent)));
}

#[tokio::test]
async fn enrollment_accepts_any_identity_and_records_it() {
    let agent = identity(4);
    let (config, seen) = accept_any().unwrap();
    assert_eq!(seen.get(), None);
    assert_eq!(handshake(&agent, config).await.unwrap(), b"hello");
    assert_eq!(seen.get(), Some(key_of(&agent)));
    let _: SeenKey = seen;
}

/// A TLS 1.2-only client gets no connection: the agent speaks TLS 1.3 only.
#[tokio::test]
#[expect(deprecated, reason = "the provider the crate uses")]
async fn tls_1_2_is_refused() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let old = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let err = handshake(&identity(5), Arc::new(old)).await.unwrap_err();
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
}
