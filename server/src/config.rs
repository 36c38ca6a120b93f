//! Server settings: the TOML config file (`rookery serve --config FILE`), with the
//! defaults every field falls back to. Owns parsing and checking the settings; the
//! command line overrides fields after loading (see the root binary's `serve`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `rookery serve` can be told. Unknown keys are an error, so a typo in
/// the config file never silently leaves a default in place.
///
/// The file is read through `ConfigFile`, which also accepts the flat `qap_*` keys
/// of earlier versions (each noted in [`Config::deprecated`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ConfigFile")]
pub struct Config {
    /// Address of the HTTP listener. Loopback unless TLS is configured.
    pub listen: SocketAddr,
    /// The data folder: the store (`rookery.db`), users' folders, services' files.
    pub data: PathBuf,
    /// Serve plain HTTP on a non-loopback address (logged loudly). Off by default.
    pub insecure_plaintext: bool,
    pub tls: Option<TlsConfig>,
    /// Load balancers whose `X-Forwarded-For` names the client (for the per-address
    /// login limits); from anyone else the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Where the registry lives: the `[store]` section.
    pub store: StoreConfig,
    /// The QAP1 (Rserve protocol) listeners and their options: the `[qap]` section.
    pub qap: QapConfig,
    pub limits: Limits,
    pub pool: PoolConfig,
    pub confine: crate::confine::ConfineConfig,
    /// The program the R pools re-execute as their zygote (default: this program,
    /// which must call `rookery_engine::run_zygote_if_requested` first in `main`).
    /// Not a config-file key: embedding programs and tests set it.
    pub zygote_program: Option<PathBuf>,
    /// Deprecated keys the file used, each with what replaces it; `rookery serve`
    /// logs them as warnings. Not a config-file key.
    pub deprecated: Vec<String>,
}

/// `[qap]`: the QAP1 listeners (RSclient, pyRserve and other Rserve clients) and how
/// they serve. Every listener is off unless set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QapConfig {
    /// Plain TCP, loopback addresses only (QAP1 logins are plaintext).
    pub listen: Option<SocketAddr>,
    /// A Unix socket (created mode 0666: clients still log in).
    pub unix: Option<PathBuf>,
    /// TLS from the first byte (the `[tls]` certificate); any address, since nothing
    /// crosses the network in clear.
    pub tls: Option<SocketAddr>,
    /// OCAP mode (loopback only): no login, no arbitrary code; each connection gets
    /// one capability, the function of a published service.
    pub ocap: Option<OcapConfig>,
    /// PEM RSA private key for the secure login (`CMD_keyReq`/`CMD_secLogin`, what
    /// RSclient's `RS.login` uses). Without it that login is unavailable.
    pub rsa_key: Option<PathBuf>,
    /// An opt-in anonymous identity for clients that cannot log in (benchmarks):
    /// connections on the loopback TCP listener and the Unix socket are logged in as
    /// this existing, non-admin user without a password. Logged at start-up.
    pub anonymous: Option<String>,
    /// Before answering an R error with status 127, send its message in an OOB_SEND
    /// message (user code 127, a character vector), which pyRserve's `oobCallback` and
    /// RSclient's `RS.oobCallbacks` receive. Off by default, like Rserve's `oob`.
    pub oob_errors: bool,
    /// Let R code in a QAP1 session send its client OOB messages: the Rserve
    /// package's `self.oobSend(what, code)` and `self.oobMessage(what, code)` (whose
    /// value is the client's reply), as Rserve's `oob enable`. Off by default, as
    /// there: a client must expect them (RSclient's `RS.oobCallbacks`, pyRserve's
    /// `oobCallback`). Code elsewhere (HTTP sessions, services, batch) gets an R error.
    pub oob: bool,
    /// Direct mode: on plain TCP and Unix-socket connections, each session's worker
    /// reads its client's messages and answers eval, voidEval and setSEXP itself (no
    /// hop through the server per call; Rserve's cost model), handing every other
    /// message back. The server keeps the audit log, the failure log, the call
    /// deadline and the idle deadline. On by default; TLS connections never use it.
    pub direct: bool,
}

