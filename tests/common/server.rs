//! `dishcam serve` for tests: the built binary on an ephemeral loopback port, with a private
//! `DISHCAM_HOME`, and a small HTTP/1.1 client over a plain TCP socket, so that tests can send
//! exactly the bytes they mean (malformed bodies included).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::{lite_pack, ort_library};

/// A running server; killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
    pub home: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `dishcam serve --bind 127.0.0.1:0 ARGS...` on the installed lite pack and waits
    /// for the `listening on http://ADDR` line.
    ///
    /// It uses the real `DISHCAM_HOME` (where `models pull` built the recipe index) and must
    /// not write to it: tests that teach use [`Server::start_private`].
    pub fn start(args: &[&str]) -> Server {
        Server::spawn(args, None)
    }

    /// As [`Server::start`] with a private `DISHCAM_HOME` (its own overlay: no recipe index).
    pub fn start_private(args: &[&str]) -> Server {
        Server::spawn(args, Some(tempfile::tempdir().unwrap()))
    }

    fn spawn(args: &[&str], home: Option<tempfile::TempDir>) -> Server {
        let pack = lite_pack().dir;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dishcam"));
        if let Some(h) = &home {
            cmd.env("DISHCAM_HOME", h.path());
        }
        let mut child = cmd
            .arg("serve")
            .args(["--bind", "127.0.0.1:0", "--pack", pack.to_str().unwrap()])
            .args(args)
            .env("ORT_DYLIB_PATH", ort_library())
            .env("DISHCAM_LOG", "warn")
            .env_remove("DISHCAM_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dishcam serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on http://") {
                        break a.parse().expect("an address");
                    }
                }
                _ => {
                    let status = child.wait();
                    panic!("dishcam serve exited before listening: {status:?}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { addr, child, home }
    }

    /// Sends a request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(self.addr, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], &[])
    }

    pub fn get_auth(&self, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request("GET", path, &[("Authorization", &auth)], &[])
    }

    /// POSTs a multipart form: (field, Some(file name) or None for a text field, bytes).
    pub fn post_form(
        &self,
        path: &str,
        fields: &[(&str, Option<&str>, &[u8])],
        headers: &[(&str, &str)],
    ) -> Response {
        let (ct, body) = multipart(fields);
        let mut h = vec![("Content-Type", ct.as_str())];
        h.extend_from_slice(headers);
        self.request("POST", path, &h, &body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A multipart/form-data body and its content type.
pub fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "dishcam-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        write!(body, "--{boundary}\r\n").unwrap();
        match file {
            Some(f) => write!(
                body,
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .unwrap(),
            None => write!(body, "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").unwrap(),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: status {} body {}", self.status, self.text()))
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    send_raw(addr, &raw)
}

/// Sends raw bytes and parses the response (the server may answer before reading it all).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Response {
    exchange(addr, raw, false).unwrap_or_else(|| {
        panic!(
            "no response to {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })
}

/// Sends raw bytes, then closes the sending side (a client that gives up mid-request); the
/// server may answer, or only close.
pub fn send_truncated(addr: SocketAddr, raw: &[u8]) -> Option<Response> {
    exchange(addr, raw, true)
}

fn exchange(addr: SocketAddr, raw: &[u8], half_close: bool) -> Option<Response> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // A refused upload may be answered and the connection closed before it is all sent.
    let _ = s.write_all(raw);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer was read (the server closed with unread input).
            Err(_) if !out.is_empty() => break,
            Err(_) if half_close => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    (!out.is_empty()).then(|| parse(&out))
}

fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// A photo of the shared Food-101 data, or `None` (with the SKIPPED line) when it is absent.
pub fn shared_photo(test: &str, rel: &str) -> Option<Vec<u8>> {
    let dir = super::common::shared_data(test)?;
    let p = dir.join(rel);
    Some(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}
