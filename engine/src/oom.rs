//! Who the kernel's OOM killer takes when memory runs out anyway: the process that
//! used it, never the server. Linux picks the process with the highest badness
//! (its memory, plus `oom_score_adj`), so a worker says 1000 (first in line), its
//! zygote 500 (it holds R's image, which every worker shares, and a new one takes a
//! second to start), and the server [`SERVER`] (it holds every user's sessions and
//! connections). Lowering needs CAP_SYS_RESOURCE: an unprivileged server keeps 0
//! for itself, and its workers still go first.

/// The server's own score adjustment (`oom_score_adj`, -1000 to 1000).
pub const SERVER: i32 = -900;
/// A zygote's.
pub const ZYGOTE: i32 = 500;
/// A worker's: killed first.
pub const WORKER: i32 = 1000;

/// Sets this process's `oom_score_adj`.
pub fn set_own(adj: i32) -> std::io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", adj.to_string())
}

/// Sets another process's `oom_score_adj` (the pool does it for workers that
/// cannot reach /proc themselves).
pub(crate) fn set_for(pid: u32, adj: i32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
}

/// This process's `oom_score_adj`.
pub fn own() -> std::io::Result<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj")?
        .trim()
        .parse()
        .map_err(std::io::Error::other)
}
