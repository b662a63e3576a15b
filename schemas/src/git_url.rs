//! Git remote URLs as pull mode sees them: how the agent reaches the remote (local path,
//! HTTP(S), ssh) and, for ssh, the user, host and port it connects to (the port picks
//! the `known_hosts` name: `host` for 22, `[host]:port` otherwise, as OpenSSH writes it).
//!
//! Accepted ssh forms (the ones libgit2 understands): `ssh://user@host[:port]/path` (also
//! `git+ssh://` and `ssh+git://`) and scp-like `user@host:path`. The user is required:
//! the agent runs as root, and a forge's user (`git`) is never root.

use std::fmt;

/// How the agent reaches a remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRemote {
    /// A path on this machine, or `file://`.
    Local,
    /// `http://` or `https://`.
    Http,
    /// ssh, in either form.
    Ssh(SshRemote),
    /// `git://` (libgit2 fetches it; any other scheme is refused).
    Other,
}

/// Where an ssh remote is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshRemote {
    pub user: String,
    /// Without brackets, also for IPv6 addresses.
    pub host: String,
    /// `None`: the default port 22 (always for the scp-like form).
    pub port: Option<u16>,
    pub path: String,
}

impl SshRemote {
    /// The name `known_hosts` lists this server under: `host`, or `[host]:port` for a
    /// port other than 22.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            Some(port) if port != 22 => format!("[{}]:{port}", self.host),
            _ => self.host.clone(),
        }
    }
}

impl fmt::Display for SshRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.known_hosts_name())
    }
}

/// Why a URL is unusable (mostly ssh ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum GitUrlError {
    NoUser,
    NoHost,
    NoPath,
    BadPort,
    BadBrackets,
    /// A scheme libgit2 cannot fetch from (`ftp://`, `rsync://`, ...).
    UnsupportedScheme,
}

impl GitUrlError {
    /// The explanation (static: config validation reports it inside a located error).
    pub fn message(self) -> &'static str {
        match self {
            Self::NoUser => "an ssh URL must name the user (`ssh://user@host/path` or `user@host:path`)",
            Self::NoHost => "an ssh URL must name the host",
            Self::NoPath => "an ssh URL must name the repository path after the host",
            Self::BadPort => "the ssh port must be a number from 1 to 65535",
            Self::BadBrackets => "an IPv6 host must be written in brackets (`[::1]`)",
            Self::UnsupportedScheme => {
                "the agent cannot fetch with this URL scheme; use a path, `file://`, `http://`, `https://`, \
                 `git://`, `ssh://user@host/path` or `user@host:path`"
            }
        }
    }
}

const SSH_SCHEMES: [&str; 3] = ["ssh://", "git+ssh://", "ssh+git://"];

/// Classifies `url` and parses an ssh remote.
pub fn parse_git_url(url: &str) -> Result<GitRemote, GitUrlError> {
    if let Some(rest) = SSH_SCHEMES.iter().find_map(|s| url.strip_prefix(s)) {
        return ssh_url(rest).map(GitRemote::Ssh);
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Ok(match scheme {
            "http" | "https" => GitRemote::Http,
            "file" => GitRemote::Local,
            "git" => GitRemote::Other,
            _ => return Err(GitUrlError::UnsupportedScheme),
        });
    }
    if url.starts_with(['/', '.', '~']) {
        return Ok(GitRemote::Local);
    }
    // scp-like: `[user@]host:path` with no `/` before the first `:` (git's own rule;
    // `./a:b` or `/a:b` are paths, handled above).
    match scp_split(url) {
        Some((authority, path)) => scp_like(authority, path).map(GitRemote::Ssh),
        None => Ok(GitRemote::Local),
    }
}

/// The password of a `scheme://user:password@host/...` URL (a forge token, typically).
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `url` with its password (if any) replaced by `***`: the form the agent logs, reports
/// in status and exports in metrics, so a token in `pull.url` never leaves the host.
pub fn redact_url(url: &str) -> String {
    redact_in(url, url)
}

/// `text` (e.g. a git error, which may quote the URL) with `url`'s password replaced by
/// `***` wherever it appears.
pub fn redact_in(url: &str, text: &str) -> String {
    match url_password(url) {
        Some(password) => text.replace(password, "***"),
        None => text.to_owned(),
    }
}

/// Splits scp-like `authority:path`; brackets may hide colons of an IPv6 host.
fn scp_split(url: &str) -> Option<(&str, &str)> {
    let colon = match url.find('[') {
        Some(open) if !url[..open].contains([':', '/']) => {
            let close = url[open..].find(']')? + open;
            url[close..].find(':')? + close
        }
        _ => url.find(':')?,
    };
    let authority = &url[..colon];
    (!authority.contains('/')).then(|| (authority, &url[colon + 1..]))
}

fn ssh_url(rest: &str) -> Result<SshRemote, GitUrlError> {
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let (user, host_port) = split_user(authority)?;
    let (host, port) = split_port(host_port)?;
    if path.len() <= 1 {
        return Err(GitUrlError::NoPath);
    }
    Ok(SshRemote { user, host, port, path: path.to_owned() })
}

fn scp_like(authority: &str, path: &str) -> Result<SshRemote, GitUrlError> {
    let (user, host) = split_user(authority)?;
    let host = unbracket(host)?;
    if path.is_empty() {
        return Err(GitUrlError::NoPath);
    }
    Ok(SshRemote { user, host, port: None, path: path.to_owned() })
}

