//! Published services: for each live `(name, version)` a warm pool whose zygote ran
//! the service's code (model loaded) in the version's own folder of model files.
//! Owns publishing (files written, pool started and checked before anything is
//! swapped in), updating a version in place without dropping calls in flight,
//! retiring, and calling. The catalogue itself lives in the store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::RwLock;
use rookery_engine::{CallOptions, Pool, Value};
use serde::Deserialize;

use super::Error;
use crate::admin::now;
use crate::config::Config;
use crate::formats::schema::Schema;
use crate::store::{ServiceEnv, ServiceRecord};

use super::blocking;
use super::sessions::is_r_name;

/// The body of `POST /api/v1/services`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// R code run once in the service's zygote: load the model, define the function.
    pub code: String,
    /// The function called with the input data frame.
    pub function: String,
    /// The declared input schema (see `formats::schema`).
    pub inputs: serde_json::Value,
    /// The declared output, documented in the OpenAPI description.
    #[serde(default)]
    pub outputs: serde_json::Value,
    /// Model files, base64-encoded, by file name; the code finds them in its working
    /// directory (`readRDS("model.rds")`).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Environment variables only this service's zygote and workers see (a database
    /// password the code needs, say): never returned by any route, never logged.
    #[serde(default)]
    pub env: ServiceEnv,
}

/// Most variables in a service's `env`.
const MAX_ENV_VARS: usize = 128;
/// Most bytes of names and values together in a service's `env`.
const MAX_ENV_BYTES: usize = 64 << 10;
/// Names a service may not set: what the worker's environment is built from (see
/// `rookery_engine::pool::worker_env`) and what would change how R or the dynamic
/// linker start.
const RESERVED_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "SHELL"];
const RESERVED_ENV_PREFIXES: &[&str] = &["R_", "LD_", "ROOKERY_"];

/// Checks a service's `env`: names are shell-style (`[A-Za-z_][A-Za-z0-9_]*`) and
/// not reserved, values hold no NUL, and the whole stays small. An error names the
/// variable, never its value.
pub fn check_env(env: &ServiceEnv) -> Result<(), Error> {
    if env.0.len() > MAX_ENV_VARS {
        return Err(Error::BadInput(format!(
            "env: at most {MAX_ENV_VARS} variables, got {}",
            env.0.len()
        )));
    }
    let bytes: usize = env.0.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(Error::BadInput(format!(
            "env: at most {MAX_ENV_BYTES} bytes of names and values, got {bytes}"
        )));
    }
    for (name, value) in &env.0 {
        let shell_name = name.len() <= 128
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !shell_name {
            return Err(Error::BadInput(format!(
                "env: `{name}` is not a variable name (letters, digits and `_`, not \
                 starting with a digit, at most 128)"
            )));
        }
        let upper = name.to_ascii_uppercase();
        if RESERVED_ENV.contains(&upper.as_str())
            || RESERVED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
        {
            return Err(Error::BadInput(format!(
                "env: `{name}` is set by the server for every worker; a service may not \
                 set {} or names starting with {}",
                RESERVED_ENV.join(", "),
                RESERVED_ENV_PREFIXES.join(", ")
            )));
        }
        if value.contains('\0') {
            return Err(Error::BadInput(format!(
                "env: the value of `{name}` holds a NUL byte"
            )));
        }
    }
    Ok(())
}

/// A version that is serving.
#[derive(Debug)]
pub struct LiveService {
    pub record: ServiceRecord,
    pub schema: Schema,
    pub pool: Pool,
    dir: PathBuf,
    /// The pool's temp dir, when it is confined.
    temp: Option<PathBuf>,
    /// The service's worker account, held while the pool lives.
    _lease: Option<crate::confine::Lease>,
}

type Key = (String, String);

/// A model file: its plain name and its bytes.
pub type ModelFile = (String, Vec<u8>);

