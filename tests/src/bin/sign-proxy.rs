//! A signing reverse proxy on loopback, so API clients that cannot sign requests
//! (schemathesis, curl) can talk to a live agent: a request carrying
//! `x-hostctl-signature: <placeholder>` is signed with the fleet key by the project's own
//! signer (`hostctl_schemas::signing`, through `hostctl_tests::http::Request::signed`) and
//! forwarded; one carrying `x-hub-signature-256: <placeholder>` gets the webhook HMAC of its
//! body instead. Any other request is forwarded exactly as it came, so a client can still
//! check that unsigned or wrongly signed requests are refused. One request per connection;
//! the agent's response is relayed byte for byte.
//!
//! `sign-proxy --listen 127.0.0.1:0 --agent 127.0.0.1:7420 --host NAME --agent-key KEY
//! --key fleet.sec [--webhook-secret FILE] [--placeholder WORD]`: `--host` is the agent's
//! `hostname` and `--agent-key` its identity (`hostctl-agent identity`), which requests
//! are signed for and the TLS connection to the agent is pinned to; prints `http://ADDR` (the bound address)
//! on stdout once it listens, and one line per request on stderr.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hostctl_schemas::signing::SecretKey;
use hostctl_tests::http::{hub_signature, Request};

/// The largest request body relayed (schemathesis sends small ones).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The largest request head (request line and headers).
const MAX_HEAD: usize = 256 * 1024;
/// How long the agent may stay silent (imports and bundles answer after their work).
const AGENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Signature headers a signed request gets fresh: whatever the client sent is dropped.
const SIGNATURE_HEADERS: [&str; 8] = hostctl_schemas::api::headers::ALL;
/// Connection-level headers the proxy sets itself.
const HOP_HEADERS: [&str; 5] = ["connection", "keep-alive", "transfer-encoding", "content-length", "host"];

