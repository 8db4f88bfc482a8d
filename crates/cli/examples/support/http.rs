//! A minimal HTTP/1.1 client for the load harnesses: one keep-alive connection, one request at a
//! time, so that what is timed is the server and not a client library's pool.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Context, bail};

pub(crate) struct Connection {
    stream: TcpStream,
    host: String,
}

impl Connection {
    /// `url` is `http://host:port` (the scheme and a trailing slash are optional).
    pub(crate) fn open(url: &str) -> anyhow::Result<Connection> {
        let host = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let stream = TcpStream::connect(&host).with_context(|| format!("connect {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, host })
    }

    /// Sends one request and reads the whole response; returns its status and body.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n", self.host, body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes())?;
        self.stream.write_all(body)?;

        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                bail!("connection closed");
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let status: u16 = head.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>())
            })
            .transpose()?
            .context("the response has no content-length")?;
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        Ok((status, body))
    }
}
