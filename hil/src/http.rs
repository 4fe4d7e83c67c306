//! The definitions update server (192.0.2.80:80): plain HTTP/1.1 `GET`/`HEAD` of the files in
//! one directory, one request per connection (`Connection: close`), which is all the
//! appliance's updater needs. Like `portcullis defs serve`, it serves plain files only.

use std::path::{Path, PathBuf};

/// Largest request head accepted; a request line and a few headers fit easily.
const MAX_HEAD: usize = 16 * 1024;

/// One HTTP connection to the definitions server.
#[derive(Debug)]
pub struct FileServerSession {
    root: Option<PathBuf>,
    head: Vec<u8>,
    answered: Option<String>,
}

impl FileServerSession {
    /// A session serving the files in `root` (`None`: every path is 404).
    pub fn new(root: Option<&Path>) -> FileServerSession {
        FileServerSession {
            root: root.map(Path::to_path_buf),
            head: Vec::new(),
            answered: None,
        }
    }

    /// Whether the response has been produced (close once it is flushed).
    pub fn is_done(&self) -> bool {
        self.answered.is_some()
    }

    /// The request line and status of the answered request, for the LAN log.
    pub fn summary(&self) -> Option<&str> {
        self.answered.as_deref()
    }

    /// Feeds request bytes; appends the response to `out` once the head is complete.
    pub fn on_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.answered.is_some() {
            return;
        }
        self.head.extend_from_slice(input);
        let Some(end) = find(&self.head, b"\r\n\r\n") else {
            if self.head.len() > MAX_HEAD {
                self.respond(
                    "(oversized request)",
                    431,
                    "text/plain",
                    b"request too large\n",
                    true,
                    out,
                );
            }
            return;
        };
        let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
        let request_line = head.lines().next().unwrap_or("").to_string();
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let with_body = method != "HEAD";
        if method != "GET" && method != "HEAD" {
            self.respond(
                &request_line,
                405,
                "text/plain",
                b"only GET and HEAD\n",
                true,
                out,
            );
            return;
        }
        match self.file(target) {
            Some(bytes) => self.respond(
                &request_line,
                200,
                "application/octet-stream",
                &bytes,
                with_body,
                out,
            ),
            None => self.respond(
                &request_line,
                404,
                "text/plain",
                b"not found\n",
                with_body,
                out,
            ),
        }
    }

    /// The file a request target names, if it is a plain file inside the root.
    fn file(&self, target: &str) -> Option<Vec<u8>> {
        let root = self.root.as_ref()?;
        let path = target.split(['?', '#']).next()?.strip_prefix('/')?;
        let mut full = root.clone();
        for part in path.split('/') {
            if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
                return None;
            }
            full.push(part);
        }
        if !std::fs::metadata(&full).ok()?.is_file() {
            return None;
        }
        std::fs::read(full).ok()
    }

    fn respond(
        &mut self,
        request_line: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
        with_body: bool,
        out: &mut Vec<u8>,
    ) {
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Request Header Fields Too Large",
        };
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        if with_body {
            out.extend_from_slice(body);
        }
        self.answered = Some(format!("{request_line} -> {status} ({} bytes)", body.len()));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(root: Option<&Path>, request: &str) -> String {
        let mut s = FileServerSession::new(root);
        let mut out = Vec::new();
        let (a, b) = request.split_at(request.len() / 2);
        s.on_bytes(a.as_bytes(), &mut out);
        s.on_bytes(b.as_bytes(), &mut out);
        assert!(s.is_done());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn files_in_the_root_are_served_with_their_length() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), b"{\"v\":1}").unwrap();
        let r = get(
            Some(dir.path()),
            "GET /manifest.json HTTP/1.1\r\nHost: 192.0.2.80\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 7\r\n"));
        assert!(r.ends_with("\r\n\r\n{\"v\":1}"));
        let h = get(Some(dir.path()), "HEAD /manifest.json HTTP/1.1\r\n\r\n");
        assert!(h.ends_with("\r\n\r\n"));
    }

    #[test]
    fn paths_outside_the_root_and_missing_files_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for target in ["/../etc/passwd", "/sub", "/nope", "relative"] {
            let r = get(Some(dir.path()), &format!("GET {target} HTTP/1.1\r\n\r\n"));
            assert!(r.starts_with("HTTP/1.1 404"), "{target}: {r}");
        }
        assert!(get(None, "GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(None, "POST /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }
}