struct Options {
    listen: String,
    agent: String,
    /// The agent's `hostname`: the host requests are signed for.
    host: String,
    /// The agent's identity key: signed for, and pinned.
    identity: [u8; 32],
    key: SecretKey,
    webhook_secret: Option<Vec<u8>>,
    placeholder: String,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1).collect()) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("sign-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&options.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sign-proxy: cannot listen on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("http://{addr}"),
        Err(e) => {
            eprintln!("sign-proxy: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = std::io::stdout().flush();
    for client in listener.incoming().flatten() {
        let options = Arc::clone(&options);
        std::thread::spawn(move || {
            if let Err(e) = handle(client, &options) {
                eprintln!("sign-proxy: {e}");
            }
        });
    }
    ExitCode::SUCCESS
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let (mut listen, mut agent, mut host, mut key, mut webhook, mut placeholder) =
        ("127.0.0.1:0".to_owned(), None, None, None, None, "sign-proxy".to_owned());
    let mut identity = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--agent" => agent = Some(value()?),
            "--host" => host = Some(value()?),
            "--agent-key" => identity = Some(value()?),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--webhook-secret" => webhook = Some(PathBuf::from(value()?)),
            "--placeholder" => placeholder = value()?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let agent = agent.ok_or("--agent HOST:PORT is required")?;
    let host: String = host.ok_or("--host NAME (the agent's hostname) is required")?;
    host.parse::<hostctl_schemas::ids::HostName>().map_err(|e| format!("--host {host}: {e}"))?;
    let identity: hostctl_schemas::key::PublicKey = identity
        .ok_or("--agent-key KEY (`hostctl-agent identity`) is required")?
        .parse()
        .map_err(|e| format!("--agent-key: {e}"))?;
    let identity = identity.key;
    let key = SecretKey::load(&key.ok_or("--key FILE is required")?).map_err(|e| e.to_string())?;
    let webhook_secret = match webhook {
        Some(file) => Some(
            std::fs::read_to_string(&file)
                .map_err(|e| format!("--webhook-secret {}: {e}", file.display()))?
                .trim()
                .as_bytes()
                .to_vec(),
        ),
        None => None,
    };
    Ok(Options { listen, agent, host, identity, key, webhook_secret, placeholder })
}

/// One request as the client sent it (header values as raw bytes: clients may send
/// any, and the agent must see exactly those).
struct Incoming {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn handle(client: TcpStream, options: &Options) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(incoming) = read_request(&mut reader)? else { return Ok(()) };
    let (headers, how) = prepare(&incoming, options);
    let response = forward(&incoming, &headers, &options.agent, options.identity)?;
    let status = String::from_utf8_lossy(response.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
    eprintln!("{} {} ({how}) -> {status}", incoming.method, incoming.target);
    let mut client = client;
    client.write_all(&response)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// The headers to forward, and how the request was authenticated (for the log).
fn prepare(incoming: &Incoming, options: &Options) -> (Vec<(String, Vec<u8>)>, &'static str) {
    let wants = |name: &str| {
        incoming
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim_ascii() == options.placeholder.as_bytes())
    };
    let sign = wants("x-hostctl-signature");
    let hmac = wants("x-hub-signature-256") && options.webhook_secret.is_some();
    let mut headers: Vec<(String, Vec<u8>)> = incoming
        .headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            let replaced =
                (sign && SIGNATURE_HEADERS.contains(&lower.as_str())) || (hmac && lower == "x-hub-signature-256");
            !replaced && !HOP_HEADERS.contains(&lower.as_str())
        })
        .cloned()
        .collect();
    if let (true, Some(secret)) = (hmac, &options.webhook_secret) {
        headers.push(("x-hub-signature-256".to_owned(), hub_signature(secret, &incoming.body).into_bytes()));
    }
    if sign {
        let signed = Request::new(&incoming.method, &incoming.target, &incoming.body).signed_for_identity(
            &options.key,
            &options.host,
            &options.identity,
            hostctl_tests::http::now(),
        );
        headers.extend(signed.headers.into_iter().map(|(n, v)| (n, v.into_bytes())));
    }
    let how = match (sign, hmac) {
        (true, _) => "signed",
        (false, true) => "webhook hmac",
        (false, false) => "as sent",
    };
    (headers, how)
}

/// Reads one line (up to and without its CRLF) as bytes.
fn read_line(reader: &mut BufReader<TcpStream>, head_len: &mut usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    *head_len += reader.read_until(b'\n', &mut line)?;
    if *head_len > MAX_HEAD {
        return Err(invalid("request head too large".into()));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Reads the request line, headers and body (`content-length` or chunked).
fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Incoming>> {
    let mut head_len = 0;
    let line = read_line(reader, &mut head_len)?;
    if head_len == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("not an HTTP request line: {line:?}")));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let text = read_line(reader, &mut head_len)?;
        if text.is_empty() {
            break;
        }
        let colon = text.iter().position(|b| *b == b':').ok_or_else(|| invalid(format!("not a header: {text:?}")))?;
        let name = String::from_utf8_lossy(&text[..colon]).trim().to_owned();
        headers.push((name, text[colon + 1..].trim_ascii().to_vec()));
    }
    let header = |name: &str| {
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        let len: usize = header("content-length")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|e| invalid(format!("content-length: {e}")))?;
        if len > MAX_BODY {
            return Err(invalid(format!("body of {len} bytes is over the proxy's limit")));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(Incoming { method, target, headers, body }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body over the proxy's limit".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

/// Sends the request with `headers` to the agent on a new connection; the raw response.
fn forward(
    incoming: &Incoming,
    headers: &[(String, Vec<u8>)],
    agent: &str,
    identity: [u8; 32],
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(agent)?;
    tcp.set_read_timeout(Some(AGENT_TIMEOUT))?;
    let mut stream = hostctl_tests::http::tls_over(tcp, Some(identity))?;
    let mut head =
        format!("{} {} HTTP/1.1\r\nhost: {agent}\r\nconnection: close\r\n", incoming.method, incoming.target)
            .into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("content-length: {}\r\n\r\n", incoming.body.len()).as_bytes());
    stream.write_all(&head)?;
    stream.write_all(&incoming.body)?;
    hostctl_tests::http::read_to_close(&mut stream)
}