fn split_user(authority: &str) -> Result<(String, &str), GitUrlError> {
    let (user, host) = authority.rsplit_once('@').ok_or(GitUrlError::NoUser)?;
    if user.is_empty() {
        return Err(GitUrlError::NoUser);
    }
    Ok((user.to_owned(), host))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_port(host_port: &str) -> Result<(String, Option<u16>), GitUrlError> {
    let (host, port) = if host_port.starts_with('[') {
        let close = host_port.find(']').ok_or(GitUrlError::BadBrackets)?;
        match &host_port[close + 1..] {
            "" => (&host_port[..=close], None),
            rest => (&host_port[..=close], Some(rest.strip_prefix(':').ok_or(GitUrlError::BadBrackets)?)),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0).ok_or(GitUrlError::BadPort)?),
        None => None,
    };
    Ok((unbracket(host)?, port))
}

fn unbracket(host: &str) -> Result<String, GitUrlError> {
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or(GitUrlError::BadBrackets)?,
        None if host.contains([']', '[']) => return Err(GitUrlError::BadBrackets),
        None => host,
    };
    if host.is_empty() {
        return Err(GitUrlError::NoHost);
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(url: &str) -> SshRemote {
        match parse_git_url(url) {
            Ok(GitRemote::Ssh(remote)) => remote,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn passwords_in_urls_are_redacted_and_nothing_else_is() {
        let url = "https://oauth2:glpat-SECRET@git.example.com/fleet.git";
        assert_eq!(redact_url(url), "https://oauth2:***@git.example.com/fleet.git");
        let error = format!("failed to fetch {url}: 401");
        assert_eq!(redact_in(url, &error), "failed to fetch https://oauth2:***@git.example.com/fleet.git: 401");
        for plain in [
            "https://git.example.com/a@b:c",
            "ssh://git@host:2222/x",
            "git@host:path",
            "/srv/fleet.git",
            "https://u:@h/x",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    #[test]
    fn ssh_urls() {
        let r = ssh("ssh://git@git.example.com/infra.git");
        assert_eq!(
            (r.user.as_str(), r.host.as_str(), r.port, r.path.as_str()),
            ("git", "git.example.com", None, "/infra.git")
        );
        assert_eq!(r.known_hosts_name(), "git.example.com");
        let r = ssh("ssh://root@127.0.0.1:2222/srv/fleet.git");
        assert_eq!((r.port, r.known_hosts_name()), (Some(2222), "[127.0.0.1]:2222".to_owned()));
        assert_eq!(ssh("git+ssh://a@h:22/x").known_hosts_name(), "h", "port 22 is the plain name");
        let r = ssh("ssh://git@[::1]:2200/x");
        assert_eq!((r.host.as_str(), r.known_hosts_name()), ("::1", "[::1]:2200".to_owned()));
        let r = ssh("git@github.com:org/infra.git");
        assert_eq!(
            (r.user.as_str(), r.host.as_str(), r.port, r.path.as_str()),
            ("git", "github.com", None, "org/infra.git")
        );
        let r = ssh("root@127.0.0.1:/srv/fleet.git");
        assert_eq!((r.host.as_str(), r.path.as_str()), ("127.0.0.1", "/srv/fleet.git"));
        assert_eq!(ssh("me@[fe80::1]:repo").host, "fe80::1");
        assert_eq!(r.to_string(), "root@127.0.0.1");
    }

    #[test]
    fn other_urls() {
        for (url, want) in [
            ("https://git.example.com/infra.git", GitRemote::Http),
            ("http://10.0.0.1/x", GitRemote::Http),
            ("file:///srv/x", GitRemote::Local),
            ("/srv/fleet.git", GitRemote::Local),
            ("./fleet", GitRemote::Local),
            ("/srv/a:b", GitRemote::Local),
            ("fleet.git", GitRemote::Local),
            ("dir/a:b", GitRemote::Local),
            ("git://host/x", GitRemote::Other),
        ] {
            assert_eq!(parse_git_url(url), Ok(want), "{url}");
        }
    }

    #[test]
    fn bad_ssh_urls() {
        for (url, want) in [
            ("ssh://host/x", GitUrlError::NoUser),
            ("host:x", GitUrlError::NoUser),
            ("@host:x", GitUrlError::NoUser),
            ("ssh://u@/x", GitUrlError::NoHost),
            ("u@:x", GitUrlError::NoHost),
            ("ssh://u@h", GitUrlError::NoPath),
            ("ssh://u@h/", GitUrlError::NoPath),
            ("u@h:", GitUrlError::NoPath),
            ("ssh://u@h:0/x", GitUrlError::BadPort),
            ("ssh://u@h:70000/x", GitUrlError::BadPort),
            ("ssh://u@h:ab/x", GitUrlError::BadPort),
            ("ftp://host/x", GitUrlError::UnsupportedScheme),
            ("rsync://host/x", GitUrlError::UnsupportedScheme),
            ("ssh://u@[::1/x", GitUrlError::BadBrackets),
            ("ssh://u@[::1]2/x", GitUrlError::BadBrackets),
        ] {
            assert_eq!(parse_git_url(url), Err(want), "{url}");
        }
    }
}
