//! One attempt of an `http` health check: a GET of an `http://` or `https://` URL over a
//! new connection, and the words for why it got no status. Unlike the agent API client
//! (`client.rs`), a health check trusts the system's TLS roots (or `SSL_CERT_FILE`) and
//! goes through the proxy the operator's environment names, since the operator may need it
//! to reach their own service; when it fails, the error names that proxy, so the host is
//! not blamed for the proxy's failure.

use std::time::Duration;

use hyper_util::client::proxy::matcher::Matcher;
use reqwest::Client;
use rustls::CertificateError;

use crate::client::{error_chain, root_cause, CONNECT_TIMEOUT};

/// `GET url` within `timeout`: the HTTP status, or why there was none.
pub async fn get(url: &str, timeout: Duration) -> Result<u16, String> {
    // A client of its own per attempt: like the confirmation, a check must show that the
    // new configuration accepts new connections, not reuse one from before.
    let client = Client::builder()
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {}", error_chain(&e)))?;
    match client.get(url).send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) => {
            let proxy = proxy_for(&Matcher::from_system(), url);
            Err(failure_message(&e, proxy.as_deref(), timeout))
        }
    }
}

/// Why an attempt got no status, naming the proxy it went through, if any.
fn failure_message(e: &reqwest::Error, proxy: Option<&str>, timeout: Duration) -> String {
    if e.is_timeout() {
        let within = hostctl_schemas::duration::Duration::from(timeout);
        return format!("no answer within {within}{}", via(proxy));
    }
    if e.is_connect() {
        return connect_failure(&root_cause(e), certificate_problem(e), proxy);
    }
    error_chain(e)
}

/// `cannot connect[ via proxy URL]: CAUSE`, or, when the server's certificate was refused,
/// rustls's verdict on it and which roots were asked.
fn connect_failure(cause: &str, certificate: Option<CertificateError>, proxy: Option<&str>) -> String {
    let Some(problem) = certificate else {
        return format!("cannot connect{}: {cause}", via(proxy));
    };
    let mut text = format!("cannot connect{}: TLS: the server's certificate was refused: {problem}", via(proxy));
    if problem == CertificateError::UnknownIssuer {
        text.push_str(
            " (not signed by a root certificate hostctl trusts: the system's, or those in the file SSL_CERT_FILE names)",
        );
    }
    text
}

fn via(proxy: Option<&str>) -> String {
    proxy.map(|p| format!(" via proxy {p}")).unwrap_or_default()
}

/// The proxy that `matcher` (the environment's `http_proxy`, `https_proxy`, `all_proxy`
/// and `no_proxy`, read as reqwest reads them) sends a GET of `url` through; without its
/// credentials, which hyper-util keeps apart from the URL.
fn proxy_for(matcher: &Matcher, url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let proxy = matcher.intercept(&uri)?;
    Some(proxy.uri().to_string().trim_end_matches('/').to_owned())
}

/// rustls's verdict on the server's certificate, when that is why the handshake failed:
/// hyper-rustls hands it up wrapped in `io::Error`s, whose `source()` skips the error they
/// wrap, so each one is opened with `get_ref()`.
fn certificate_problem(e: &reqwest::Error) -> Option<CertificateError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(rustls::Error::InvalidCertificate(problem)) = err.downcast_ref() {
            return Some(problem.clone());
        }
        current = match err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_is_named_when_the_environment_sends_the_check_through_one() {
        let matcher = Matcher::builder()
            .http("http://user:secret@proxy.corp:3128")
            .https("http://tls-proxy.corp:8080")
            .no("localhost, .internal, 10.0.0.0/8")
            .build();
        assert_eq!(proxy_for(&matcher, "http://web1:8080/healthz").as_deref(), Some("http://proxy.corp:3128"));
        assert_eq!(proxy_for(&matcher, "https://web1/healthz").as_deref(), Some("http://tls-proxy.corp:8080"));
        for direct in ["http://localhost:8080/healthz", "https://web1.internal/", "http://10.1.2.3/healthz"] {
            assert_eq!(proxy_for(&matcher, direct), None, "{direct} is in no_proxy");
        }
        assert_eq!(proxy_for(&Matcher::builder().build(), "http://web1/healthz"), None, "no proxy set");

        assert_eq!(
            connect_failure("Connection refused (os error 111)", None, Some("http://proxy.corp:3128")),
            "cannot connect via proxy http://proxy.corp:3128: Connection refused (os error 111)"
        );
        assert_eq!(
            connect_failure("Connection refused (os error 111)", None, None),
            "cannot connect: Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_refused_certificate_says_which_roots_are_trusted() {
        let cause = "invalid peer certificate: UnknownIssuer";
        let text = connect_failure(cause, Some(CertificateError::UnknownIssuer), Some("http://proxy.corp:3128"));
        assert!(
            text.starts_with(
                "cannot connect via proxy http://proxy.corp:3128: TLS: the server's certificate was refused: UnknownIssuer (not signed"
            ),
            "{text}"
        );
        assert!(text.contains("SSL_CERT_FILE"), "{text}");
        let text = connect_failure("invalid peer certificate: Expired", Some(CertificateError::Expired), None);
        assert_eq!(text, "cannot connect: TLS: the server's certificate was refused: Expired");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure() {
        // Port 9 on localhost (discard) is closed on any test machine. A proxy in the
        // test's environment would be named after "cannot connect", so only that is asserted.
        let err = get("http://127.0.0.1:9/healthz", Duration::from_secs(2)).await.unwrap_err();
        assert!(err.starts_with("cannot connect"), "{err}");
    }
}
