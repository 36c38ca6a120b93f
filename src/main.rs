//! The `rookery` command line.

mod admin;
mod batch;
mod cli;
mod serve;

fn main() -> std::process::ExitCode {
    // A pool re-executes this binary as its zygote; that must happen before anything
    // else (threads, argument parsing) in the process.
    rookery_engine::run_zygote_if_requested();
    cli::run()
}