/// The live services.
#[derive(Debug)]
pub struct Services {
    root: PathBuf,
    /// `<shared_dir>/services`, when the nodes of a cluster share a folder
    /// (`[store] shared_dir`): model files are written there once, and each node
    /// copies a revision it lacks into its own folder.
    shared: Option<PathBuf>,
    config: Arc<Config>,
    confiner: Arc<crate::confine::Confiner>,
    live: RwLock<HashMap<Key, Arc<LiveService>>>,
    /// Held while this node publishes (the pool started, then the record stored)
    /// and while it reconciles with the store, so that neither sees the other's
    /// half-done work.
    pub changing: tokio::sync::Mutex<()>,
    /// Revisions that failed to start here (by `updated_at`), not retried until
    /// the version changes again.
    failed: parking_lot::Mutex<HashMap<Key, i64>>,
}

/// What a [`Services::reconcile`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub started: usize,
    pub retired: usize,
    pub failed: usize,
}

impl Services {
    pub fn new(config: Arc<Config>, confiner: Arc<crate::confine::Confiner>) -> Services {
        Services {
            root: config.data.join("services"),
            shared: config.store.shared_dir.as_ref().map(|d| d.join("services")),
            changing: tokio::sync::Mutex::new(()),
            failed: parking_lot::Mutex::new(HashMap::new()),
            config,
            confiner,
            live: RwLock::new(HashMap::new()),
        }
    }

    /// The live version `name/version`.
    pub fn get(&self, name: &str, version: &str) -> Option<Arc<LiveService>> {
        self.live
            .read()
            .get(&(name.to_owned(), version.to_owned()))
            .cloned()
    }

    /// Every live version.
    pub fn all(&self) -> Vec<Arc<LiveService>> {
        let mut all: Vec<_> = self.live.read().values().cloned().collect();
        all.sort_by(|a, b| {
            (&a.record.name, &a.record.version).cmp(&(&b.record.name, &b.record.version))
        });
        all
    }

    /// Checks a spec before anything is written.
    pub fn check(spec: &ServiceSpec) -> Result<(Schema, Vec<ModelFile>), Error> {
        check_service_name(&spec.name)?;
        check_version(&spec.version)?;
        if !is_r_name(&spec.function) {
            return Err(Error::BadInput(format!(
                "`function` must be an R function name, got `{}`",
                spec.function
            )));
        }
        check_env(&spec.env)?;
        let schema =
            Schema::parse(&spec.inputs).map_err(|e| Error::BadInput(format!("inputs: {e}")))?;
        let files = spec
            .files
            .iter()
            .map(|(name, b64)| decode_file(name, b64))
            .collect::<Result<_, _>>()?;
        Ok((schema, files))
    }

    /// The folder of a revision's model files: `<data>/services/NAME/VERSION/rev-T`,
    /// where `T` is the record's `updated_at` (unique per version, see [`record_for`]).
    fn dir_of(&self, record: &ServiceRecord) -> PathBuf {
        revision_dir(&self.root, record)
    }

    /// Brings this node's live versions in line with the store's: starts each
    /// version whose stored revision is newer than the one running here (or that
    /// does not run here), and retires each one the store no longer has live. Used
    /// by every node of a cluster, after another node published, updated or
    /// retired a version.
    ///
    /// The store is read under [`Services::changing`]: a list read before a
    /// publish here finished would not hold that version, and would retire it.
    /// A store that does not answer changes nothing.
    pub async fn reconcile(
        &self,
        store: Arc<dyn crate::store::Store>,
    ) -> Result<Reconciled, Error> {
        let _changing = self.changing.lock().await;
        let stored = blocking(move || store.services()).await??;
        let mut done = Reconciled::default();
        let wanted: HashMap<Key, i64> = stored
            .iter()
            .map(|r| ((r.name.clone(), r.version.clone()), r.updated_at))
            .collect();
        for record in stored {
            let key = (record.name.clone(), record.version.clone());
            let newer = self
                .get(&key.0, &key.1)
                .is_none_or(|l| l.record.updated_at < record.updated_at);
            if !newer || self.failed.lock().get(&key) == Some(&record.updated_at) {
                continue;
            }
            let what = format!("{}/{}", key.0, key.1);
            let started = match Schema::parse(&record.inputs) {
                Ok(schema) => {
                    let updated_at = record.updated_at;
                    self.start(record, schema).await.map(|_| updated_at)
                }
                Err(e) => Err(Error::BadInput(format!("its stored inputs: {e}"))),
            };
            match started {
                Ok(at) => {
                    tracing::info!(service = %what, revision = at, "started a version published elsewhere");
                    done.started += 1;
                }
                Err(e) => {
                    tracing::error!(service = %what, error = %e, "a version published elsewhere did not start here");
                    let at = wanted.get(&key).copied().unwrap_or_default();
                    self.failed.lock().insert(key, at);
                    done.failed += 1;
                }
            }
        }
        for live in self.all() {
            let key = (live.record.name.clone(), live.record.version.clone());
            if !wanted.contains_key(&key) && self.retire(&key.0, &key.1) {
                tracing::info!(service = %format!("{}/{}", key.0, key.1), "retired a version retired elsewhere");
                done.retired += 1;
            }
        }
        self.failed.lock().retain(|k, _| wanted.contains_key(k));
        Ok(done)
    }

