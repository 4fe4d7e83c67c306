//! The HTTP(S) client of the definitions updater: one GET per connection, direct or through an
//! HTTP proxy (absolute-form requests for `http://`, a `CONNECT` tunnel for `https://`, optional
//! basic authentication), TLS by rustls against the configured CA or the web PKI roots.
//!
//! Every download has a byte limit and three clocks: the connect timeout, a stall timeout (no
//! byte for this long) and a whole-transfer timeout. A mirror can neither feed endless data nor
//! hold the updater with a trickle (TUF's endless-data and slow-retrieval attacks).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http://host[:port]/path` or `https://…`.
    #[error("{url:?} is not a usable URL: {problem}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The proxy setting is not `http://[user:pass@]host:port`.
    #[error("proxy {proxy:?} is not usable: {problem}")]
    BadProxy {
        /// The proxy as given (without the password).
        proxy: String,
        /// What is wrong.
        problem: String,
    },
    /// The CA file cannot be used.
    #[error("CA file {}: {problem}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// No TCP connection could be made (server down, refused, unreachable, timed out).
    #[error("cannot connect to {target}: {problem}")]
    Connect {
        /// `host:port` (the proxy's when one is used).
        target: String,
        /// The system's error.
        problem: String,
    },
    /// The proxy refused the tunnel (wrong credentials, forbidden destination).
    #[error("proxy refused the tunnel to {target}: {status}")]
    ProxyRefused {
        /// `host:port` of the server.
        target: String,
        /// The proxy's status line.
        status: String,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, protocol error).
    #[error("TLS with {host} failed: {problem}")]
    Tls {
        /// The server's name.
        host: String,
        /// rustls' explanation.
        problem: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error from {url}: {problem}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// The server answered something other than 200.
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server sent more than allowed.
    #[error("{url} sent more than {limit} bytes; download aborted")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The server was too slow (stall or whole-transfer timeout).
    #[error("{url}: {what} timed out")]
    Timeout {
        /// The URL.
        url: String,
        /// Which clock ran out.
        what: &'static str,
    },
}

impl FetchError {
    /// Whether trying again later may help (network trouble), as opposed to an answer that
    /// will not change by asking again soon.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Tls { .. }
            | FetchError::Http { .. }
            | FetchError::Timeout { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            FetchError::ProxyRefused { .. } => true,
            FetchError::BadUrl { .. }
            | FetchError::BadProxy { .. }
            | FetchError::CaFile { .. }
            | FetchError::TooLarge { .. } => false,
        }
    }
}

/// A parsed package base URL, e.g. `https://defs.example.com/portcullis/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageUrl {
    tls: bool,
    host: String,
    port: u16,
    /// The path, always ending in `/`.
    path: String,
}

impl PackageUrl {
    /// Parses an `http://` or `https://` URL without query or fragment.
    pub fn parse(url: &str) -> Result<PackageUrl, FetchError> {
        let bad = |problem: &str| FetchError::BadUrl {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad("credentials in the URL are not supported"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut path = uri.path().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(PackageUrl {
            tls,
            host,
            port,
            path,
        })
    }

    /// The URL of one file of the package (plain file names only).
    pub fn file(&self, name: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}{name}", self.port, self.path)
    }
}

/// An HTTP proxy, `http://[user:pass@]host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Basic …` header value, when credentials were given.
    authorization: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log the credentials.
        write!(
            f,
            "Proxy({}:{}, auth: {})",
            self.host,
            self.port,
            self.authorization.is_some()
        )
    }
}

