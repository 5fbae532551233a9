//! A small HTTP/1.1 client for the order API (one request per connection),
//! so the demo, the load generator and the tests call the service the way
//! `curl` does, without a second HTTP stack.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::OrderRow;
use crate::event::Order;
use crate::order_service::NewOrder;

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the order API at {addr}"))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an HTTP response without a header end")?;
    let status_line = String::from_utf8_lossy(&response[..split]);
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("a bad status line: {status_line}"))?;
    let chunked = status_line
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut body = response[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((code, body))
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line]).trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        let start = line + 2;
        out.extend_from_slice(data.get(start..start + size).context("a short chunk")?);
        data = &data[(start + size + 2).min(data.len())..];
    }
}

/// `POST /orders`; the created order.
///
/// # Errors
/// Connecting, or a status other than 201 (with the body).
pub async fn place_order(
    addr: SocketAddr,
    order: &NewOrder,
    correlation_id: Option<&str>,
) -> anyhow::Result<OrderRow> {
    let headers: Vec<(&str, &str)> = correlation_id
        .map(|c| ("X-Correlation-Id", c))
        .into_iter()
        .collect();
    let (code, body) = request(
        addr,
        "POST",
        "/orders",
        &headers,
        &serde_json::to_vec(order)?,
    )
    .await?;
    if code != 201 {
        bail!(
            "POST /orders answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    parse_row(&body)
}

/// `GET /orders/{id}`; `None` for 404.
///
/// # Errors
/// Connecting, or another status.
pub async fn get_order(addr: SocketAddr, id: &str) -> anyhow::Result<Option<OrderRow>> {
    let (code, body) = request(addr, "GET", &format!("/orders/{id}"), &[], b"").await?;
    match code {
        200 => parse_row(&body).map(Some),
        404 => Ok(None),
        _ => bail!(
            "GET /orders/{id} answered {code}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

fn parse_row(body: &[u8]) -> anyhow::Result<OrderRow> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Row {
        #[serde(flatten)]
        order: Order,
        correlation_id: String,
        status: String,
    }
    let r: Row = serde_json::from_slice(body)
        .with_context(|| format!("not an order: {}", String::from_utf8_lossy(body)))?;
    Ok(OrderRow {
        order: r.order,
        correlation_id: r.correlation_id,
        status: r.status,
    })
}