impl Default for QapConfig {
    fn default() -> Self {
        QapConfig {
            listen: None,
            unix: None,
            tls: None,
            ocap: None,
            rsa_key: None,
            anonymous: None,
            oob_errors: false,
            oob: false,
            direct: true,
        }
    }
}

/// The config file as written: [`Config`]'s keys, plus the flat `qap_*` keys that
/// came before the `[qap]` section (still read, with a deprecation note). `qap` is
/// either that section or, as before, the address of the plain TCP listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
    tls: Option<TlsConfig>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    store: Option<StoreConfig>,
    qap: Option<QapKey>,
    limits: Option<Limits>,
    pool: Option<PoolConfig>,
    confine: Option<crate::confine::ConfineConfig>,
    qap_unix: Option<PathBuf>,
    qap_tls: Option<SocketAddr>,
    qap_ocap: Option<OcapConfig>,
    qap_rsa_key: Option<PathBuf>,
    qap_anonymous: Option<String>,
    qap_oob_errors: Option<bool>,
    qap_direct: Option<bool>,
}

/// `qap = "ADDR"` (the flat key of earlier versions) or `[qap]`.
#[derive(Debug)]
enum QapKey {
    Address(SocketAddr),
    Section(QapConfig),
}

impl<'de> Deserialize<'de> for QapKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = QapKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [qap] section, or the address of the QAP1 listener")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<QapKey, E> {
                v.parse().map(QapKey::Address).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<QapKey, A::Error> {
                QapConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(QapKey::Section)
            }
        }
        d.deserialize_any(Visit)
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = String;

    fn try_from(file: ConfigFile) -> Result<Config, String> {
        let defaults = Config::default();
        let mut deprecated = Vec::new();
        let section = matches!(&file.qap, Some(QapKey::Section(_)));
        let mut qap = match file.qap {
            Some(QapKey::Section(section)) => section,
            Some(QapKey::Address(addr)) => {
                deprecated.push("qap = \"ADDR\" is now [qap] listen = \"ADDR\"".to_owned());
                QapConfig {
                    listen: Some(addr),
                    ..QapConfig::default()
                }
            }
            None => QapConfig::default(),
        };
        let mut legacy = |flat: &str, key: &str| -> Result<(), String> {
            if section {
                return Err(format!(
                    "{flat} and a [qap] section: write it as [qap] {key} and drop {flat}"
                ));
            }
            deprecated.push(format!("{flat} is now [qap] {key}"));
            Ok(())
        };
        if let Some(v) = file.qap_unix {
            legacy("qap_unix", "unix")?;
            qap.unix = Some(v);
        }
        if let Some(v) = file.qap_tls {
            legacy("qap_tls", "tls")?;
            qap.tls = Some(v);
        }
        if let Some(v) = file.qap_ocap {
            legacy("qap_ocap", "ocap")?;
            qap.ocap = Some(v);
        }
        if let Some(v) = file.qap_rsa_key {
            legacy("qap_rsa_key", "rsa_key")?;
            qap.rsa_key = Some(v);
        }
        if let Some(v) = file.qap_anonymous {
            legacy("qap_anonymous", "anonymous")?;
            qap.anonymous = Some(v);
        }
        if let Some(v) = file.qap_oob_errors {
            legacy("qap_oob_errors", "oob_errors")?;
            qap.oob_errors = v;
        }
        if let Some(v) = file.qap_direct {
            legacy("qap_direct", "direct")?;
            qap.direct = v;
        }
        Ok(Config {
            listen: file.listen.unwrap_or(defaults.listen),
            data: file.data.unwrap_or(defaults.data),
            insecure_plaintext: file.insecure_plaintext.unwrap_or(false),
            tls: file.tls,
            trusted_proxies: file.trusted_proxies.unwrap_or_default(),
            store: file.store.unwrap_or_default(),
            qap,
            limits: file.limits.unwrap_or_default(),
            pool: file.pool.unwrap_or_default(),
            confine: file.confine.unwrap_or_default(),
            zygote_program: None,
            deprecated,
        })
    }
}

