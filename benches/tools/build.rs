//! An rpath to libR for `rookery-bench`, as the root package's build script gives
//! `rookery`, so it runs without LD_LIBRARY_PATH.

fn main() {
    if let Ok(home) = std::env::var("DEP_ROOKERY_SHIM_R_HOME") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{home}/lib");
    }
}
