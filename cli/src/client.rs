//! The CLI's HTTP client for the local API of a running node: one HTTP/1.1
//! connection per request to the address in `config.json`, authenticated
//! with the token in `api-token`.
//!
//! The token is sent only to a listener that has proved it is the node: on
//! each connection the client first asks `GET /v1/hello?nonce=N` with a
//! fresh random nonce and checks the answer against
//! [`breakwater_node::api::api_proof`]`(token, N)`, which only a holder of
//! the token can compute. Another program squatting the API port (while
//! the node is down) gets the nonce, never the token or a request body.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use breakwater_node::DataDir;
use breakwater_node::api::api_proof;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long the listener has to answer the token challenge.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client of one node's API.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    token: String,
}

impl Client {
    /// The client for the node of `data_dir`.
    pub fn for_data_dir(data_dir: &DataDir) -> Result<Client> {
        let config = data_dir.config()?;
        let token = data_dir.token()?;
        Ok(Client {
            addr: config.api,
            token,
        })
    }

    /// The API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True when something answers at the API address.
    pub async fn reachable(&self) -> bool {
        tokio::net::TcpStream::connect(self.addr).await.is_ok()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| {
                anyhow!(
                    "no node running at {} ({e}); start it with `breakwater run`",
                    self.addr
                )
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("cannot talk HTTP to {}", self.addr))?;
        tokio::spawn(connection);
        self.verify_node(&mut sender).await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        sender
            .send_request(request)
            .await
            .with_context(|| format!("request to {} failed", self.addr))
    }

    /// Asks the listener to prove it holds the token; fails with one line
    /// if it does not.
    async fn verify_node(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    ) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Hello {
            proof: String,
        }
        let mut nonce = [0u8; 32];
        rand::rng().fill_bytes(&mut nonce);
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/hello?nonce={}", hex::encode(nonce)))
            .header(HOST, self.addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let unproven = || {
            anyhow!(
                "the listener at {} did not prove it is this node (no valid answer to the token challenge), so the token was not sent; another program may hold the API port",
                self.addr
            )
        };
        let response = tokio::time::timeout(HELLO_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| unproven())?
            .map_err(|_| unproven())?;
        if !response.status().is_success() {
            return Err(unproven());
        }
        let bytes = tokio::time::timeout(HELLO_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unproven())?
            .map_err(|_| unproven())?
            .to_bytes();
        let hello: Hello = serde_json::from_slice(&bytes).map_err(|_| unproven())?;
        let expected = api_proof(&self.token, &nonce);
        let proof = hex::decode(hello.proof.trim()).map_err(|_| unproven())?;
        if !constant_time_eq(&proof, &expected) {
            return Err(unproven());
        }
        sender.ready().await.map_err(|_| unproven())?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{}", error_message(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from the node at {}", self.addr))
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }

    /// Follows `GET path` as a server-sent-events stream, calling `on_data`
    /// with each event's data until the stream ends.
    pub async fn follow(
        &self,
        path: &str,
        mut on_data: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let response = self.send(Method::GET, path, None).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            bail!("{}", error_message(status, &bytes));
        }
        let mut buffer = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("event stream broke")?;
            if let Some(data) = frame.data_ref() {
                buffer.push_str(&String::from_utf8_lossy(data));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let data: Vec<&str> = block
                        .lines()
                        .filter_map(|line| line.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect();
                    if !data.is_empty() {
                        on_data(&data.join("\n"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn error_message(status: StatusCode, bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) if status == StatusCode::UNAUTHORIZED => {
            format!("the node refused the API token: {}", body.error)
        }
        Ok(body) => body.error,
        Err(_) => format!("the node answered {status}"),
    }
}

/// Percent-encodes a query value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
