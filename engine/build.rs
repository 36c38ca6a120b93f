//! Sets an rpath to libR for this crate's tests, so they run without LD_LIBRARY_PATH.

fn main() {
    if let Ok(home) = std::env::var("DEP_ROOKERY_SHIM_R_HOME") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{home}/lib");
    }
}
