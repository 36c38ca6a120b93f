//! Worker accounts: the pool of low-privilege OS users that workers switch to.
//!
//! Owns finding them (`/etc/passwd` entries named `<prefix><n>`) and creating them
//! (`rookery accounts create --count N`, through Debian's `useradd`): system users
//! with their own group, no supplementary groups, no login shell and no home. They
//! are machine-wide, like Launchpad's `SQLRUserGroup` members; which server uses
//! one at a time is settled by a lock file per account (see `leases`).

use std::path::Path;
use std::process::Command;

/// The default name prefix: accounts are `rookery-w0`, `rookery-w1`, ...
pub const DEFAULT_PREFIX: &str = "rookery-w";

/// One worker account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The accounts named `<prefix><n>` in `passwd` (a path, for tests), by `n`.
/// Root (uid 0) and gid 0 entries are never accounts.
pub fn discover(prefix: &str, passwd: &Path) -> std::io::Result<Vec<Account>> {
    let text = std::fs::read_to_string(passwd)?;
    Ok(parse(prefix, &text))
}

fn parse(prefix: &str, passwd: &str) -> Vec<Account> {
    let mut found: Vec<(u64, Account)> = passwd
        .lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let n: u64 = name.strip_prefix(prefix)?.parse().ok()?;
            let uid: u32 = f.nth(1)?.parse().ok()?;
            let gid: u32 = f.next()?.parse().ok()?;
            (uid != 0 && gid != 0).then(|| {
                (
                    n,
                    Account {
                        name: name.to_owned(),
                        uid,
                        gid,
                    },
                )
            })
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.into_iter().map(|(_, a)| a).collect()
}

/// Makes sure accounts `<prefix>0 .. <prefix>(count-1)` exist, creating the missing
/// ones with `useradd`. Returns every account with the prefix afterwards.
pub fn create(prefix: &str, count: usize) -> Result<Vec<Account>, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("creating worker accounts needs root".into());
    }
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        || !prefix.as_bytes()[0].is_ascii_lowercase()
    {
        return Err(format!(
            "bad account prefix `{prefix}`: lowercase letters, digits, - and _ only"
        ));
    }
    let passwd = Path::new("/etc/passwd");
    let existing = discover(prefix, passwd).map_err(|e| format!("reading /etc/passwd: {e}"))?;
    for n in 0..count {
        let name = format!("{prefix}{n}");
        if existing.iter().any(|a| a.name == name) {
            continue;
        }
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
            .args(["--comment", "Rookery worker account"])
            .arg(&name)
            .output()
            .map_err(|e| format!("running useradd: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    discover(prefix, passwd).map_err(|e| format!("reading /etc/passwd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_numbered_accounts_with_the_prefix() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      rookery-w1:x:998:997::/nonexistent:/usr/sbin/nologin\n\
                      rookery-w0:x:999:998::/nonexistent:/usr/sbin/nologin\n\
                      rookery-wx:x:990:990::/:/bin/false\n\
                      rookery-w2:x:0:0::/:/bin/false\n\
                      other:x:1000:1000::/home/other:/bin/bash\n\
                      broken-line\n";
        let found = parse("rookery-w", passwd);
        assert_eq!(
            found,
            [
                Account {
                    name: "rookery-w0".into(),
                    uid: 999,
                    gid: 998
                },
                Account {
                    name: "rookery-w1".into(),
                    uid: 998,
                    gid: 997
                },
            ]
        );
    }

    #[test]
    fn refuses_odd_prefixes() {
        if rustix::process::geteuid().is_root() {
            for bad in ["", "Rk", "a b", "a/b", "1x"] {
                assert!(create(bad, 1).is_err(), "{bad}");
            }
        } else {
            assert!(create("rookery-w", 1).unwrap_err().contains("root"));
        }
    }
}
