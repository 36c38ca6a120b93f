//! Where the R function comes from in local mode: a service published in a server's
//! data folder (`--service NAME[@VERSION]`, read from its store and started exactly
//! as `rookery serve` starts it, with `Services::start`), or R code given on the
//! command line (`--code FILE --fn NAME`, or `--demo` for the built-in demo model).
//!
//! Owns finding the service and building the pool; it must not touch chunks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rookery_engine::Pool;
use rookery_server::config::Config;
use rookery_server::engine::Services;
use rookery_server::formats::schema::Schema;
use rookery_server::store::{PgStore, ServiceRecord, SqliteStore, Store};

use super::score::LocalScorer;

/// `NAME` or `NAME@VERSION`.
pub fn parse_service(text: &str) -> Result<(String, Option<String>), String> {
    let (name, version) = match text.split_once('@') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (text, None),
    };
    if name.is_empty() || version.as_deref() == Some("") {
        return Err(format!(
            "--service `{text}`: expected NAME or NAME@VERSION, e.g. glm or glm@1"
        ));
    }
    Ok((name.to_owned(), version))
}

/// The stored live version `name@version`, or the newest live version of `name`,
/// from the registry at `store` (PostgreSQL) or else in the data folder `data`.
fn find_record(
    data: &Path,
    store: Option<&str>,
    name: &str,
    version: Option<&str>,
) -> Result<ServiceRecord, String> {
    let (store, place): (Box<dyn Store>, String) = match store {
        Some(url) => (
            Box::new(PgStore::connect(url).map_err(|e| format!("opening the store: {e}"))?),
            rookery_server::store::redact_url(url),
        ),
        None => {
            let db = rookery_server::serve::store_path(data);
            if !db.is_file() {
                return Err(format!(
                    "no server data folder at {} (no {}): pass --data DIR (or set ROOKERY_DATA) \
                     to the folder `rookery serve` uses, --store URL for a cluster's registry, \
                     or use --code FILE --fn NAME",
                    data.display(),
                    db.display()
                ));
            }
            let opened =
                SqliteStore::open(&db).map_err(|e| format!("opening {}: {e}", db.display()))?;
            (Box::new(opened), data.display().to_string())
        }
    };
    let found = match version {
        Some(v) => store.service(name, v).map(|r| r.filter(|r| !r.retired)),
        None => store
            .services()
            .map(|all| all.into_iter().rfind(|r| r.name == name)),
    };
    let found = found.map_err(|e| format!("reading {place}: {e}"))?;
    found.ok_or_else(|| {
        let what = version.map_or(name.to_owned(), |v| format!("{name}@{v}"));
        let names: Vec<String> = store
            .services()
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{}@{}", r.name, r.version))
            .collect();
        format!(
            "no live service {what} in {place} (published: {})",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )
    })
}

/// The service's pool, started from its stored code and model files.
pub fn from_service(
    data: &Path,
    store: Option<&str>,
    service: &str,
    workers: usize,
    timeout: Duration,
) -> Result<LocalScorer, String> {
    let (name, version) = parse_service(service)?;
    let record = find_record(data, store, &name, version.as_deref())?;
    let what = format!("{}@{}", record.name, record.version);
    let schema = Schema::parse(&record.inputs)
        .map_err(|e| format!("service {what}: its stored inputs are invalid: {e}"))?;
    let mut config = Config {
        data: data.to_owned(),
        ..Config::default()
    };
    config.pool.service_workers = workers;
    config.limits.call_timeout_secs = timeout.as_secs().max(1);
    // The same confinement `rookery serve` applies to this data folder's services.
    let confiner = rookery_server::confine::Confiner::open(&config.confine, data)
        .map_err(|e| format!("confinement: {e}"))?;
    let services = Services::new(Arc::new(config), Arc::new(confiner));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let live = runtime
        .block_on(services.start(record, schema))
        .map_err(|e| format!("service {what} did not start: {e}"))?;
    let scorer = LocalScorer::new(
        live.pool.clone(),
        live.record.function.clone(),
        Some(live.schema.clone()),
        timeout,
    )?;
    // The live service holds its worker account's lease: dropping it would stop the
    // pool's workers.
    Ok(scorer.keeping(Box::new((services, live))))
}

/// A pool whose workers ran `code` (from `origin`, for messages), calling `function`.
pub fn from_code(
    code: String,
    origin: &str,
    function: &str,
    workers: usize,
    timeout: Duration,
) -> Result<LocalScorer, String> {
    if !rookery_server::engine::is_r_name(function) {
        return Err(format!("--fn `{function}` is not an R function name"));
    }
    let pool = Pool::builder()
        .workers(workers)
        .init(code)
        .call_timeout(Some(timeout))
        .build()
        .map_err(|e| match e {
            rookery_engine::Error::Spawn(msg) => {
                format!("the R code in {origin} failed when the workers started: {msg}")
            }
            other => format!("cannot start R workers: {other}"),
        })?;
    if !pool.has_function(function).unwrap_or(false) {
        pool.shutdown(Duration::ZERO);
        return Err(format!(
            "the R code in {origin} does not define a function `{function}`"
        ));
    }
    LocalScorer::new(pool, function.to_owned(), None, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(parse_service("glm"), Ok(("glm".into(), None)));
        assert_eq!(
            parse_service("glm@1.2"),
            Ok(("glm".into(), Some("1.2".into())))
        );
        assert!(parse_service("glm@").is_err());
        assert!(parse_service("@1").is_err());
    }
}