/// `[store]`: the registry (users, tokens, services, jobs, audit). Without a URL it is
/// the SQLite file `rookery.db` in the data folder (one node); with
/// `url = "postgres://USER@HOST:PORT/DB"` it is that PostgreSQL database, which
/// every node of a cluster shares. A password can stay out of the file: the
/// `ROOKERY_STORE_PASSWORD` environment variable supplies it.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: Option<String>,
    /// A folder every node mounts (NFS, say): published model files are written
    /// there once and each node copies the revisions it starts into its own data
    /// folder. Needed by a cluster whose services have model files.
    pub shared_dir: Option<PathBuf>,
    /// This node's id in the registry (`serve --node-id`); default: a fresh UUID.
    pub node_id: Option<String>,
    /// The URL other nodes reach this one at (`serve --advertise`), when it is not
    /// the address the listener binds (a container, a NAT).
    pub advertise: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    /// The URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(crate::store::redact_url))
            .field("shared_dir", &self.shared_dir)
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .finish()
    }
}

/// PEM files of the certificate chain and the private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The OCAP listener: where, and which service version it offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcapConfig {
    pub listen: SocketAddr,
    /// `NAME/VERSION` of a published service.
    pub service: String,
}

impl OcapConfig {
    /// `(name, version)`.
    pub fn service(&self) -> Option<(&str, &str)> {
        self.service.split_once('/')
    }
}

/// Request and resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Deadline of one R call (session execute, service call), in seconds.
    pub call_timeout_secs: u64,
    /// Deadline of one chunk of a batch job, in seconds.
    pub chunk_timeout_secs: u64,
    /// Rows per chunk of a batch job.
    pub batch_chunk_rows: usize,
    /// A session unused this long is closed, in seconds.
    pub session_idle_secs: u64,
    /// Open sessions per user, and in total (each holds one R process).
    pub sessions_per_user: usize,
    pub sessions_total: usize,
    /// Lifetime of an access token from `POST /login`, in seconds.
    pub token_ttl_secs: u64,
    /// How long a caller waits for a free worker before 503, in milliseconds.
    pub queue_timeout_ms: u64,
    /// Largest QAP1 message accepted (ERR_data_overflow beyond), in bytes.
    pub qap_max_message_bytes: u64,
    /// Bytes of one user's requests that may be arriving at once, over all their
    /// connections (HTTP bodies, QAP1 messages); 0 is no limit. Past it: HTTP 429
    /// `too_many_bytes_in_flight`, QAP1 ERR_data_overflow and close.
    pub max_inflight_bytes_per_user: u64,
    /// Bytes in flight over the whole server (requests still arriving, large
    /// answers still being sent, every user's); 0 is no limit. Past it a request
    /// waits up to a second, then gets HTTP 503 `memory_busy` with Retry-After
    /// (QAP1: ERR_data_overflow). Default 2 GiB.
    pub max_inflight_bytes: u64,
    /// How long a request may take to arrive once it has begun, in seconds: an HTTP
    /// request's headers, its body, one QAP1 message (header and payload), and a QAP1
    /// login after connecting. Past it the request is refused (HTTP 408) or the
    /// connection closed, so a slow or stalled client holds nothing for longer.
    pub read_timeout_secs: u64,
    /// Largest result one call may return, in bytes as it leaves its worker (a
    /// double is 8 bytes); 0 is no cap. Checked in the worker before the value is
    /// encoded or copied: HTTP 422 `result_too_large`, QAP1 ERR_object_too_big
    /// (Rserve's answer past its `maxsendbuf`). Default 256 MiB.
    pub max_result_bytes: u64,
    /// [`Limits::max_result_bytes`] for callers of one role (`admin`, `publisher`,
    /// `user`): `[limits.max_result_bytes_by_role] admin = 1073741824`.
    pub max_result_bytes_by_role: std::collections::BTreeMap<String, u64>,
}

