//! A keep-alive HTTP/1.1 client for the benchmarks: one TCP connection, one request at a
//! time, the whole response read before the next. Small on purpose, so the load generator
//! costs the same for every side it measures.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The bytes of one request: `method path`, the tenant in `x-tenant` if any, and a JSON
/// body if any.
pub(crate) fn request(method: &str, path: &str, tenant: Option<&str>, json: Option<&str>) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(tenant) = tenant {
        head.push_str(&format!("x-tenant: {tenant}\r\n"));
    }
    match json {
        Some(body) => {
            head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len()));
            head.push_str(body);
        }
        None => head.push_str("\r\n"),
    }
    head.into_bytes()
}

/// One keep-alive connection.
pub(crate) struct Client {
    stream: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client { stream: BufReader::new(stream), line: String::new(), body: Vec::new() })
    }

    /// Sends `request` (see [`request`]) and reads the whole response: its status and body.
    pub(crate) async fn send(&mut self, request: &[u8]) -> io::Result<(u16, &[u8])> {
        self.stream.get_mut().write_all(request).await?;
        let mut status = None;
        let mut length = 0;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok());
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().map_err(|_| bad("a content-length that is no number"))?;
            }
        }
        let status = status.ok_or_else(|| bad("a response without a status line"))?;
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await?;
        Ok((status, &self.body))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
