//! Just enough HTTP/1.1 for the data plane: the pod app's server side, the kubelet's probes and
//! the load generator's client side. Hand-rolled on tokio so each simulated pod stays a small
//! process and no client library's retries or pooling hide a dropped request.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Upper bound on a request or response head; anything longer is refused as malformed.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed request or response head: the start line's parts and the header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request: method, target, version. Response: version, status code, reason.
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> io::Result<usize> {
        match self.header("content-length") {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}"))),
        }
    }

    /// Whether the connection stays open after this message (HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keeps_alive(&self, version: &str) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if version == "HTTP/1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A connection's read side with the bytes read past the last message kept for the next one.
pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Whether bytes of a next message have already arrived.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Waits until at least one byte is available; `false` on end of stream. Cancel-safe: a
    /// byte that arrives is kept in the buffer.
    pub async fn wait_readable(&mut self) -> io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        let mut chunk = [0u8; 4096];
        let n = self.inner.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads one head. `Ok(None)` when the stream ends cleanly before its first byte.
    pub async fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = String::from_utf8(self.buf[..end].to_vec())
                    .map_err(|_| invalid("head is not UTF-8".into()))?;
                self.buf.drain(..end + 4);
                return parse_head(&text).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid(format!("head longer than {MAX_HEAD} bytes")));
            }
            let mut chunk = [0u8; 4096];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads the body that follows `head` (`Content-Length` bodies only; the data plane never
    /// sends chunked ones).
    pub async fn read_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.header("transfer-encoding").is_some() {
            return Err(invalid("chunked bodies are not supported".into()));
        }
        let len = head.content_length()?;
        while self.buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(self.buf.drain(..len).collect())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(text: &str) -> io::Result<Head> {
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or_default();
    let mut parts = start_line.splitn(3, ' ');
    let start = [(); 3].map(|_| parts.next().unwrap_or_default().to_string());
    if start[0].is_empty() || start[1].is_empty() {
        return Err(invalid(format!("bad start line {start_line:?}")));
    }
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))
        })
        .collect::<io::Result<_>>()?;
    Ok(Head { start, headers })
}

/// A response as the data plane sends it: always with `Content-Length`.
pub fn response(status: u16, reason: &str, body: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A GET request for `target`.
pub fn get(target: &str, host: &str, user_agent: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\n{connection}\r\n"
    )
    .into_bytes()
}

/// What a client got back for one request.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server keeps the connection open for another request.
    pub keep_alive: bool,
}

/// Sends `request` on `stream` and reads the response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Reader<S>,
    request: &[u8],
) -> io::Result<Response> {
    reader.inner.write_all(request).await?;
    let head = reader
        .read_head()
        .await?
        .ok_or(io::ErrorKind::UnexpectedEof)?;
    let status = head.start[1]
        .parse()
        .map_err(|_| invalid(format!("bad status {:?}", head.start[1])))?;
    let body = reader.read_body(&head).await?;
    Ok(Response {
        status,
        body,
        keep_alive: head.keeps_alive(&head.start[0]),
    })
}

/// One GET on a fresh connection to `addr`, as a kubelet probe does: success is a status from
/// 200 to 399 within `timeout`.
pub async fn probe(addr: std::net::SocketAddr, path: &str, host: &str, timeout: Duration) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let mut reader = Reader::new(stream);
        let request = get(path, host, "kube-probe/1.20", true);
        exchange(&mut reader, &request).await
    };
    matches!(
        tokio::time::timeout(timeout, attempt).await,
        Ok(Ok(r)) if (200..400).contains(&r.status)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_pipelined_requests_one_at_a_time() {
        let input =
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = Reader::new(&input[..]);
        let a = r.read_head().await.unwrap().unwrap();
        assert_eq!(a.start[1], "/a");
        assert!(a.keeps_alive(&a.start[2]));
        assert!(r.has_buffered());
        let b = r.read_head().await.unwrap().unwrap();
        assert_eq!(b.start[1], "/b");
        assert!(!b.keeps_alive(&b.start[2]));
        assert!(r.read_head().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_truncated_head_is_an_error_not_a_clean_end() {
        let mut r = Reader::new(&b"GET / HTTP/1.1\r\nHo"[..]);
        let err = r.read_head().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn reads_a_response_with_its_body() {
        let bytes = response(503, "Service Unavailable", "{\"ready\":false}", true);
        let mut r = Reader::new(&bytes[..]);
        let head = r.read_head().await.unwrap().unwrap();
        assert_eq!(head.start[1], "503");
        assert_eq!(head.header("CONTENT-LENGTH"), Some("15"));
        assert!(!head.keeps_alive("HTTP/1.1"));
        assert_eq!(r.read_body(&head).await.unwrap(), b"{\"ready\":false}");
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        let head = parse_head("GET / HTTP/1.0\r\nConnection: Keep-Alive").unwrap();
        assert!(head.keeps_alive("HTTP/1.0"));
        let head = parse_head("GET / HTTP/1.0").unwrap();
        assert!(!head.keeps_alive("HTTP/1.0"));
        assert!(parse_head("garbage").is_err());
    }
}
