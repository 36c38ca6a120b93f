//! Starting the systems `rookery bench` compares, each on loopback with the workload of
//! docs/peers.md: `rookery serve --demo` (HTTP + QAP1), Rserve, the plumber peer, and
//! one R process that runs `parallel::mclapply` batches on request.
//!
//! A peer that is not installed, or does not come up, is an `Err(reason)` the suite
//! reports as missing; it never stops the run. Rookery itself failing to start does.
//! Everything started here is a [`Managed`] guard, stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use std::os::unix::process::CommandExt;

use super::procs::{free_port, wait_listening, Managed};

/// The plumber peer (benches/peers/plumber_demo.R), built into the binary.
const PLUMBER_DEMO: &str = include_str!("../../../peers/plumber_demo.R");
/// The mclapply peer: fits the demo models, makes the rows, then times one batch
/// (`score_glm` or `score_rf` over 50,000-row chunks) per line read from stdin.
const MCLAPPLY_PEER: &str = include_str!("mclapply_peer.R");
/// How long a peer may take to start (R start-up plus fitting the models).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// `rookery serve --demo`, with a QAP1 listener and a publisher `bench` for it.
#[derive(Debug)]
pub struct RookeryServer {
    pub http: SocketAddr,
    pub qap: SocketAddr,
    pub api_key: String,
    _proc: Managed,
}

/// Starts `rookery serve --demo` on ports it picks; `password` is `bench`'s.
pub fn start_rookery(dir: &Path, workers: usize, password: &str) -> anyhow::Result<RookeryServer> {
    let exe = crate::rookery_exe()?;
    let data = dir.join("rookery-data");
    add_bench_user(&exe, &data, password)?;
    let conf = dir.join("rookery.toml");
    // Rookery's QAP1 opens a session per connection; 4 at once plus closing ones.
    std::fs::write(&conf, "[limits]\nsessions_per_user = 32\n")?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "serve",
        "--demo",
        "--listen",
        "127.0.0.1:0",
        "--qap",
        "127.0.0.1:0",
    ])
    .arg("--config")
    .arg(&conf)
    .arg("--data")
    .arg(&data)
    .args(["--service-workers", &workers.to_string()]);
    cmd.stdout(Stdio::piped())
        .stderr(log_file(dir, "rookery-serve.log")?);
    let mut proc = Managed::spawned("rookery serve", cmd.process_group(0).spawn()?);
    let stdout = proc
        .child_mut()
        .and_then(|c| c.stdout.take())
        .context("no stdout")?;
    let lines = line_channel(stdout);
    let (mut http, mut qap, mut api_key) = (None, None, None);
    while api_key.is_none() {
        let line = lines.recv_timeout(START_TIMEOUT).map_err(|_| {
            anyhow!(
                "rookery serve did not start; see its log: {}",
                tail(dir, "rookery-serve.log")
            )
        })?;
        if let Some(a) = line.strip_prefix("rookery listening on http://") {
            http = Some(a.trim().parse()?);
        } else if let Some(a) = line.strip_prefix("rookery QAP1 listening on ") {
            qap = Some(a.trim().parse()?);
        } else if let Some(k) = line.strip_prefix("demo API key: ") {
            api_key = Some(k.trim().to_owned());
        }
    }
    Ok(RookeryServer {
        http: http.context("no HTTP address announced")?,
        qap: qap.context("no QAP1 address announced")?,
        api_key: api_key.unwrap_or_default(),
        _proc: proc,
    })
}

