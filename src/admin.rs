//! `rookery user …` and `rookery key …`: administration of the data folder's user
//! store from the command line. Owns the arguments, the password prompts and what is
//! printed; the rules live in `rookery_server::admin`. It must never print or log a
//! password, and prints an API key's secret only once, alone on stdout.

use std::fs::DirBuilder;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use rookery_server::admin::{self, UserSummary};
use rookery_server::auth::password;
use rookery_server::store::{PgStore, Role, SqliteStore, Store};

/// The store's file name inside the data folder.
pub use rookery_server::store::STORE_FILE;

const SECONDS_PER_DAY: u64 = 86_400;

#[derive(Debug, clap::Args)]
pub struct DataArg {
    /// The data folder: the user database (rookery.db) and each user's files.
    #[arg(long, env = "ROOKERY_DATA", default_value = "rookery-data")]
    pub data: PathBuf,
    /// The shared registry of a cluster (postgres://USER@HOST:PORT/DB), as
    /// `rookery serve --store`; without it, rookery.db in the data folder.
    #[arg(
        long,
        value_name = "URL",
        env = "ROOKERY_STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from stdin (one line) when it is not a
    /// terminal, otherwise asked for twice.
    Add {
        /// 1 to 32 of a-z, 0-9, `_`, `.`, `-`, starting with a letter or `_`.
        name: String,
        /// admin, publisher or user.
        #[arg(long, default_value = "user")]
        role: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// List users, their roles and grants.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Change a user's password (read like `user add` does).
    Passwd {
        name: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Remove a user with its grants, tokens and API keys.
    Remove {
        name: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Give a user a grant: `execute` (run any R code) or `service:NAME`.
    Grant {
        name: String,
        grant: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Take a grant from a user.
    Revoke {
        name: String,
        grant: String,
        #[command(flatten)]
        data: DataArg,
    },
    /// Log connections from OS account UID on the QAP1 Unix socket in as NAME, without
    /// a password (the kernel vouches for the peer: SO_PEERCRED). For clients with no
    /// login command, such as pyRserve.
    MapOsUser {
        name: String,
        uid: u32,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a user and print it. It is shown only this once: the
    /// store keeps only its hash.
    Create {
        user: String,
        /// What the key is for.
        #[arg(long)]
        label: Option<String>,
        /// Days until the key expires (default: never).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        expires_days: Option<u64>,
        #[command(flatten)]
        data: DataArg,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Make sure worker accounts `<prefix>0 .. <prefix>(N-1)` exist (root; uses
    /// useradd): system users with their own group, no login shell, no home. A
    /// server running as root leases one to each user with running code.
    Create {
        /// How many accounts (1 to 1000): at least the users who may run code at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// The accounts' name prefix (the server's `[confine] account_prefix`).
        #[arg(long, default_value = rookery_server::confine::accounts::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// List the worker accounts and what this machine enforces.
    List {
        /// The accounts' name prefix (the server's `[confine] account_prefix`).
        #[arg(long, default_value = rookery_server::confine::accounts::DEFAULT_PREFIX)]
        prefix: String,
    },
}

pub fn run_accounts(cmd: AccountsCommand) -> anyhow::Result<()> {
    use rookery_server::confine::accounts;
    match cmd {
        AccountsCommand::Create { count, prefix } => {
            let all = accounts::create(&prefix, count as usize).map_err(|e| anyhow!(e))?;
            done(format_args!(
                "{} worker accounts with prefix {prefix} ({} asked for)",
                all.len(),
                count
            ))
        }
        AccountsCommand::List { prefix } => {
            let all = accounts::discover(&prefix, Path::new("/etc/passwd"))?;
            for a in &all {
                println!("{}\t{}\t{}", a.name, a.uid, a.gid);
            }
            for line in rookery_engine::confine::probe().describe() {
                eprintln!("{line}");
            }
            done(format_args!("{} worker accounts", all.len()))
        }
    }
}

/// `<data>/rookery.db`.
pub fn store_path(data: &Path) -> PathBuf {
    data.join(STORE_FILE)
}

/// Opens the registry `--store` names, or else the store of data folder `data`,
/// creating the folder (mode 0700) and the database (mode 0600) when missing.
pub fn open_store(arg: &DataArg) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &arg.store {
        let store = PgStore::connect(url).map_err(|e| anyhow!("cannot open the store: {e}"))?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(open_data_store(&arg.data)?))
}

/// The SQLite store of data folder `data` (created when missing).
pub fn open_data_store(data: &Path) -> anyhow::Result<SqliteStore> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .map_err(|e| anyhow!("cannot create the data folder {}: {e}", data.display()))?;
    let path = store_path(data);
    SqliteStore::open(&path).map_err(|e| anyhow!("cannot open {}: {e}", path.display()))
}

pub fn run_user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, role, data } => add_user(&data, &name, &role),
        UserCommand::List { data } => list_users(&*open_store(&data)?),
        UserCommand::Passwd { name, data } => change_password(&data, &name),
        UserCommand::Remove { name, data } => {
            admin::remove_user(&*open_store(&data)?, &name)?;
            rookery_server::files::UserDirs::open(&data.data)?.remove_user(&name)?;
            done(format_args!(
                "removed user {name} with its grants, keys and folder"
            ))
        }
        UserCommand::Grant { name, grant, data } => {
            admin::grant(&*open_store(&data)?, &name, &grant)?;
            done(format_args!("granted {grant} to {name}"))
        }
        UserCommand::Revoke { name, grant, data } => {
            admin::revoke(&*open_store(&data)?, &name, &grant)?;
            done(format_args!("revoked {grant} from {name}"))
        }
        UserCommand::MapOsUser { name, uid, data } => {
            open_store(&data)?.map_os_user(&name, uid)?;
            done(format_args!(
                "QAP1 Unix-socket connections from uid {uid} log in as {name}"
            ))
        }
    }
}

pub fn run_key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create {
            user,
            label,
            expires_days,
            data,
        } => create_key(&data, &user, label.as_deref(), expires_days),
    }
}

/// Reports success on stderr, keeping stdout for data.
fn done(message: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    eprintln!("{message}");
    Ok(())
}

fn add_user(data: &DataArg, name: &str, role: &str) -> anyhow::Result<()> {
    admin::validate_user_name(name)?;
    let role: Role = role.parse().map_err(|e: String| anyhow!(e))?;
    let store = open_store(data)?;
    if store.user(name)?.is_some() {
        return Err(admin::AdminError::Exists(name.to_owned()).into());
    }
    let password = read_new_password(name)?;
    admin::add_user(&*store, name, role, &password)?;
    done(format_args!("created user {name} ({role})"))
}

fn change_password(data: &DataArg, name: &str) -> anyhow::Result<()> {
    let store = open_store(data)?;
    if store.user(name)?.is_none() {
        return Err(admin::AdminError::UnknownUser(name.to_owned()).into());
    }
    let password = read_new_password(name)?;
    admin::set_password(&*store, name, &password)?;
    done(format_args!("changed the password of {name}"))
}

fn list_users(store: &dyn Store) -> anyhow::Result<()> {
    let users = admin::list_users(store)?;
    if users.is_empty() {
        eprintln!("no users yet: add one with `rookery user add NAME --role admin`");
        return Ok(());
    }
    write_table(&mut io::stdout().lock(), &users)?;
    Ok(())
}

/// One row per user under a header, columns padded to their widest cell.
fn write_table(out: &mut impl Write, users: &[UserSummary]) -> io::Result<()> {
    let header = ["NAME", "ROLE", "GRANTS", "CREATED"].map(String::from);
    let rows: Vec<[String; 4]> = std::iter::once(header)
        .chain(users.iter().map(table_row))
        .collect();
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    for [name, role, grants, created] in &rows {
        writeln!(out, "{name:<w0$}  {role:<w1$}  {grants:<w2$}  {created}")?;
    }
    Ok(())
}

fn table_row(user: &UserSummary) -> [String; 4] {
    let grants = match user.grants.is_empty() {
        true => "-".to_owned(),
        false => user.grants.join(","),
    };
    [
        user.name.clone(),
        user.role.to_string(),
        grants,
        admin::format_timestamp(user.created_at),
    ]
}

fn create_key(
    data: &DataArg,
    user: &str,
    label: Option<&str>,
    expires_days: Option<u64>,
) -> anyhow::Result<()> {
    let expires_in = expires_days
        .map(|days| days.checked_mul(SECONDS_PER_DAY).map(Duration::from_secs))
        .map(|d| d.ok_or_else(|| anyhow!("--expires-days is too large")))
        .transpose()?;
    let secret = admin::create_api_key(&*open_store(data)?, user, label, expires_in)?;
    println!("{secret}");
    eprintln!("API key for {user} created; store it now, it cannot be shown again");
    Ok(())
}

/// The new password: one line of stdin when it is not a terminal, otherwise typed
/// twice (without echo) and required to match.
fn read_new_password(name: &str) -> anyhow::Result<String> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return read_password_line(&mut stdin.lock());
    }
    let first = rpassword::prompt_password(format!("New password for {name}: "))?;
    password::check_strength(&first).map_err(admin::AdminError::WeakPassword)?;
    let second = rpassword::prompt_password("Type it again: ")?;
    if first != second {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// The first line of `input` without its `\n` or `\r\n`.
fn read_password_line(input: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| anyhow!("cannot read the password from stdin: {e}"))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        bail!("no password on stdin (give it as one line, or run in a terminal)");
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_lines_lose_only_their_line_ending() {
        let read = |s: &str| read_password_line(&mut s.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(read("secret pw\n").unwrap(), "secret pw");
        assert_eq!(read("secret pw\r\n").unwrap(), "secret pw");
        assert_eq!(read(" spaced \n").unwrap(), " spaced ");
        assert_eq!(read("no newline").unwrap(), "no newline");
        assert_eq!(read("first\nsecond\n").unwrap(), "first");
        assert!(read("").unwrap_err().contains("no password"));
        assert!(read("\n").unwrap_err().contains("no password"));
    }

    #[test]
    fn the_table_aligns_columns() {
        let users = [
            UserSummary {
                name: "alice".into(),
                role: Role::Publisher,
                grants: vec!["execute".into(), "service:a".into()],
                created_at: 0,
            },
            UserSummary {
                name: "bo".into(),
                role: Role::User,
                grants: vec![],
                created_at: 86_400,
            },
        ];
        let mut out = Vec::new();
        write_table(&mut out, &users).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "\
NAME   ROLE       GRANTS             CREATED
alice  publisher  execute,service:a  1970-01-01T00:00:00Z
bo     user       -                  1970-01-02T00:00:00Z
";
        assert_eq!(text, expected);
    }
}

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// One JSON object per node instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `rookery nodes`: the registry's nodes, a table (or JSON lines) on stdout.
pub fn list_nodes(args: &NodesArgs) -> anyhow::Result<()> {
    let nodes = rookery_server::nodes::list(&*open_store(&args.data)?)?;
    let mut out = io::stdout().lock();
    if args.json {
        for n in &nodes {
            writeln!(out, "{}", serde_json::to_string(n)?)?;
        }
        return Ok(());
    }
    if nodes.is_empty() {
        eprintln!("no nodes registered: none is running on this store");
        return Ok(());
    }
    let now = admin::now();
    let rows: Vec<[String; 7]> = std::iter::once(
        [
            "ID",
            "ADDRESS",
            "ALIVE",
            "WORKERS",
            "BUSY",
            "SESSIONS",
            "HEARTBEAT",
        ]
        .map(String::from),
    )
    .chain(nodes.iter().map(|n| {
        [
            n.node.id.clone(),
            n.node.address.clone(),
            if n.alive { "yes" } else { "no" }.to_owned(),
            n.node.workers.to_string(),
            n.node.busy.to_string(),
            n.node.sessions.to_string(),
            format!("{}s ago", now - n.node.heartbeat_at),
        ]
    }))
    .collect();
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
