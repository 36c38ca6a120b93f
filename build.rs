//! Root package build script: an rpath to libR for the `rookery` binary, the
//! integration tests, benches and examples, so they run without LD_LIBRARY_PATH.
//! R itself is found by `rookery-ffi`'s build script, which passes its home on.

fn main() {
    if let Ok(home) = std::env::var("DEP_ROOKERY_SHIM_R_HOME") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{home}/lib");
    }
}