/// `rookery user add bench --role publisher` (QAP1 eval needs the right to run code).
fn add_bench_user(exe: &Path, data: &Path, password: &str) -> anyhow::Result<()> {
    let mut child = Command::new(exe)
        .args(["user", "add", "bench", "--role", "publisher", "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "rookery user add: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Rserve on a free port: `R CMD Rserve` first, then the binary inside the installed
/// package (Debian 12's `R CMD Rserve` does not find it).
pub fn start_rserve(dir: &Path) -> Result<(Managed, SocketAddr), String> {
    let binary = rscript_output("cat(system.file('libs', 'Rserve', package = 'Rserve'))")
        .filter(|b| !b.is_empty())
        .ok_or("Rserve is not installed (Debian: r-cran-rserve)")?;
    let work = dir.join("rserve");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for program in ["Rserve", binary.as_str()] {
        match try_rserve(program, &work) {
            Ok(started) => return Ok(started),
            Err(e) => last = format!("R CMD {program}: {e:#}"),
        }
    }
    Err(format!("Rserve did not start ({last})"))
}

fn try_rserve(program: &str, work: &Path) -> anyhow::Result<(Managed, SocketAddr)> {
    let port = free_port()?;
    let pidfile = work.join(format!("rserve-{port}.pid"));
    let mut cmd = Command::new("R");
    cmd.args(["CMD", program, "--no-save", "--RS-port", &port.to_string()])
        .arg("--RS-pidfile")
        .arg(&pidfile)
        .arg("--RS-workdir")
        .arg(work)
        .stdin(Stdio::null())
        .stdout(log_file(work, "rserve.log")?)
        .stderr(log_file(work, "rserve.log")?);
    // The wrapper exits once Rserve has daemonized (setsid, its own group).
    let mut wrapper = Managed::spawned("R CMD Rserve", cmd.process_group(0).spawn()?);
    let status = wait_exit(&mut wrapper, START_TIMEOUT)?;
    let pid = read_pidfile(&pidfile)
        .with_context(|| format!("{status}; no pidfile; log: {}", tail(work, "rserve.log")))?;
    let mut daemon = Managed::daemon("Rserve", pid);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut daemon, START_TIMEOUT)?;
    Ok((daemon, addr))
}

fn wait_exit(proc: &mut Managed, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = proc.child_mut().context("no child")?.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} still running after {timeout:?}", proc.name)
}

/// The daemon's pid, once Rserve has written it (shortly after the wrapper exits).
fn read_pidfile(path: &Path) -> anyhow::Result<i32> {
    for _ in 0..50 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return Ok(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no pid in {}", path.display())
}

/// The plumber peer on a free port, serving `POST /glm` and `POST /rf`.
pub fn start_plumber(dir: &Path, model: &Path) -> Result<(Managed, SocketAddr), String> {
    if rscript_output("cat(requireNamespace('plumber', quietly = TRUE))").as_deref() != Some("TRUE")
    {
        return Err("plumber is not installed (Debian: r-cran-plumber)".into());
    }
    let run = || -> anyhow::Result<(Managed, SocketAddr)> {
        let script = dir.join("plumber_demo.R");
        std::fs::write(&script, PLUMBER_DEMO)?;
        let port = free_port()?;
        let mut cmd = Command::new("Rscript");
        cmd.arg(&script)
            .env("PORT", port.to_string())
            .env("ROOKERY_DEMO_MODEL", model)
            .stdin(Stdio::null())
            .stdout(log_file(dir, "plumber.log")?)
            .stderr(log_file(dir, "plumber.log")?);
        let mut proc = Managed::spawned("plumber", cmd.process_group(0).spawn()?);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr, &mut proc, START_TIMEOUT)
            .with_context(|| format!("log: {}", tail(dir, "plumber.log")))?;
        Ok((proc, addr))
    };
    run().map_err(|e| format!("plumber did not start: {e:#}"))
}

/// One R process that times `parallel::mclapply` batches over the same rows.
#[derive(Debug)]
pub struct Mclapply {
    stdin: ChildStdin,
    lines: Receiver<String>,
    pub has_rf: bool,
    _proc: Managed,
}

pub fn start_mclapply(
    dir: &Path,
    model: &Path,
    rows: usize,
    cores: usize,
) -> Result<Mclapply, String> {
    let run = || -> anyhow::Result<Mclapply> {
        let script = dir.join("mclapply_peer.R");
        std::fs::write(&script, MCLAPPLY_PEER)?;
        let mut cmd = Command::new("Rscript");
        cmd.arg(&script)
            .env("ROOKERY_DEMO_MODEL", model)
            .env("ROWS", rows.to_string())
            .env("CORES", cores.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(dir, "mclapply.log")?);
        let mut proc = Managed::spawned("R (mclapply)", cmd.process_group(0).spawn()?);
        let child = proc.child_mut().context("no child")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = line_channel(child.stdout.take().context("no stdout")?);
        let ready = lines
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow!("not ready; log: {}", tail(dir, "mclapply.log")))?;
        let has_rf = ready.trim() == "ready rf";
        Ok(Mclapply {
            stdin,
            lines,
            has_rf,
            _proc: proc,
        })
    };
    run().map_err(|e| format!("R with parallel::mclapply did not start: {e:#}"))
}

impl Mclapply {
    /// Seconds R took for one batch of `function` (`score_glm` or `score_rf`).
    pub fn batch(&mut self, function: &str, timeout: Duration) -> anyhow::Result<f64> {
        writeln!(self.stdin, "{function}")?;
        self.stdin.flush()?;
        let line = self
            .lines
            .recv_timeout(timeout)
            .map_err(|_| anyhow!("mclapply: no answer within {timeout:?}"))?;
        line.trim()
            .parse()
            .map_err(|_| anyhow!("mclapply answered {line:?}"))
    }
}

/// Lines of `from`, read on their own thread (which also keeps the pipe drained).
fn line_channel(from: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the child never blocks.
                continue;
            }
        }
    });
    rx
}

/// "R 4.2.2, Rserve 1.8.11, plumber 1.2.1, randomForest 4.7.1.1": what was measured.
pub fn versions() -> String {
    let code = "v <- function(p) tryCatch(paste(p, packageVersion(p)), error = function(e) paste(p, 'missing')); \
                cat(paste0('R ', getRversion()), v('Rserve'), v('plumber'), v('randomForest'), sep = ', ')";
    rscript_output(code).unwrap_or_else(|| "R not found".into())
}

/// What `Rscript -e code` printed, when it ran and succeeded.
fn rscript_output(code: &str) -> Option<String> {
    let out = Command::new("Rscript").args(["-e", code]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path: PathBuf = dir.join(name);
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

/// The last lines of a log in `dir`, for an error message.
fn tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
