//! The session-state fingerprint a pooled worker uses to decide whether it is still
//! pristine after a stateless call.
//!
//! Owns the snapshot and the comparison, both done by the shim with pointer
//! comparisons only (well under a microsecond). It restores nothing but the random
//! seed: a worker whose state changed is replaced by a fresh fork, which is pristine
//! by construction, instead of being repaired.

use crate::sys;
use crate::{Error, RToken};

/// What changed since [`RToken::snapshot_state`]. All false means no caller left
/// anything behind in these places.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateChanges {
    /// A binding of the global environment was added, removed or rebound.
    pub global_env: bool,
    /// An option was set, changed or added (`options()`).
    pub options: bool,
    /// The search path changed (`library()`, `attach()`, `detach()`).
    pub search_path: bool,
    /// A namespace was loaded or unloaded.
    pub namespaces: bool,
    /// A connection is open, a sink diverted, or a graphics device open.
    pub open_resources: bool,
}

impl StateChanges {
    /// True when anything changed.
    pub fn any(self) -> bool {
        self.global_env
            || self.options
            || self.search_path
            || self.namespaces
            || self.open_resources
    }

    fn from_bits(bits: i32) -> StateChanges {
        StateChanges {
            global_env: bits & 1 != 0,
            options: bits & 2 != 0,
            search_path: bits & 4 != 0,
            namespaces: bits & 8 != 0,
            open_resources: bits & 16 != 0,
        }
    }
}

impl RToken<'_> {
    /// Records the global environment's bindings, `options()`, the search path and
    /// the loaded namespaces as the baseline for [`RToken::state_changes`].
    pub fn snapshot_state(self) -> Result<(), Error> {
        // SAFETY: on the R thread (token); the shim allocates inside a toplevel context.
        if unsafe { sys::rk_state_snapshot() } == 0 {
            return Err(self.take_failure());
        }
        Ok(())
    }

    /// What changed since the last [`RToken::snapshot_state`], after putting
    /// `.Random.seed` back as it was then (so that a fresh fork and a reused worker
    /// draw the same random numbers).
    pub fn state_changes(self) -> Result<StateChanges, Error> {
        // SAFETY: on the R thread (token); the shim compares pointers and rebinds the
        // seed, inside a toplevel context.
        match unsafe { sys::rk_state_changes() } {
            -1 => Err(Error::InvalidValue(
                "no state snapshot was taken in this process".into(),
            )),
            bits => Ok(StateChanges::from_bits(bits)),
        }
    }
}

/// Points R's session temp dir (`tempdir()`, `tempfile()`) at `dir`, which must exist.
/// A forked worker calls it so that it never writes into, or deletes, the zygote's.
pub fn set_temp_dir(_r: RToken<'_>, dir: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidValue("temp dir path contains a NUL byte".into()))?;
    // SAFETY: on the R thread (token); the shim copies the string before returning.
    if unsafe { sys::rk_set_temp_dir(path.as_ptr()) } == 0 {
        return Err(Error::Alloc("cannot copy the temp dir path".into()));
    }
    Ok(())
}
