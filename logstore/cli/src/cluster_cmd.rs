//! `woodpecker cluster status`: the members of a LogStore cluster as one node's gossip view shows them,
//! read from its admin HTTP port (`GET /admin/memberlist`, as upstream's wpcli does).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::{ClusterCommand, OutputFormat};

/// Largest answer accepted from a node (a member list of thousands of nodes fits easily).
const MAX_BODY: usize = 16 << 20;

pub async fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Status { admin, format, timeout_secs } => {
            let limit = Duration::from_secs(timeout_secs.max(1));
            let mut errors = Vec::new();
            for addr in &admin {
                match get_json(addr, "/admin/memberlist", limit).await {
                    Ok(Value::Array(members)) => {
                        print_members(addr, &members, format);
                        return Ok(());
                    }
                    Ok(other) => errors.push(format!("{addr}: not a member list: {other}")),
                    Err(e) => errors.push(format!("{addr}: {e:#}")),
                }
            }
            bail!("no node answered: {}", errors.join("; "))
        }
    }
}

fn print_members(from: &str, members: &[Value], format: OutputFormat) {
    let field = |m: &Value, k: &str| match m.get(k) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".to_owned(),
    };
    match format {
        OutputFormat::Json => {
            for m in members {
                println!("{m}");
            }
        }
        OutputFormat::Text => {
            let alive = members.iter().filter(|m| m.get("alive") == Some(&Value::Bool(true))).count();
            println!("{} members ({alive} alive), as {from} sees them", members.len());
            let header = ["NAME", "STATE", "ALIVE", "REGION", "ZONE", "GROUP", "SERVICE", "LOAD"];
            let rows: Vec<[String; 8]> = members
                .iter()
                .map(|m| {
                    let state = match field(m, "state").as_str() {
                        "-" => "active".to_owned(),
                        s => s.to_owned(),
                    };
                    let load =
                        m.get("load_factor").and_then(Value::as_f64).map_or("-".to_owned(), |l| format!("{l:.2}"));
                    [
                        field(m, "name"),
                        state,
                        field(m, "alive"),
                        field(m, "region"),
                        field(m, "az"),
                        field(m, "resource_group"),
                        field(m, "service_addr"),
                        load,
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.len());
                }
            }
            let line = |cells: Vec<&str>| {
                let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
                println!("{}", padded.join("  ").trim_end());
            };
            line(header.to_vec());
            for r in &rows {
                line(r.iter().map(String::as_str).collect());
            }
        }
    }
}

/// `GET path` on `addr` (host:port) over plain HTTP/1.1, parsed as JSON; bounded by `limit`.
async fn get_json(addr: &str, path: &str, limit: Duration) -> Result<Value> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.context("send the request")?;
        let mut raw = Vec::new();
        (&mut stream).take(MAX_BODY as u64 + 1).read_to_end(&mut raw).await.context("read the answer")?;
        if raw.len() > MAX_BODY {
            bail!("the answer is larger than {MAX_BODY} bytes");
        }
        Ok::<_, anyhow::Error>(raw)
    };
    let raw =
        tokio::time::timeout(limit, exchange).await.map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))??;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!("{path} answered HTTP {status}");
    }
    let mut body = raw[split + 4..].to_vec();
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"))
    {
        body = dechunk(&body).context("a malformed chunked answer")?;
    }
    serde_json::from_slice(&body).with_context(|| format!("{path} did not answer JSON"))
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").context("a chunk size line")?;
        let size_text = std::str::from_utf8(&body[..eol])?.split(';').next().unwrap_or("").trim().to_owned();
        let size = usize::from_str_radix(&size_text, 16).with_context(|| format!("chunk size {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("a chunk of {size} bytes is cut short");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_bad_ones_refused() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
        assert!(dechunk(b"zz\r\nabc\r\n").is_err());
        assert!(dechunk(b"10\r\nabc\r\n").is_err(), "a chunk shorter than its size");
    }
}
