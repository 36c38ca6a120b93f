//! Finds R, compiles the C shim against R's headers, and tells dependents where R is.
//!
//! R is found from `R_HOME`, else from `R RHOME`. Dependents read the result as
//! `DEP_ROOKERY_SHIM_R_HOME` (this crate `links = "rookery_shim"`), and the crate bakes
//! it in as `ROOKERY_R_HOME` so that R starts without `R_HOME` set by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=R_HOME");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    let home = r_home();
    let include = include_dir(&home);
    cc::Build::new()
        .file("csrc/shim.c")
        .include(&include)
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(true)
        .compile("rookery_shim");
    let lib = home.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=R");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=ROOKERY_R_HOME={}", home.display());
    println!("cargo:r_home={}", home.display());
}

fn r_home() -> PathBuf {
    if let Some(home) = std::env::var_os("R_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let out = Command::new("R")
        .args(["RHOME"])
        .output()
        .unwrap_or_else(|e| {
            missing(&format!("running `R RHOME` failed ({e})"));
        });
    if !out.status.success() {
        missing("`R RHOME` exited with an error");
    }
    let home = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    PathBuf::from(home)
}

fn include_dir(home: &Path) -> PathBuf {
    let candidates = [home.join("include"), PathBuf::from("/usr/share/R/include")];
    candidates
        .into_iter()
        .find(|d| d.join("Rinternals.h").exists())
        .unwrap_or_else(|| missing("R's headers (Rinternals.h) are not installed"))
}

fn missing(why: &str) -> ! {
    panic!(
        "\n\nrookery needs R and its development headers: {why}.\n\
         On Debian/Ubuntu: sudo apt-get install r-base-dev\n\
         Elsewhere: install R and set R_HOME to its home (the output of `R RHOME`).\n"
    );
}