impl Limits {
    /// The result cap of a caller with `role`.
    pub fn max_result_bytes_for(&self, role: crate::store::Role) -> u64 {
        self.max_result_bytes_by_role
            .get(role.as_str())
            .copied()
            .unwrap_or(self.max_result_bytes)
    }

    /// [`Limits::read_timeout_secs`] as a duration (at least one second).
    pub fn read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.read_timeout_secs.max(1))
    }
}

/// The R worker pools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Warm workers per published service version (default: one per CPU).
    pub service_workers: usize,
    /// Callers allowed to wait for a worker of one service before 503.
    pub max_queue: usize,
    /// Recycle a worker after this many calls (0: never).
    pub max_calls: u64,
    /// Recycle a worker whose private memory exceeds this many MiB.
    pub max_worker_mib: u64,
    /// Workers forked ahead for new sessions (HTTP and QAP1), so opening one takes
    /// a ready process instead of a fork (each idle one costs about 100 kB).
    pub session_spares: usize,
    /// Users who get their next session prepared ahead when they open one (leased
    /// account, folders, a confined worker), so that their next open takes it: a
    /// QAP1 client that connects per request pays no fork or confinement. At most
    /// one each; each holds one idle worker process for up to `session_ready_ms`.
    /// 0 turns it off.
    pub session_ready_users: usize,
    /// How long a session made ready ahead waits unused before it is discarded, in
    /// milliseconds (its owner's account returns to the pool only afterwards).
    pub session_ready_ms: u64,
    /// How long session workers and their callers poll for the next message before
    /// sleeping, in microseconds (see the engine's `PoolBuilder::spin`).
    pub session_spin_us: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from("rookery-data"),
            insecure_plaintext: false,
            tls: None,
            trusted_proxies: Vec::new(),
            store: StoreConfig::default(),
            qap: QapConfig::default(),
            limits: Limits::default(),
            pool: PoolConfig::default(),
            confine: crate::confine::ConfineConfig::default(),
            zygote_program: None,
            deprecated: Vec::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            call_timeout_secs: 60,
            chunk_timeout_secs: 600,
            batch_chunk_rows: 10_000,
            session_idle_secs: 1800,
            sessions_per_user: 4,
            sessions_total: 64,
            token_ttl_secs: 3600,
            queue_timeout_ms: 5_000,
            qap_max_message_bytes: 256 << 20,
            max_inflight_bytes_per_user: 512 << 20,
            max_inflight_bytes: 2 << 30,
            read_timeout_secs: 30,
            max_result_bytes: 256 << 20,
            max_result_bytes_by_role: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            service_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queue: 256,
            max_calls: 0,
            max_worker_mib: 2048,
            session_spares: 2,
            session_ready_users: 8,
            session_ready_ms: 2000,
            session_spin_us: 100,
        }
    }
}

