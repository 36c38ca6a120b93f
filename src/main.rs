//! The `rookery` command line.

mod admin;
mod batch;
mod cli;
mod serve;

// The allocator is glibc's unless a build asks for another, to compare them
// (docs/benchmarks.md, "Allocators"). R's own allocations use glibc's in every case.
#[cfg(all(feature = "jemalloc", feature = "mimalloc"))]
compile_error!("choose one of the features `jemalloc` and `mimalloc`");
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A pool re-executes this binary as its zygote; that must happen before anything
    // else (threads, argument parsing) in the process.
    rookery_engine::run_zygote_if_requested();
    cli::run()
}