impl Proxy {
    /// Parses the `definitions.proxy` setting.
    pub fn parse(text: &str) -> Result<Proxy, FetchError> {
        let shown = match text.rsplit_once('@') {
            Some((_, rest)) => format!("http://…@{rest}"),
            None => text.to_string(),
        };
        let bad = |problem: &str| FetchError::BadProxy {
            proxy: shown.clone(),
            problem: problem.to_string(),
        };
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| bad("needs host:port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(bad("no host"));
        }
        let authorization = credentials.map(|c| {
            let (user, password) = c.split_once(':').unwrap_or((c, ""));
            let pair = format!("{}:{}", percent_decode(user), percent_decode(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Proxy {
            host: host.to_string(),
            port,
            authorization,
        })
    }
}

/// `%XX` escapes in proxy credentials (so a password may contain `@` or `:`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Timeouts of one download.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect (to the server or the proxy), tunnel set-up and TLS handshake, each.
    pub connect: Duration,
    /// Longest silence while waiting for the response or its body.
    pub stall: Duration,
    /// The whole transfer of one file.
    pub transfer: Duration,
}

/// The updater's HTTP client.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    proxy: Option<Proxy>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("proxy", &self.proxy)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl HttpClient {
    /// A client trusting the CAs in `ca_file` (empty: the web PKI roots), optionally through
    /// `proxy` (empty: direct).
    pub fn new(ca_file: &Path, proxy: &str, timeouts: Timeouts) -> Result<HttpClient, FetchError> {
        let proxy = if proxy.is_empty() {
            None
        } else {
            Some(Proxy::parse(proxy)?)
        };
        Ok(HttpClient {
            tls: Arc::new(client_tls(ca_file)?),
            proxy,
            timeouts,
        })
    }

    /// Starts a GET of `url`; the body is read with [`Download::chunk`], at most `limit` bytes.
    pub async fn get(&self, url: &str, limit: u64) -> Result<Download, FetchError> {
        let target = PackageUrl::parse(url)?;
        let deadline = Instant::now() + self.timeouts.transfer;
        let http_error = |problem: String| FetchError::Http {
            url: url.to_string(),
            problem,
        };
        let stream = self.connect(&target).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_error(e.to_string()))?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let guard = AbortOnDrop(connection);
        // Through a proxy without a tunnel the request line carries the absolute URL.
        let request_target = match (&self.proxy, target.tls) {
            (Some(_), false) => url.to_string(),
            _ => url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_else(|| "/".into()),
        };
        let mut request = hyper::Request::get(request_target)
            .header(
                hyper::header::HOST,
                format!("{}:{}", target.host, target.port),
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            );
        if let (
            Some(Proxy {
                authorization: Some(auth),
                ..
            }),
            false,
        ) = (&self.proxy, target.tls)
        {
            request = request.header(hyper::header::PROXY_AUTHORIZATION, auth.as_str());
        }
        let request = request
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| http_error(e.to_string()))?;
        let response = tokio::time::timeout_at(
            deadline.min(Instant::now() + self.timeouts.stall),
            sender.send_request(request),
        )
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_string(),
            what: "waiting for the response",
        })?
        .map_err(|e| http_error(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let declared = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        Ok(Download {
            url: url.to_string(),
            body: response.into_body(),
            limit,
            received: 0,
            stall: self.timeouts.stall,
            deadline,
            _connection: guard,
        })
    }

    /// Fetches a whole (small) file into memory.
    pub async fn get_bytes(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut download = self.get(url, limit).await?;
        let mut out = Vec::new();
        while let Some(chunk) = download.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn connect(&self, target: &PackageUrl) -> Result<Box<dyn Stream>, FetchError> {
        let (host, port) = match &self.proxy {
            Some(p) => (p.host.as_str(), p.port),
            None => (target.host.as_str(), target.port),
        };
        let hostport = format!("{host}:{port}");
        let tcp = tokio::time::timeout(self.timeouts.connect, TcpStream::connect((host, port)))
            .await
            .map_err(|_| FetchError::Connect {
                target: hostport.clone(),
                problem: "timed out".into(),
            })?
            .map_err(|e| FetchError::Connect {
                target: hostport.clone(),
                problem: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return Ok(Box::new(tcp));
        }
        let mut tcp = tcp;
        if let Some(proxy) = &self.proxy {
            tokio::time::timeout(self.timeouts.connect, tunnel(&mut tcp, proxy, target))
                .await
                .map_err(|_| FetchError::Connect {
                    target: hostport.clone(),
                    problem: "proxy tunnel timed out".into(),
                })??;
        }
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
            FetchError::Tls {
                host: target.host.clone(),
                problem: e.to_string(),
            }
        })?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = tokio::time::timeout(self.timeouts.connect, connector.connect(name, tcp))
            .await
            .map_err(|_| FetchError::Tls {
                host: target.host.clone(),
                problem: "handshake timed out".into(),
            })?
            .map_err(|e| FetchError::Tls {
                host: target.host.clone(),
                problem: e.to_string(),
            })?;
        Ok(Box::new(tls))
    }
}