/// A config file that cannot be used, or settings that contradict each other.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file; deprecated keys it used are in [`Config::deprecated`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Refuses settings that would be unsafe or cannot work: plain HTTP on a
    /// non-loopback address without `insecure_plaintext`, zero limits.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && self.tls.is_none() && !self.insecure_plaintext {
            return Err(ConfigError::Invalid(format!(
                "refusing to serve plain HTTP on {}: passwords and tokens would cross the \
                 network in clear. Configure [tls] cert and key, or pass \
                 --insecure-plaintext if something in front of Rookery terminates TLS",
                self.listen
            )));
        }
        if let Some(id) = &self.store.node_id {
            let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if id.is_empty() || id.len() > 64 || !id.chars().all(fits) {
                return Err(ConfigError::Invalid(format!(
                    "node id `{id}`: use 1 to 64 letters, digits, `-`, `_` or `.` (it names \
                     the node in its sessions' ids and URLs)"
                )));
            }
        }
        let qap = &self.qap;
        if let Some(addr) = qap.listen.filter(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::Invalid(format!(
                "refusing QAP1 on {addr}: QAP1 logins are plaintext, so the plain QAP1 \
                 listener binds loopback addresses only (use [qap] tls, or [qap] unix)"
            )));
        }
        if let Some(oc) = &qap.ocap {
            if !oc.listen.ip().is_loopback() || oc.service().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "[qap] ocap: listen must be a loopback address and service NAME/VERSION \
                     (got {} and {:?})",
                    oc.listen, oc.service
                )));
            }
        }
        if qap.anonymous.is_some() && qap.listen.is_none() && qap.unix.is_none() {
            return Err(ConfigError::Invalid(
                "[qap] anonymous serves only the loopback QAP1 listeners: set [qap] listen \
                 (a loopback address) or [qap] unix"
                    .into(),
            ));
        }
        if qap.tls.is_some() && self.tls.is_none() {
            return Err(ConfigError::Invalid(
                "[qap] tls needs a [tls] cert and key".into(),
            ));
        }
        let l = &self.limits;
        let largest = (l.max_body_bytes as u64).max(l.qap_max_message_bytes);
        if l.max_inflight_bytes_per_user != 0 && l.max_inflight_bytes_per_user < largest {
            return Err(ConfigError::Invalid(format!(
                "limits.max_inflight_bytes_per_user ({}) is below one request's limit ({largest}: \
                 limits.max_body_bytes, limits.qap_max_message_bytes); raise it or set 0 for none",
                l.max_inflight_bytes_per_user
            )));
        }
        if l.max_inflight_bytes != 0 && l.max_inflight_bytes < l.max_inflight_bytes_per_user {
            return Err(ConfigError::Invalid(format!(
                "limits.max_inflight_bytes ({}) is below limits.max_inflight_bytes_per_user \
                 ({}); raise it or set 0 for none",
                l.max_inflight_bytes, l.max_inflight_bytes_per_user
            )));
        }
        if let Some(role) = l
            .max_result_bytes_by_role
            .keys()
            .find(|r| !["admin", "publisher", "user"].contains(&r.as_str()))
        {
            return Err(ConfigError::Invalid(format!(
                "limits.max_result_bytes_by_role: no role `{role}` (admin, publisher, user)"
            )));
        }
        let zero = [
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            ("limits.call_timeout_secs", l.call_timeout_secs),
            ("limits.batch_chunk_rows", l.batch_chunk_rows as u64),
            ("limits.token_ttl_secs", l.token_ttl_secs),
            ("pool.service_workers", self.pool.service_workers as u64),
        ];
        match zero.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(ConfigError::Invalid(format!("{name} must be above 0"))),
            None => Ok(()),
        }
    }

    /// A pool builder with this config's zygote program, the variables `[confine]
    /// env` passes through to workers, and `limits.max_result_bytes` as the cap of
    /// calls that name none (batch chunks).
    pub fn pool_builder(&self) -> rookery_engine::PoolBuilder {
        let builder = rookery_engine::Pool::builder()
            .pass_env(self.confine.env.iter().cloned())
            .max_result_bytes(self.limits.max_result_bytes);
        match &self.zygote_program {
            Some(p) => builder.program(p),
            None => builder,
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.call_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c: Config =
            toml::from_str("listen = \"127.0.0.1:9000\"\n[limits]\nmax_body_bytes = 10\n").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.max_body_bytes, 10);
        assert_eq!(c.limits.call_timeout_secs, 60);
        c.check().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<Config>("listne = \"127.0.0.1:9000\"\n").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn plain_http_off_loopback_needs_the_explicit_flag() {
        let mut c = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("--insecure-plaintext"));
        c.insecure_plaintext = true;
        c.check().unwrap();
        c.insecure_plaintext = false;
        c.tls = Some(TlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        c.check().unwrap();
    }

    #[test]
    fn the_qap_section_sets_every_listener_and_option() {
        let c: Config = toml::from_str(
            "[qap]\nlisten = \"127.0.0.1:6311\"\nunix = \"/tmp/r.sock\"\n\
             rsa_key = \"k.pem\"\nanonymous = \"bench\"\noob_errors = true\n\
             oob = true\ndirect = false\n[qap.ocap]\nlisten = \"127.0.0.1:6312\"\nservice = \"m/1\"\n",
        )
        .unwrap();
        assert_eq!(c.qap.listen, Some("127.0.0.1:6311".parse().unwrap()));
        assert_eq!(c.qap.unix.as_deref(), Some(Path::new("/tmp/r.sock")));
        assert_eq!(c.qap.rsa_key.as_deref(), Some(Path::new("k.pem")));
        assert_eq!(c.qap.anonymous.as_deref(), Some("bench"));
        assert!(c.qap.oob_errors);
        assert!(c.qap.oob);
        assert!(!c.qap.direct);
        assert_eq!(c.qap.ocap.as_ref().unwrap().service(), Some(("m", "1")));
        assert!(c.deprecated.is_empty(), "{:?}", c.deprecated);
        c.check().unwrap();
    }

    #[test]
    fn the_flat_qap_keys_still_read_and_are_noted_as_deprecated() {
        let c: Config = toml::from_str(
            "qap = \"127.0.0.1:6311\"\nqap_unix = \"/tmp/r.sock\"\n\
             qap_rsa_key = \"k.pem\"\nqap_anonymous = \"bench\"\nqap_oob_errors = true\n\
             qap_direct = false\nlisten = \"127.0.0.1:9000\"\n\
             [qap_ocap]\nlisten = \"127.0.0.1:6312\"\nservice = \"m/1\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.qap.listen, Some("127.0.0.1:6311".parse().unwrap()));
        assert_eq!(c.qap.unix.as_deref(), Some(Path::new("/tmp/r.sock")));
        assert_eq!(c.qap.rsa_key.as_deref(), Some(Path::new("k.pem")));
        assert_eq!(c.qap.anonymous.as_deref(), Some("bench"));
        assert!(c.qap.oob_errors);
        assert!(!c.qap.direct);
        assert_eq!(c.qap.ocap.as_ref().unwrap().service(), Some(("m", "1")));
        assert_eq!(c.deprecated.len(), 7, "{:?}", c.deprecated);
        assert!(c.deprecated.iter().any(|d| d.contains("[qap] listen")));
        assert!(c
            .deprecated
            .iter()
            .any(|d| d.contains("qap_direct is now [qap] direct")));
        c.check().unwrap();
    }

    #[test]
    fn a_flat_qap_key_beside_the_section_is_an_error() {
        let err = toml::from_str::<Config>("qap_unix = \"/tmp/r.sock\"\n[qap]\ndirect = false\n")
            .unwrap_err();
        assert!(err.to_string().contains("[qap] unix"), "{err}");
        let err = toml::from_str::<Config>("[qap]\nlsten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("lsten"), "{err}");
        let err = toml::from_str::<Config>("qap = \"not an address\"\n").unwrap_err();
        assert!(err.to_string().contains("invalid socket address"), "{err}");
    }

    #[test]
    fn qap_listeners_are_checked() {
        let mut c = Config::default();
        c.qap.listen = Some("0.0.0.0:6311".parse().unwrap());
        assert!(c.check().unwrap_err().to_string().contains("loopback"));
        c.qap.listen = None;
        c.qap.anonymous = Some("bench".into());
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("[qap] anonymous"));
        c.qap.anonymous = None;
        c.qap.tls = Some("0.0.0.0:6311".parse().unwrap());
        assert!(c.check().unwrap_err().to_string().contains("[tls]"));
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut c = Config::default();
        c.limits.call_timeout_secs = 0;
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("call_timeout_secs"));
    }
}
