//! `--server URL`: chunks scored by a remote `rookery serve` through its batch job
//! API. Each chunk is one job: `POST /api/v1/services/{name}/{version}/batch` with
//! the chunk as an Arrow IPC stream, then `GET /api/v1/jobs/{id}` until it ends,
//! then `GET /api/v1/jobs/{id}/result`. A chunk whose body would pass the server's
//! size limit (`--max-body`, or a 413 answer) is split in halves and sent as
//! several jobs. Ctrl-C cancels the jobs in flight (`DELETE /api/v1/jobs/{id}`).
//! Through a load balancer a node may die mid-run: requests that fail on the way
//! are sent again for a while (see `RemoteScorer::send`).
//!
//! Speaks plain `http://` only (like `rookery bench http`), one connection per
//! request. Owns the client side of that API; it must not order or write chunks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rookery_server::formats::arrow::ARROW_STREAM;
use serde_json::Value as Json;

use super::convert::{batch_to_ipc, value_to_batch};
use super::score::{check_rows, Failure, Scorer};

/// Longest pause between two polls of a job.
const MAX_POLL: Duration = Duration::from_millis(250);
/// How long a request that failed on its way (no connection, 502, 503, 504) is tried
/// again before the chunk fails.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// A remote server's service.
#[derive(Debug)]
pub struct RemoteScorer {
    authority: String,
    /// The URL's path, without a trailing `/` (usually empty).
    prefix: String,
    token: Option<String>,
    service: String,
    version: String,
    jobs: usize,
    max_body: usize,
    cancelled: AtomicBool,
    runtime: tokio::runtime::Runtime,
}

