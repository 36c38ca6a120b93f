//! Requests between the nodes of a cluster. A session's R worker lives on the node
//! that opened it, and the session's id names that node (`NODE.UUID`); a request
//! for it that reaches another node (a load balancer without stickiness) is
//! forwarded here to the owner's registered address, streamed both ways, so any
//! node answers for any session. A forwarded request is signed with the cluster's
//! secret (kept in the store: only nodes can read it), and the receiving node never
//! forwards it again. An owner that is gone (no longer registered, silent, or
//! refusing connections) makes the request a 410 with a clear message, never a hang.
//!
//! ```text
//!  client ─▶ HAProxy ─▶ node B: /sessions/nodeA.7f3c.../execute
//!                        └─▶ signed hop (x-rookery-forwarded-by) ─▶ node A ─▶ R
//!  node A dead ─▶ node B answers 410 session_gone
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use hmac::{Hmac, Mac};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use sha2::Sha256;

use crate::error::AppError;
use crate::store::{NodeRecord, Store, StoreError};

/// Set on a request one node forwards to another: `NODE;UNIX-SECONDS;HMAC`.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-rookery-forwarded-by");
/// Set on every answer about a session: the node that holds it (a load balancer
/// that supports stickiness may route on it and skip the hop).
pub const NODE: HeaderName = HeaderName::from_static("x-rookery-node");
/// How far a signature's time may be from this node's clock, in seconds.
const SKEW: i64 = 60;
/// How long the list of nodes read from the store is used before it is read again.
const DIRECTORY_TTL: Duration = Duration::from_secs(1);
/// How long connecting to another node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers that belong to one connection, never passed along.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The node part and the UUID part of a cluster session id (`NODE.UUID`), or
/// `None` for a plain UUID (a single node's session).
pub fn split_session_id(id: &str) -> Option<(&str, &str)> {
    id.rsplit_once('.')
}

/// This node's way to other nodes.
#[derive(Debug)]
pub struct Forwarder {
    node: String,
    secret: Vec<u8>,
    store: Arc<dyn Store>,
    client: Client<HttpConnector, Body>,
    /// The nodes as last read, and when.
    directory: Mutex<Option<(Instant, Arc<Vec<NodeRecord>>)>>,
    /// How long a forwarded request may take in all (a session call's deadline
    /// and some).
    timeout: Duration,
}