    /// Writes `files`, starts `record` and swaps it in: a version being replaced
    /// keeps serving until the new pool is warm, and its calls in flight finish on
    /// the old workers.
    pub async fn publish(
        &self,
        record: ServiceRecord,
        schema: Schema,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Arc<LiveService>, Error> {
        let dir = self.dir_of(&record);
        let target = dir.clone();
        let shared = self.shared.as_ref().map(|s| revision_dir(s, &record));
        blocking(move || {
            write_files(&target, &files)?;
            match shared {
                Some(to) => write_shared(&to, &files),
                None => Ok(()),
            }
        })
        .await??;
        match self.start(record, schema).await {
            Ok(live) => Ok(live),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Starts a stored version whose files are already on disk (server start-up).
    pub async fn start(
        &self,
        record: ServiceRecord,
        schema: Schema,
    ) -> Result<Arc<LiveService>, Error> {
        let dir = self.dir_of(&record);
        {
            let (record, dir) = (record.clone(), dir.clone());
            let shared = self.shared.clone();
            blocking(move || ensure_files(shared.as_deref(), &record, &dir)).await??;
        }
        let config = self.config.clone();
        let confiner = self.confiner.clone();
        let code = record.code.clone();
        let function = record.function.clone();
        let env = record.env.clone();
        let build_dir = dir.clone();
        let (name, version) = (record.name.clone(), record.version.clone());
        let tag = format!(
            "{}@{}-rev-{}",
            record.name, record.version, record.updated_at
        );
        let (pool, lease, temp) = blocking(move || {
            let leased = confiner.lease_service(&name, &version, &tag, &build_dir)?;
            let spec = leased
                .as_ref()
                .map(|(lease, temp)| confiner.service_spec(lease, &name, &build_dir, temp));
            match build_pool(&config, &build_dir, &code, &function, &env, spec) {
                Ok(pool) => Ok((pool, leased)),
                Err(e) => {
                    if let Some((_, temp)) = leased {
                        let _ = std::fs::remove_dir_all(temp);
                    }
                    Err(e)
                }
            }
        })
        .await?
        .map(|(pool, leased)| match leased {
            Some((lease, temp)) => (pool, Some(lease), Some(temp)),
            None => (pool, None, None),
        })?;
        let live = Arc::new(LiveService {
            record,
            schema,
            pool,
            dir,
            temp,
            _lease: lease,
        });
        let key = (live.record.name.clone(), live.record.version.clone());
        let old = self.live.write().insert(key, live.clone());
        if let Some(old) = old {
            let stale = vec![Some(old.dir.clone()), old.temp.clone()];
            retire_in_background(Some(old), stale.into_iter().flatten().collect());
        }
        Ok(live)
    }

    /// Stops serving `name/version`; calls in flight finish.
    pub fn retire(&self, name: &str, version: &str) -> bool {
        let old = self
            .live
            .write()
            .remove(&(name.to_owned(), version.to_owned()));
        let found = old.is_some();
        let files = old
            .as_ref()
            .map(|o| {
                [Some(o.dir.clone()), o.temp.clone()]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .unwrap_or_default();
        retire_in_background(old, files);
        found
    }

    /// Calls the service's function with `table` (already validated); its result
    /// may be at most `max_result_bytes` (the caller's `limits.max_result_bytes`).
    pub async fn call(
        &self,
        service: Arc<LiveService>,
        table: Value,
        max_result_bytes: u64,
    ) -> Result<Value, Error> {
        let opts = CallOptions {
            timeout: Some(self.config.call_timeout()),
            cancel: None,
            max_result_bytes: Some(max_result_bytes),
        };
        blocking(move || {
            service
                .pool
                .call_with(&service.record.function, &[("", &table)], &opts)
        })
        .await?
        .map_err(Error::from)
    }

    /// Stops every pool (server shutdown).
    pub fn shutdown(&self, drain: Duration) {
        let all: Vec<_> = self.live.write().drain().map(|(_, s)| s).collect();
        for s in all {
            s.pool.shutdown(drain);
        }
    }
}

/// Drops a replaced or retired version off the async threads (the last clone of its
/// pool shuts its workers and zygote down, which takes a few milliseconds; a call in
/// flight holds a clone until it ends), then removes its files.
fn retire_in_background(old: Option<Arc<LiveService>>, files: Vec<PathBuf>) {
    std::thread::spawn(move || {
        if let Some(old) = old {
            let pool = old.pool.clone();
            drop(old);
            pool.shutdown(Duration::from_secs(30));
        }
        for dir in files {
            let _ = std::fs::remove_dir_all(dir);
        }
    });
}

fn build_pool(
    config: &Config,
    dir: &Path,
    code: &str,
    function: &str,
    env: &ServiceEnv,
    confine: Option<rookery_engine::confine::Confinement>,
) -> Result<Pool, Error> {
    let dir_text = dir
        .to_str()
        .ok_or_else(|| Error::Internal(format!("{} is not UTF-8", dir.display())))?;
    let mut builder = config
        .pool_builder()
        .workers(config.pool.service_workers)
        .spares(1)
        .init(format!("setwd({dir_text:?})"))
        .init(code.to_owned())
        .call_timeout(Some(config.call_timeout()))
        .max_queue(config.pool.max_queue)
        .queue_timeout(Duration::from_millis(config.limits.queue_timeout_ms))
        .max_private_memory(config.pool.max_worker_mib << 20);
    if config.pool.max_calls > 0 {
        builder = builder.max_calls(config.pool.max_calls);
    }
    for (name, value) in &env.0 {
        builder = builder.env(name, value);
    }
    if let Some(spec) = confine {
        builder = builder.confine(spec);
    }
    let pool = builder.build().map_err(|e| match e {
        rookery_engine::Error::Spawn(msg) => Error::r(
            super::RFailureKind::ServiceCode,
            format!("the service's code failed when its workers started: {msg}"),
        ),
        other => Error::from(other),
    })?;
    if !pool.has_function(function).unwrap_or(false) {
        pool.shutdown(Duration::ZERO);
        return Err(Error::BadInput(format!(
            "the service's code does not define a function `{function}`"
        )));
    }
    Ok(pool)
}

/// Makes sure a revision's model files are in this node's folder `dir`: copied
/// from the shared folder when another node published it.
fn ensure_files(shared: Option<&Path>, record: &ServiceRecord, dir: &Path) -> Result<(), Error> {
    let present = record.files.iter().all(|f| dir.join(f).is_file());
    if present {
        return std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("{}: {e}", dir.display())));
    }
    let what = format!(
        "service {}/{} (revision {})",
        record.name, record.version, record.updated_at
    );
    let Some(shared) = shared else {
        return Err(Error::Internal(format!(
            "the model files of {what} are not in this node's data folder, and no \
             shared folder is set ([store] shared_dir, serve --shared-dir)"
        )));
    };
    let from = revision_dir(shared, record);
    let files = record
        .files
        .iter()
        .map(|name| {
            std::fs::read(from.join(name))
                .map(|bytes| (name.clone(), bytes))
                .map_err(|e| {
                    Error::Internal(format!(
                        "the model file {name} of {what} in the shared folder {}: {e}",
                        from.display()
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    write_files(dir, &files)
}

/// `<root>/NAME/VERSION/rev-T` of a record.
fn revision_dir(root: &Path, record: &ServiceRecord) -> PathBuf {
    root.join(&record.name)
        .join(&record.version)
        .join(format!("rev-{}", record.updated_at))
}

/// A revision's files into the shared folder, whole or not at all: written beside
/// it, then renamed into place, so another node never copies half a model.
fn write_shared(to: &Path, files: &[(String, Vec<u8>)]) -> Result<(), Error> {
    let io = |e: std::io::Error| {
        Error::Internal(format!(
            "writing to the shared folder {}: {e}",
            to.display()
        ))
    };
    if to.is_dir() {
        return Ok(());
    }
    let parent = to.parent().expect("a revision folder has a parent");
    std::fs::create_dir_all(parent).map_err(io)?;
    let temp = parent.join(format!(".incoming-{}", uuid::Uuid::new_v4()));
    write_files(&temp, files)?;
    std::fs::rename(&temp, to).map_err(|e| {
        let _ = std::fs::remove_dir_all(&temp);
        io(e)
    })
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Internal(format!("writing service files: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).map_err(io)?;
    }
    Ok(())
}

fn decode_file(name: &str, b64: &str) -> Result<(String, Vec<u8>), Error> {
    crate::files::check_relative(name)?;
    if name.contains('/') {
        return Err(Error::BadInput(format!(
            "model file `{name}`: give plain file names, without folders"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::BadInput(format!("model file `{name}`: not base64: {e}")))?;
    Ok((name.to_owned(), bytes))
}

/// Service names: lower-case letters, digits, `-` and `_`, starting with a letter.
pub fn check_service_name(name: &str) -> Result<(), Error> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    ok.then_some(()).ok_or_else(|| {
        Error::BadInput(format!(
            "service name `{name}`: use lower-case letters, digits, `-` and `_`, starting \
             with a letter, at most 64"
        ))
    })
}

/// Versions: letters, digits, `.`, `-`, `_`; at most 32; not `.` or `..`.
pub fn check_version(version: &str) -> Result<(), Error> {
    let ok = !version.is_empty()
        && version.len() <= 32
        && version != "."
        && version != ".."
        && version
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
    ok.then_some(()).ok_or_else(|| {
        Error::BadInput(format!(
            "version `{version}`: use letters, digits, `.`, `-` and `_`, at most 32"
        ))
    })
}

/// A new record for `spec` owned by `owner`, keeping the owner and creation time of
/// the version it replaces. `updated_at` always moves forward, so each revision of a
/// version gets its own folder of files.
pub fn record_for(
    spec: &ServiceSpec,
    owner: &str,
    previous: Option<&ServiceRecord>,
) -> ServiceRecord {
    let at = previous.map_or(now(), |p| now().max(p.updated_at + 1));
    ServiceRecord {
        name: spec.name.clone(),
        version: spec.version.clone(),
        owner: previous.map_or_else(|| owner.to_owned(), |p| p.owner.clone()),
        description: spec.description.clone(),
        code: spec.code.clone(),
        function: spec.function.clone(),
        inputs: spec.inputs.clone(),
        outputs: spec.outputs.clone(),
        files: spec.files.keys().cloned().collect(),
        env: spec.env.clone(),
        created_at: previous.map_or(at, |p| p.created_at),
        updated_at: at,
        retired: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        check_service_name("glm").unwrap();
        check_service_name("rf-2_b").unwrap();
        for bad in ["", "Glm", "1x", "a/b", "a.b", &"x".repeat(65)] {
            assert!(check_service_name(bad).is_err(), "{bad}");
        }
        check_version("1").unwrap();
        check_version("2.0.1-rc_1").unwrap();
        for bad in ["", ".", "..", "a/b", "v 1", &"1".repeat(33)] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
