//! Worker confinement: the engine's layers on their own, and the escape suite
//! against a real server (one hostile R snippet per attack, each with a host-side
//! witness and an unconfined control that shows the attack works without it).

mod engine;
mod escape;
mod unprivileged;

use std::path::{Path, PathBuf};

use rookery_engine::confine::Identity;
use rookery_engine::Value;

pub fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// As root, `nobody`: a uid that owns nothing here. Otherwise no identity switch.
pub fn nobody() -> Option<Identity> {
    rustix::process::geteuid().is_root().then_some(Identity {
        uid: 65534,
        gid: 65534,
    })
}

pub fn chown(path: &Path, id: Identity) {
    std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid)).unwrap();
}

/// A job folder and a temp dir inside a fresh temporary root, owned by [`nobody`]
/// when that applies. The root is removed when the guard drops.
pub fn job_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let job = root.path().join("job");
    let tmp = root.path().join("tmp");
    for d in [&job, &tmp] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(id) = nobody() {
            chown(d, id);
        }
    }
    (root, job, tmp)
}