/// `http://host:port[/prefix]` -> (`host:port`, `/prefix`).
fn parse_url(url: &str) -> Result<(String, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--server `{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "--server `{url}`: https is not supported here yet; use http:// on \
                 loopback or through a tunnel"
            ))
        }
        _ => return Err(format!("--server `{url}`: expected http://HOST:PORT")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--server `{url}`: no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok((format!("{}:{port}", authority.host()), prefix))
}

/// The `error.message` of a JSON error body, else the body itself (shortened).
fn server_message(body: &[u8]) -> String {
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|j| j["error"]["message"].as_str());
    match message {
        Some(m) => m.to_owned(),
        None => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

impl RemoteScorer {
    /// Checks that `service` (`NAME[@VERSION]`; the newest version when none is
    /// given) can be called at `url` with `token`.
    pub fn connect(
        url: &str,
        service: &str,
        token: Option<String>,
        jobs: usize,
        max_body: usize,
    ) -> Result<RemoteScorer, String> {
        let (authority, prefix) = parse_url(url)?;
        let (name, version) = super::source::parse_service(service)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("rookery-batch-http")
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let mut scorer = RemoteScorer {
            authority,
            prefix,
            token,
            service: name,
            version: version.unwrap_or_default(),
            jobs: jobs.max(1),
            max_body: max_body.max(1024),
            cancelled: AtomicBool::new(false),
            runtime,
        };
        if scorer.version.is_empty() {
            scorer.version = scorer.newest_version()?;
        }
        let path = format!("/api/v1/services/{}/{}", scorer.service, scorer.version);
        let (status, body) = scorer.send(Method::GET, &path, None)?;
        if status != 200 {
            return Err(format!(
                "service {}@{} at {url}: {status} {}",
                scorer.service,
                scorer.version,
                server_message(&body)
            ));
        }
        Ok(scorer)
    }

    fn newest_version(&self) -> Result<String, String> {
        let (status, body) = self.send(Method::GET, "/api/v1/services", None)?;
        if status != 200 {
            return Err(format!(
                "listing services: {status} {}",
                server_message(&body)
            ));
        }
        let list: Json = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let versions = list["services"].as_array().cloned().unwrap_or_default();
        let newest = versions
            .iter()
            .filter(|s| s["name"] == self.service.as_str())
            .max_by_key(|s| s["created_at"].as_i64().unwrap_or(0));
        newest
            .and_then(|s| s["version"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("the server has no service `{}` you may call", self.service))
    }

    /// One request on a fresh connection: status and body. A connection that
    /// fails, or a 502/503/504 (a node behind a load balancer that died or is
    /// unready), is tried again for up to [`RETRY_FOR`]: every request here may be
    /// repeated (a job sent twice is scored twice, and only the answer of the job
    /// whose id came back is used).
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        let body = body.map(Bytes::from);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let outcome = self
                .runtime
                .block_on(self.exchange(method.clone(), path, body.clone()))
                .map_err(|e| format!("talking to {}: {e}", self.authority));
            let again = match &outcome {
                Ok((status, _)) => matches!(status, 502..=504),
                Err(_) => true,
            };
            if !again || started.elapsed() >= RETRY_FOR || self.cancelled.load(Ordering::SeqCst) {
                return outcome;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        let stream = tokio::net::TcpStream::connect(&self.authority).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, ARROW_STREAM);
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// Scores `batch` as one job, or as several when it is too large for one body.
    fn score_split(&self, batch: &RecordBatch, first_row: usize) -> Result<RecordBatch, Failure> {
        let body = batch_to_ipc(batch)?;
        let rows = batch.num_rows();
        if body.len() <= self.max_body || rows < 2 {
            match self.run_job(body, first_row, rows)? {
                Some(out) => return Ok(out),
                None if rows < 2 => {
                    return Err(Failure::Failed(
                        "one row is larger than the server's request size limit".into(),
                    ))
                }
                None => {}
            }
        }
        let half = rows / 2;
        let a = self.score_split(&batch.slice(0, half), first_row)?;
        let b = self.score_split(&batch.slice(half, rows - half), first_row + half)?;
        arrow_select::concat::concat_batches(&a.schema(), &[a.clone(), b])
            .map_err(|e| Failure::Failed(format!("joining the halves of a chunk: {e}")))
    }

    /// Runs one job; `None` when the server refused the body as too large.
    fn run_job(
        &self,
        body: Vec<u8>,
        first_row: usize,
        rows: usize,
    ) -> Result<Option<RecordBatch>, Failure> {
        let path = format!("/api/v1/services/{}/{}/batch", self.service, self.version);
        let (status, reply) = self.send(Method::POST, &path, Some(body))?;
        match status {
            202 => {}
            413 => return Ok(None),
            _ => {
                return Err(Failure::Failed(format!(
                    "the server refused the chunk ({status}): {} (its row 1 is input row {})",
                    server_message(&reply),
                    first_row + 1
                )));
            }
        }
        let job: Json = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let finished = self.wait(&id)?;
        match finished["state"].as_str() {
            Some("succeeded") => self.fetch(&id, rows).map(Some),
            Some(state) => Err(Failure::Failed(format!(
                "the server's job {id} {state}: {}",
                finished["error"].as_str().unwrap_or("no reason given")
            ))),
            None => Err(Failure::Failed(format!("job {id}: no state in {finished}"))),
        }
    }

    /// Polls job `id` until it ends; cancels it on Ctrl-C.
    fn wait(&self, id: &str) -> Result<Json, Failure> {
        let path = format!("/api/v1/jobs/{id}?result=false");
        let mut pause = Duration::from_millis(5);
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                let _ = self.send(Method::DELETE, &format!("/api/v1/jobs/{id}"), None);
                return Err(Failure::Cancelled);
            }
            let (status, body) = self.send(Method::GET, &path, None)?;
            if status != 200 {
                return Err(Failure::Failed(format!(
                    "job {id}: {status} {}",
                    server_message(&body)
                )));
            }
            let job: Json = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return Ok(job);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    fn fetch(&self, id: &str, rows: usize) -> Result<RecordBatch, Failure> {
        let (status, body) = self.send(Method::GET, &format!("/api/v1/jobs/{id}/result"), None)?;
        if status != 200 {
            return Err(Failure::Failed(format!(
                "job {id} result: {status} {}",
                server_message(&body)
            )));
        }
        let text = std::str::from_utf8(&body).map_err(|e| e.to_string())?;
        let value = rookery_engine::value::json::from_json(text)
            .map_err(|e| format!("job {id}: the result is not JSON: {}", e.message))?;
        let out = value_to_batch(&value)?;
        check_rows(&out, rows)?;
        Ok(out)
    }
}

impl Scorer for RemoteScorer {
    fn score(&self, batch: &RecordBatch, first_row: usize) -> Result<RecordBatch, Failure> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Failure::Cancelled);
        }
        self.score_split(batch, first_row)
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn shutdown(&self) {}

    fn parallelism(&self) -> usize {
        self.jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080"),
            Ok(("127.0.0.1:8080".into(), String::new()))
        );
        assert_eq!(
            parse_url("http://localhost/rookery/"),
            Ok(("localhost:80".into(), "/rookery".into()))
        );
        assert!(parse_url("https://x").unwrap_err().contains("https"));
        assert!(parse_url("ftp://x").is_err());
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"error":{"code":"invalid","message":"column x1 row 3: bad"}}"#;
        assert_eq!(server_message(body), "column x1 row 3: bad");
        assert_eq!(server_message(b"plain"), "plain");
    }
}
