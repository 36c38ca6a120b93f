//! `rookery serve`: the HTTP server, from a TOML config file and/or flags, with an
//! optional demo (a user, two scoring services, an API key and a curl line).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use rookery_server::{Config, Server};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The data folder (store, users' folders, services' files).
    #[arg(long, env = "ROOKERY_DATA")]
    data: Option<PathBuf>,
    /// The registry on PostgreSQL (postgres://USER@HOST:PORT/DB), shared by every node
    /// of a cluster; config `[store] url`. A password can come from
    /// ROOKERY_STORE_PASSWORD instead of the URL. Default: rookery.db in the data folder.
    #[arg(
        long,
        value_name = "URL",
        env = "ROOKERY_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// A folder every node of a cluster mounts, where published model files are
    /// kept for the others (config `[store] shared_dir`).
    #[arg(long, value_name = "DIR")]
    shared_dir: Option<PathBuf>,
    /// This node's id in the registry (config `[store] node_id`; default a UUID).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// The URL other nodes reach this one at (config `[store] advertise`; default
    /// the listener's address).
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// A load balancer whose X-Forwarded-For names the client (repeatable; config
    /// `trusted_proxies`).
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Serve plain HTTP on a non-loopback address (only behind a TLS terminator).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Also speak QAP1 (Rserve's protocol) on this loopback address, e.g. 127.0.0.1:6311.
    #[arg(long)]
    qap: Option<SocketAddr>,
    /// Also speak QAP1 on this Unix socket.
    #[arg(long)]
    qap_unix: Option<PathBuf>,
    /// Also speak QAP1 over TLS (the [tls] certificate) on this address.
    #[arg(long)]
    qap_tls: Option<SocketAddr>,
    /// A QAP1 listener in OCAP mode on this loopback address (no login, no code:
    /// each connection gets the function of --qap-ocap-service as its capability).
    #[arg(long, requires = "qap_ocap_service")]
    qap_ocap: Option<SocketAddr>,
    /// NAME/VERSION of the published service OCAP clients may call.
    #[arg(long, requires = "qap_ocap")]
    qap_ocap_service: Option<String>,
    /// PEM RSA private key for QAP1's secure login (RSclient's RS.login).
    #[arg(long)]
    qap_rsa_key: Option<PathBuf>,
    /// Log QAP1 connections on the loopback TCP listener and the Unix socket in as
    /// this existing non-admin user, without a password (for benchmark clients that
    /// cannot log in). Refused for admins and unknown users; logged at start-up.
    #[arg(long, value_name = "NAME")]
    qap_anonymous: Option<String>,
    /// Send an R error's message to QAP1 clients in an OOB_SEND message (code 127)
    /// before the status-127 answer (pyRserve's oobCallback, RSclient's RS.oobCallbacks).
    #[arg(long)]
    qap_oob_errors: bool,
    /// Let R code in QAP1 sessions send its client OOB messages: Rserve's
    /// `self.oobSend` and `self.oobMessage` (RSclient's RS.oobCallbacks, pyRserve's
    /// oobCallback), as Rserve's `oob enable`.
    #[arg(long)]
    qap_oob: bool,
    /// Warm workers per service version.
    #[arg(long)]
    service_workers: Option<usize>,
    /// Largest result one call may return, in bytes (config `limits.max_result_bytes`,
    /// default 256 MiB; 0 is no cap): refused in the worker before it is encoded.
    #[arg(long, value_name = "N")]
    max_result_bytes: Option<u64>,
    /// Set up the demo: user `demo`, services glm/1 and rf/1, an API key, a curl line.
    #[arg(long)]
    demo: bool,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = &self.data {
            config.data = data.clone();
        }
        let qap = &mut config.qap;
        if self.qap.is_some() {
            qap.listen = self.qap;
        }
        if self.qap_unix.is_some() {
            qap.unix = self.qap_unix.clone();
        }
        if let (Some(listen), Some(service)) = (self.qap_ocap, &self.qap_ocap_service) {
            qap.ocap = Some(rookery_server::config::OcapConfig {
                listen,
                service: service.clone(),
            });
        }
        if self.qap_tls.is_some() {
            qap.tls = self.qap_tls;
        }
        if self.qap_rsa_key.is_some() {
            qap.rsa_key = self.qap_rsa_key.clone();
        }
        if self.qap_anonymous.is_some() {
            qap.anonymous = self.qap_anonymous.clone();
        }
        qap.oob_errors |= self.qap_oob_errors;
        qap.oob |= self.qap_oob;
        if let Some(n) = self.service_workers {
            config.pool.service_workers = n;
        }
        if let Some(n) = self.max_result_bytes {
            config.limits.max_result_bytes = n;
        }
        if self.store.is_some() {
            config.store.url = self.store.clone();
        }
        if self.shared_dir.is_some() {
            config.store.shared_dir = self.shared_dir.clone();
        }
        if self.node_id.is_some() {
            config.store.node_id = self.node_id.clone();
        }
        if self.advertise.is_some() {
            config.store.advertise = self.advertise.clone();
        }
        config
            .trusted_proxies
            .extend(self.trusted_proxies.iter().copied());
        config.insecure_plaintext |= self.insecure_plaintext;
        config.check()?;
        Ok(config)
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    // glibc's allocator, tuned for a server (ROOKERY_MALLOC_TUNING=off keeps its
    // defaults, to compare: docs/benchmarks.md, "Allocators").
    #[cfg(not(any(feature = "jemalloc", feature = "mimalloc")))]
    if !matches!(std::env::var("ROOKERY_MALLOC_TUNING").as_deref(), Ok("off")) {
        rookery_engine::tune_host_malloc();
    }
    rookery_server::serve::init_logging();
    let config = args.config()?;
    let tls = config.tls.is_some();
    rookery_server::serve::last_for_the_oom_killer();
    // The pools start (and re-execute this program as their zygotes) before any
    // runtime thread exists.
    let server = Server::open(config).context("starting the server")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rookery-http")
        .build()?;
    runtime.block_on(async move {
        server.load_services().await;
        let demo = match args.demo {
            true => Some(
                rookery_server::demo::install(&server.state, rookery_server::demo::MODEL_CODE)
                    .await
                    .context("setting up the demo")?,
            ),
            false => None,
        };
        rookery_server::run(server, |at| announce(at, tls, demo.as_ref())).await?;
        anyhow::Ok(())
    })
}

/// Tells the operator where the server is (stdout, one line first, so scripts and
/// tests can read the address), and how to call the demo.
fn announce(
    at: &rookery_server::serve::Listening,
    tls: bool,
    demo: Option<&rookery_server::demo::DemoCredentials>,
) {
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://{}", at.http);
    println!("rookery listening on {base}");
    if let Some(qap) = at.qap {
        println!("rookery QAP1 listening on {qap}");
    }
    if let Some(path) = &at.qap_unix {
        println!("rookery QAP1 listening on unix:{}", path.display());
    }
    if let Some(name) = &at.qap_anonymous {
        println!("rookery QAP1 WARNING: loopback connections are logged in as `{name}` without a password");
    }
    if let Some(d) = demo {
        if let Some(pw) = &d.password {
            println!("demo user: demo, password: {pw} (shown once; stored only as a hash)");
        }
        println!("demo API key: {}", d.api_key);
        println!(
            "try:\n  {}",
            rookery_server::demo::curl_line(&base, &d.api_key)
        );
    }
}