/// Asks the proxy for a `CONNECT` tunnel to the server and reads its answer head.
async fn tunnel(
    stream: &mut TcpStream,
    proxy: &Proxy,
    target: &PackageUrl,
) -> Result<(), FetchError> {
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    let io_error = |e: std::io::Error| FetchError::Connect {
        target: format!("{}:{}", proxy.host, proxy.port),
        problem: e.to_string(),
    };
    stream.write_all(head.as_bytes()).await.map_err(io_error)?;
    // Read byte by byte up to the blank line: nothing of the tunnelled stream may be consumed.
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 16 * 1024 {
            return Err(FetchError::ProxyRefused {
                target: authority,
                status: "answer head too long".into(),
            });
        }
        let b = stream.read_u8().await.map_err(io_error)?;
        answer.push(b);
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if ok {
        Ok(())
    } else {
        Err(FetchError::ProxyRefused {
            target: authority,
            status: status_line,
        })
    }
}

/// A byte stream the HTTP client can run over: TCP, or TLS over TCP (direct or tunnelled).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Ends the connection task when the download is dropped (finished or abandoned).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response body being received, with its limit and clocks.
pub struct Download {
    url: String,
    body: Incoming,
    limit: u64,
    received: u64,
    stall: Duration,
    deadline: Instant,
    _connection: AbortOnDrop,
}

impl Download {
    /// The next piece of the body; `None` at its end. Fails as soon as more than the limit has
    /// arrived, or a clock runs out.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        loop {
            let until = self.deadline.min(Instant::now() + self.stall);
            let frame = match tokio::time::timeout_at(until, self.body.frame()).await {
                Err(_) => {
                    let what = if Instant::now() >= self.deadline {
                        "the whole download"
                    } else {
                        "waiting for data (stalled)"
                    };
                    return Err(FetchError::Timeout {
                        url: self.url.clone(),
                        what,
                    });
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(FetchError::Http {
                        url: self.url.clone(),
                        problem: e.to_string(),
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.received += data.len() as u64;
            if self.received > self.limit {
                return Err(FetchError::TooLarge {
                    url: self.url.clone(),
                    limit: self.limit,
                });
            }
            return Ok(Some(data));
        }
    }
}

/// rustls client settings: the CAs of `ca_file`, or the web PKI roots when it is empty.
fn client_tls(ca_file: &Path) -> Result<rustls::ClientConfig, FetchError> {
    let bad = |problem: String| FetchError::CaFile {
        path: ca_file.to_path_buf(),
        problem,
    };
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.as_os_str().is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        let file = std::fs::File::open(ca_file).map_err(|e| bad(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("contains no certificate".into()));
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_url_joins_file_names_under_its_path() {
        let u = PackageUrl::parse("https://defs.example.com/portcullis").unwrap();
        assert_eq!(
            u.file("manifest.json"),
            "https://defs.example.com:443/portcullis/manifest.json"
        );
        let u = PackageUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(u.file("a.hdb"), "http://127.0.0.1:8080/a.hdb");
        assert!(PackageUrl::parse("ftp://x/").is_err());
        assert!(PackageUrl::parse("https://x/?a=b").is_err());
    }

    #[test]
    fn proxy_credentials_become_a_basic_header_and_are_never_shown() {
        let p = Proxy::parse("http://user:p%40ss@127.0.0.1:3128").unwrap();
        assert_eq!(p.port, 3128);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:p@ss")
        );
        assert_eq!(p.authorization.as_deref(), Some(expected.as_str()));
        assert!(!format!("{p:?}").contains("p%40ss"));
        assert!(Proxy::parse("https://proxy:1").is_err());
        assert!(Proxy::parse("http://proxy").is_err());
        let e = Proxy::parse("http://u:secret@proxy")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
