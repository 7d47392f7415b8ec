//! A one-shot local HTTP server for tests of outbound calls: it answers each
//! of `n` connections with a fixed response and hands back what it received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread;

/// One received request: the head (request line and headers) and the body.
pub struct Received {
    /// Request line and header lines, CRLF-terminated, up to the blank line.
    pub head: String,
    /// The body (by `Content-Length`).
    pub body: Vec<u8>,
}

/// Serves `n` requests with `response` (a complete HTTP/1.1 response);
/// returns the base URL and a handle yielding what arrived.
pub fn serve(n: usize, response: String) -> (String, thread::JoinHandle<Vec<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..n {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("length");
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).expect("body");
            let mut stream = stream;
            stream.write_all(response.as_bytes()).expect("write");
            got.push(Received { head, body });
        }
        got
    });
    (format!("http://{addr}"), handle)
}
