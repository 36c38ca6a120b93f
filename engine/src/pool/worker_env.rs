//! The environment a pool's zygote (and so every worker forked from it) starts with:
//! built from nothing, never the host's whole environment. A host's secrets (a
//! database password, a cloud key) stay out of every worker's `Sys.getenv()` and of
//! anything its code runs with `system()`.
//!
//! What a zygote gets, in order (a later entry replaces an earlier one):
//! 1. from the host, only the variables R and a shell need: [`INHERITED`] by name, and
//!    every `LC_*` and `R_*` variable;
//! 2. from the host, the names the pool passes through ([`PoolBuilder::pass_env`]);
//! 3. the pool's own values ([`PoolBuilder::env`]), e.g. a service's settings;
//! 4. `ROOKERY_ZYGOTE=1`, which makes the program a zygote.
//!
//! A worker later sets `TMPDIR` to its own temp dir, and a confined one `HOME` to its
//! working folder and `USER`/`LOGNAME` to its account ([`crate::confine::Confinement`]).
//!
//! [`PoolBuilder::pass_env`]: super::PoolBuilder::pass_env
//! [`PoolBuilder::env`]: super::PoolBuilder::env

use std::ffi::{OsStr, OsString};

/// Host variables every zygote inherits by name.
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM",
];

/// Prefixes of host variables every zygote inherits (locale, and R's own settings
/// such as `R_HOME` and `R_LIBS`).
pub const INHERITED_PREFIXES: &[&str] = &["LC_", "R_"];

/// Whether `name` is inherited from the host without being asked for.
pub fn inherited(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    INHERITED.contains(&name) || INHERITED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The zygote's environment from the host's `host` variables, the names in `pass`,
/// and the values in `set`.
pub(crate) fn zygote_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    pass: &[String],
    set: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host
        .into_iter()
        .filter(|(name, _)| inherited(name) || pass.iter().any(|p| OsStr::new(p) == name))
        .collect();
    for (name, value) in set {
        env.retain(|(n, _)| n != OsStr::new(name));
        env.push((name.into(), value.into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("R_LIBS", "/opt/r"),
            ("DATABASE_PASSWORD", "hunter2"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("PROXY_URL", "http://proxy"),
            ("TZ", "UTC"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.to_str().unwrap()).collect()
    }

    #[test]
    fn only_what_r_needs_is_inherited() {
        let env = zygote_env(host(), &[], &[]);
        assert_eq!(names(&env), ["PATH", "LC_ALL", "R_LIBS", "TZ"]);
    }

    #[test]
    fn named_variables_pass_through_and_set_values_replace() {
        let set = [
            ("MODEL_URL".to_owned(), "s3://m".to_owned()),
            ("TZ".to_owned(), "Europe/Paris".to_owned()),
        ];
        let env = zygote_env(host(), &["PROXY_URL".into()], &set);
        assert_eq!(
            names(&env),
            ["PATH", "LC_ALL", "R_LIBS", "PROXY_URL", "MODEL_URL", "TZ"]
        );
        assert_eq!(env.last().unwrap().1, "Europe/Paris");
        assert!(!names(&env).contains(&"DATABASE_PASSWORD"));
    }
}