impl Forwarder {
    /// Reads (or sets, first in the cluster) the nodes' shared secret. Blocking.
    pub fn open(
        store: Arc<dyn Store>,
        node: String,
        call_timeout: Duration,
    ) -> Result<Forwarder, StoreError> {
        let fresh: [u8; 32] = rand::random();
        let secret = store.cluster_secret(&fresh)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Forwarder {
            node,
            secret,
            store,
            client,
            directory: Mutex::new(None),
            timeout: call_timeout + Duration::from_secs(30),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn mac(&self, from: &str, at: i64, method: &Method, target: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        mac.update(format!("{from}\n{at}\n{method}\n{target}").as_bytes());
        mac
    }

    /// The header value that signs a request for `target` from this node.
    fn sign(&self, method: &Method, target: &str) -> HeaderValue {
        let at = crate::admin::now();
        let sig = hex::encode(
            self.mac(&self.node, at, method, target)
                .finalize()
                .into_bytes(),
        );
        HeaderValue::from_str(&format!("{};{at};{sig}", self.node))
            .expect("node ids and hex are header-safe")
    }

    /// The node that forwarded this request, when its signature holds.
    pub fn forwarded_by(&self, headers: &HeaderMap, method: &Method, uri: &Uri) -> Option<String> {
        let value = headers.get(FORWARDED_BY)?.to_str().ok()?;
        let mut parts = value.splitn(3, ';');
        let (from, at, sig) = (parts.next()?, parts.next()?, parts.next()?);
        let at: i64 = at.parse().ok()?;
        if (crate::admin::now() - at).abs() > SKEW {
            return None;
        }
        let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let sig = hex::decode(sig).ok()?;
        // Constant-time comparison.
        self.mac(from, at, method, target).verify_slice(&sig).ok()?;
        Some(from.to_owned())
    }

    /// The registered nodes (read from the store at most every second).
    async fn nodes(&self) -> Result<Arc<Vec<NodeRecord>>, AppError> {
        if let Some((at, nodes)) = &*self.directory.lock() {
            if at.elapsed() < DIRECTORY_TTL {
                return Ok(nodes.clone());
            }
        }
        let store = self.store.clone();
        let nodes = tokio::task::spawn_blocking(move || store.nodes())
            .await
            .map_err(|e| AppError::Internal(e.to_string()))??;
        let nodes = Arc::new(nodes);
        *self.directory.lock() = Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// Every other node that is alive.
    pub async fn others(&self) -> Result<Vec<NodeRecord>, AppError> {
        let now = crate::admin::now();
        Ok(self
            .nodes()
            .await?
            .iter()
            .filter(|n| n.id != self.node && now - n.heartbeat_at <= crate::nodes::SILENT_AFTER)
            .cloned()
            .collect())
    }

    /// Sends `req` (the whole original request, path `target`) to node `owner`,
    /// which holds `session`, and streams its answer back.
    pub async fn to_owner(
        &self,
        owner: &str,
        session: &str,
        target: &str,
        client: Option<std::net::IpAddr>,
        req: Request<Body>,
    ) -> Result<Response<Body>, AppError> {
        let gone = |why: String| {
            AppError::SessionGone(format!(
                "session `{session}` lived on node `{owner}`, which {why}: its R objects are \
                 lost; open a new session"
            ))
        };
        let now = crate::admin::now();
        let Some(node) = self.nodes().await?.iter().find(|n| n.id == owner).cloned() else {
            return Err(gone("is no longer registered".into()));
        };
        if now - node.heartbeat_at > crate::nodes::SILENT_AFTER {
            return Err(gone(format!(
                "has been silent for {} s",
                now - node.heartbeat_at
            )));
        }
        let (mut parts, body) = req.into_parts();
        let uri: Uri = format!("{}{target}", node.address.trim_end_matches('/'))
            .parse()
            .map_err(|e| AppError::Internal(format!("node `{owner}`'s address: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(AppError::NodeUnreachable(format!(
                "node `{owner}` is registered at {}; nodes forward to one another over \
                 http:// addresses on their private network only (serve --advertise)",
                node.address
            )));
        }
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(axum::http::header::HOST);
        parts
            .headers
            .insert(FORWARDED_BY, self.sign(&parts.method, target));
        if let Some(ip) = client {
            let mut chain = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("{v}, "))
                .unwrap_or_default();
            chain.push_str(&ip.to_string());
            if let Ok(v) = HeaderValue::from_str(&chain) {
                parts.headers.insert("x-forwarded-for", v);
            }
        }
        parts.uri = uri;
        let request = Request::from_parts(parts, body);
        let answer = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => {
                return Err(AppError::NodeUnreachable(format!(
                    "node `{owner}`, which holds session `{session}`, did not answer within \
                     {:?}",
                    self.timeout
                )))
            }
            Ok(Err(e)) if refused(&e) => return Err(gone("does not answer any more".into())),
            // A kept-alive connection that broke: if nothing listens there now, the
            // node has stopped (and its sessions with it).
            Ok(Err(_)) if !listening(&node.address).await => {
                return Err(gone("stopped during the call".into()))
            }
            Ok(Err(e)) => {
                return Err(AppError::NodeUnreachable(format!(
                    "node `{owner}`, which holds session `{session}`, failed during the call: \
                     {e}"
                )))
            }
            Ok(Ok(answer)) => answer,
        };
        let (mut parts, body) = answer.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// `GET target` on every other live node for `authorization`'s caller; each
    /// node's JSON answer, or the ids of the nodes that gave none.
    pub async fn gather(
        &self,
        target: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<(Vec<serde_json::Value>, Vec<String>), AppError> {
        let mut tasks = tokio::task::JoinSet::new();
        for node in self.others().await? {
            let mut req = Request::get(format!("{}{target}", node.address.trim_end_matches('/')))
                .header(FORWARDED_BY, self.sign(&Method::GET, target));
            if let Some(auth) = authorization {
                req = req.header(axum::http::header::AUTHORIZATION, auth.clone());
            }
            let Ok(req) = req.body(Body::empty()) else {
                continue;
            };
            let client = self.client.clone();
            tasks.spawn(async move {
                let answer = async {
                    let res = client.request(req).await.ok()?;
                    if !res.status().is_success() {
                        return None;
                    }
                    let bytes = http_body_util::BodyExt::collect(res.into_body())
                        .await
                        .ok()?
                        .to_bytes();
                    serde_json::from_slice::<serde_json::Value>(&bytes).ok()
                };
                let answer = tokio::time::timeout(Duration::from_secs(5), answer)
                    .await
                    .ok()
                    .flatten();
                (node.id, answer)
            });
        }
        let (mut answers, mut missing) = (Vec::new(), Vec::new());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((_, Some(answer))) => answers.push(answer),
                Ok((id, None)) => missing.push(id),
                Err(e) => tracing::warn!(error = %e, "asking another node failed"),
            }
        }
        missing.sort();
        Ok((answers, missing))
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether something accepts connections at `address` (`http://HOST:PORT`) now;
/// false only when the connection is refused (a timeout counts as listening: the
/// node may be busy or cut off, not gone).
async fn listening(address: &str) -> bool {
    let Some(authority) = address
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
    else {
        return true;
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority)).await {
        Ok(Err(e)) => e.kind() != std::io::ErrorKind::ConnectionRefused,
        _ => true,
    }
}

/// Whether nothing listens at the node's address any more (its process is gone).
fn refused(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}
