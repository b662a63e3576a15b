//! Certificates for tests of `https://` health checks: a throwaway certificate authority
//! and server certificates it signs for an IP address, made with the `openssl` command
//! (PEM files in a temp dir removed on drop). hostctl is told to trust a CA through
//! `SSL_CERT_FILE`, which rustls-native-certs reads in place of the system's roots.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::{fail, run};

/// A certificate authority: `ca.pem` (its certificate, what `SSL_CERT_FILE` names) and
/// its key, in a temp dir of its own.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
}

/// A server certificate and its key, signed by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (its certificate's CN), valid for two days.
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("hostctl-test-ca-")
            .tempdir()
            .unwrap_or_else(|e| fail(&format!("cannot create a temp dir: {e}")));
        let ca = TestCa { dir };
        let subject = format!("/CN={name}");
        openssl_req(&[("-subj", subject), ("-keyout", path_arg(&ca.key())), ("-out", path_arg(&ca.cert()))]);
        ca
    }

    /// The CA's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("ca.key")
    }

    /// A certificate for `https://ADDR/` (the address as its only subject alternative
    /// name), signed by this CA; `file_stem` names its files in the CA's dir.
    pub fn server_cert(&self, addr: Ipv4Addr, file_stem: &str) -> ServerCert {
        let dir = self.dir.path();
        let out = ServerCert { cert: dir.join(format!("{file_stem}.pem")), key: dir.join(format!("{file_stem}.key")) };
        openssl_req(&[
            ("-subj", format!("/CN={addr}")),
            ("-CA", path_arg(&self.cert())),
            ("-CAkey", path_arg(&self.key())),
            ("-addext", format!("subjectAltName=IP:{addr}")),
            ("-addext", "basicConstraints=critical,CA:FALSE".to_owned()),
            ("-keyout", path_arg(&out.key)),
            ("-out", path_arg(&out.cert)),
        ]);
        out
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `openssl req -x509` for a new P-256 key, valid two days, with these options: a CA
/// (self-signed) or, with `-CA`/`-CAkey`, a certificate that CA signs (OpenSSL 3).
fn openssl_req(options: &[(&str, String)]) {
    let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"];
    for (flag, value) in options {
        args.extend([*flag, value.as_str()]);
    }
    let out = run(Command::new("openssl").args(&args));
    if !out.status.success() {
        fail(&format!("openssl {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
}
