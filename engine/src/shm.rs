//! `ShmRegion`: one worker's shared-memory payload region, a memfd mapped by both sides.
//!
//! Owns the memfd, its `MAP_SHARED` mapping, the grow policy and a bump cursor for the
//! payloads of one message. It must not know about messages, values or sockets: the
//! protocol decides what goes where and tells the peer with `(offset, len)`.
//!
//! ```text
//!  parent                       memfd (sealed: never shrinks)          worker
//!  ShmRegion::create ──mmap──▶ [ payload | payload | ...  free  ] ◀──mmap── ShmRegion::from_fd
//!      grow(): ftruncate + mremap                    remap_if_needed(): fstat + mremap
//! ```
//!
//! Turn-taking contract: a side writes only while the peer waits for its message, and
//! reads only ranges the peer has handed over by message. A peer that breaks it can
//! make this side read garbage bytes, never memory outside its mapping: every range is
//! checked against this side's own mapped length, and the file is sealed with
//! `F_SEAL_SHRINK`, so no process can truncate it under a live mapping (which would
//! turn reads into `SIGBUS`).
#![expect(
    unsafe_code,
    reason = "mmap, mremap and munmap of the shared payload region; each block documents its SAFETY"
)]

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, MremapFlags, ProtFlags};

/// The default hard cap on a region's size: 1 GiB.
pub const DEFAULT_MAX_CAPACITY: usize = 1 << 30;
/// The smallest region mapped (mmap rejects an empty mapping).
const MIN_CAPACITY: usize = 4096;
/// Payloads start on 8-byte boundaries so numeric data stays aligned.
const ALIGN: usize = 8;

/// Why a shared-memory region could not be created, mapped or resized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The region would exceed its hard maximum.
    #[error("shared memory of {requested} bytes exceeds the maximum of {max} bytes")]
    TooLarge { requested: usize, max: usize },
    /// The file behind the fd is smaller than the capacity asked for.
    #[error("shared memory file is {size} bytes, {needed} bytes needed")]
    Short { size: u64, needed: usize },
    /// The fd is not a memfd sealed against shrinking, so mapping it is not safe.
    #[error("shared memory fd is not sealed against shrinking")]
    NotSealed,
}

/// Payloads smaller than this keep their pages mapped after they are read (the
/// next call reuses them at no cost); larger ones are released ([`ShmRegion::release`]).
pub const RELEASE_ABOVE: usize = 1 << 20;

/// A `MAP_SHARED` read-write mapping of a memfd, unmapped on drop.
pub struct ShmRegion {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    /// Bytes mapped; never more than the file's size.
    mapped: usize,
    /// Bump cursor of [`ShmRegion::alloc`].
    used: usize,
    max: usize,
}

// SAFETY: the region owns its mapping exclusively (no other value in this process
// holds `ptr`), and nothing about a mapping is tied to the thread that created it.
unsafe impl Send for ShmRegion {}
// SAFETY: `&ShmRegion` hands out only `&[u8]` and reads `mapped`; every mutation of
// the mapping or the cursor takes `&mut self`.
unsafe impl Sync for ShmRegion {}

impl fmt::Debug for ShmRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmRegion")
            .field("fd", &self.fd)
            .field("capacity", &self.mapped)
            .field("used", &self.used)
            .field("max", &self.max)
            .finish()
    }
}

impl ShmRegion {
    /// Creates a memfd (`MFD_CLOEXEC`, sealed against shrinking) of at least
    /// `capacity` bytes and maps it. A forked worker inherits the fd regardless of
    /// `CLOEXEC`; an exec'd one needs it passed explicitly.
    pub fn create(capacity: usize) -> Result<Self, ShmError> {
        let capacity = capacity.max(MIN_CAPACITY);
        check_max(capacity, DEFAULT_MAX_CAPACITY)?;
        let fd = rustix::fs::memfd_create(
            "rookery-shm",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(sys("memfd_create"))?;
        truncate(&fd, capacity)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).map_err(sys("fcntl(F_ADD_SEALS)"))?;
        Self::map(fd, capacity)
    }

    /// Maps `capacity` bytes of an fd made by [`ShmRegion::create`] (the worker side).
    /// Rejects an fd that may shrink or is shorter than `capacity`.
    pub fn from_fd(fd: OwnedFd, capacity: usize) -> Result<Self, ShmError> {
        let capacity = capacity.max(MIN_CAPACITY);
        check_max(capacity, DEFAULT_MAX_CAPACITY)?;
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| ShmError::NotSealed)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(ShmError::NotSealed);
        }
        check_file_size(&fd, capacity)?;
        Self::map(fd, capacity)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self, ShmError> {
        // SAFETY: a fresh mapping (null hint) of `len > 0` bytes of a file that is at
        // least `len` long and sealed against shrinking, so every mapped byte stays
        // backed. It aliases no Rust object; `Self` owns it until `Drop` unmaps it.
        let raw = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(sys("mmap"))?;
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| null_mapping("mmap"))?;
        let max = DEFAULT_MAX_CAPACITY;
        Ok(Self {
            fd,
            ptr,
            mapped: len,
            used: 0,
            max,
        })
    }

    /// Bytes mapped: every offset below this may be read and written.
    pub fn capacity(&self) -> usize {
        self.mapped
    }

    /// The hard cap on [`ShmRegion::grow`] and [`ShmRegion::remap_if_needed`].
    #[cfg(test)]
    pub fn max_capacity(&self) -> usize {
        self.max
    }

    /// Sets the hard cap (default [`DEFAULT_MAX_CAPACITY`]); never below the capacity.
    pub fn set_max_capacity(&mut self, max: usize) {
        self.max = max.max(self.mapped);
    }

    /// The fd, to pass to or keep open for the worker.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live read-write mapping of `mapped` bytes, all backed by
        // the (unshrinkable) file; the borrow of `self` keeps it mapped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.mapped) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference into the
        // mapping from this process's side of the turn-taking contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.mapped) }
    }

    /// Drops this process's page mappings of the whole pages inside `range` (a
    /// payload already read): they no longer count in this process's RSS. The bytes
    /// stay in the file, so a later read faults them back in unchanged; the peer's
    /// mapping is untouched. Ranges under [`RELEASE_ABOVE`] are left alone.
    pub fn release(&self, range: std::ops::Range<usize>) {
        let page = rustix::param::page_size();
        let start = range.start.div_ceil(page) * page;
        let end = range.end.min(self.mapped) / page * page;
        if end <= start || end - start < RELEASE_ABOVE {
            return;
        }
        // SAFETY: `[start, end)` lies inside this live mapping (`end <= mapped`) and
        // is page-aligned. MADV_DONTNEED on a MAP_SHARED file mapping only drops page
        // table entries: the file keeps the data, no memory becomes invalid, and no
        // reference into the mapping can observe a change (a later read sees the same
        // bytes from the file).
        let _ = unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().add(start).cast(),
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
    }

    /// Grows the file and the mapping to `new_capacity` (no-op if already that big).
    /// Contents are kept; the peer finds out from the next `(offset, len)` it reads and
    /// calls [`ShmRegion::remap_if_needed`].
    pub fn grow(&mut self, new_capacity: usize) -> Result<(), ShmError> {
        if new_capacity <= self.mapped {
            return Ok(());
        }
        check_max(new_capacity, self.max)?;
        // The peer may have grown the file already; the seal forbids shrinking it back.
        if file_size(&self.fd)? < new_capacity as u64 {
            truncate(&self.fd, new_capacity)?;
        }
        self.remap(new_capacity)
    }

    /// Makes room for `needed` bytes: grows to the next power of two, capped at the
    /// maximum.
    pub fn ensure_capacity(&mut self, needed: usize) -> Result<(), ShmError> {
        if needed <= self.mapped {
            return Ok(());
        }
        check_max(needed, self.max)?;
        let target = needed.checked_next_power_of_two().unwrap_or(needed);
        self.grow(target.min(self.max))
    }

    /// Reader side: makes the mapping cover at least `capacity` bytes after the peer
    /// grew the file. Returns whether it remapped. Fails, without touching the mapping,
    /// when the file is shorter than `capacity` (a lying peer) or `capacity` is over the
    /// maximum.
    pub fn remap_if_needed(&mut self, capacity: usize) -> Result<bool, ShmError> {
        if capacity <= self.mapped {
            return Ok(false);
        }
        check_max(capacity, self.max)?;
        let size = check_file_size(&self.fd, capacity)?;
        let target = usize::try_from(size).unwrap_or(usize::MAX).min(self.max);
        self.remap(target)?;
        Ok(true)
    }

    /// Reserves `len` bytes at an 8-aligned offset after earlier reservations, growing
    /// the region if needed. Returns the offset.
    pub fn alloc(&mut self, len: usize) -> Result<usize, ShmError> {
        // `used` never exceeds the mapped length, so rounding it up cannot overflow.
        let offset = self.used.next_multiple_of(ALIGN);
        let too_large = ShmError::TooLarge {
            requested: usize::MAX,
            max: self.max,
        };
        let end = offset.checked_add(len).ok_or(too_large)?;
        self.ensure_capacity(end)?;
        self.used = end;
        Ok(offset)
    }

    /// Forgets every reservation: call before writing the payloads of a new message.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    fn remap(&mut self, new_len: usize) -> Result<(), ShmError> {
        // SAFETY: `ptr`/`mapped` describe exactly the live mapping made by `map` (or a
        // previous remap), which is page-aligned. `&mut self` guarantees no slice into
        // it is alive while MAYMOVE may move it. The caller checked the file is at
        // least `new_len` long.
        let raw = unsafe {
            rustix::mm::mremap(
                self.ptr.as_ptr().cast::<c_void>(),
                self.mapped,
                new_len,
                MremapFlags::MAYMOVE,
            )
        }
        .map_err(sys("mremap"))?;
        self.ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| null_mapping("mremap"))?;
        self.mapped = new_len;
        Ok(())
    }
}

impl AsFd for ShmRegion {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`mapped` is the live mapping this value owns, and `&mut self`
        // in `drop` means no slice into it survives. A failure leaks address space
        // only, so it is ignored.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.mapped) };
    }
}

fn check_max(requested: usize, max: usize) -> Result<(), ShmError> {
    match requested <= max {
        true => Ok(()),
        false => Err(ShmError::TooLarge { requested, max }),
    }
}

fn truncate(fd: &OwnedFd, len: usize) -> Result<(), ShmError> {
    let len = u64::try_from(len).map_err(|_| ShmError::TooLarge {
        requested: len,
        max: len,
    })?;
    rustix::fs::ftruncate(fd, len).map_err(sys("ftruncate"))
}

fn file_size(fd: &OwnedFd) -> Result<u64, ShmError> {
    let stat = rustix::fs::fstat(fd).map_err(sys("fstat"))?;
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

/// The file's size, if it is at least `needed` bytes.
fn check_file_size(fd: &OwnedFd, needed: usize) -> Result<u64, ShmError> {
    let size = file_size(fd)?;
    match usize::try_from(size).is_ok_and(|s| s >= needed) {
        true => Ok(size),
        false => Err(ShmError::Short { size, needed }),
    }
}

fn sys(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> ShmError {
    move |errno| ShmError::Sys {
        op,
        source: errno.into(),
    }
}

fn null_mapping(op: &'static str) -> ShmError {
    ShmError::Sys {
        op,
        source: io::Error::other("mapped at address 0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Released pages leave this side's RSS, and their bytes are still there for
    /// both sides.
    #[test]
    fn released_pages_keep_their_bytes() {
        let len = 8 << 20;
        let mut region = ShmRegion::create(len).unwrap();
        for (i, b) in region.as_mut_slice()[..len].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let peer = peer_of(&region);
        let rss = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssShmem:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap()
        };
        let before = rss();
        region.release(0..len);
        assert!(rss() + 4096 <= before, "{} kB -> {} kB", before, rss());
        assert!(region.as_slice()[..len]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(peer.as_slice()[12_345], (12_345 % 251) as u8);
    }

    fn peer_of(region: &ShmRegion) -> ShmRegion {
        let fd = region.fd().try_clone_to_owned().unwrap();
        ShmRegion::from_fd(fd, region.capacity()).unwrap()
    }

    #[test]
    fn a_new_region_is_zeroed_and_at_least_a_page() {
        let region = ShmRegion::create(0).unwrap();
        assert_eq!(region.capacity(), MIN_CAPACITY);
        assert!(region.as_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn two_mappings_of_one_memfd_share_bytes() {
        let mut parent = ShmRegion::create(1 << 16).unwrap();
        let mut worker = peer_of(&parent);
        parent.as_mut_slice()[100..104].copy_from_slice(b"ping");
        assert_eq!(&worker.as_slice()[100..104], b"ping");
        worker.as_mut_slice()[200..204].copy_from_slice(b"pong");
        assert_eq!(&parent.as_slice()[200..204], b"pong");
    }

    #[test]
    fn grow_keeps_contents_and_the_peer_remaps() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        parent.as_mut_slice()[..3].copy_from_slice(b"abc");
        parent.grow(1 << 20).unwrap();
        parent.as_mut_slice()[(1 << 20) - 3..].copy_from_slice(b"xyz");
        assert_eq!(&parent.as_slice()[..3], b"abc");
        assert!(worker.remap_if_needed(1 << 20).unwrap());
        assert!(!worker.remap_if_needed(1 << 20).unwrap());
        assert_eq!(worker.capacity(), 1 << 20);
        assert_eq!(&worker.as_slice()[(1 << 20) - 3..], b"xyz");
    }

    #[test]
    fn growing_a_file_the_peer_already_grew_only_remaps() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        worker.grow(1 << 16).unwrap();
        worker.as_mut_slice()[60_000] = 7;
        parent.grow(1 << 15).unwrap();
        assert_eq!(parent.capacity(), 1 << 15);
        assert!(parent.remap_if_needed(60_001).unwrap());
        assert_eq!(parent.as_slice()[60_000], 7);
    }

    #[test]
    fn ensure_capacity_grows_to_a_power_of_two_capped_at_max() {
        let mut region = ShmRegion::create(4096).unwrap();
        region.ensure_capacity(5000).unwrap();
        assert_eq!(region.capacity(), 8192);
        region.set_max_capacity(12_000);
        assert_eq!(region.max_capacity(), 12_000);
        region.ensure_capacity(10_000).unwrap();
        assert_eq!(region.capacity(), 12_000);
        let err = region.ensure_capacity(12_001).unwrap_err();
        assert!(matches!(
            err,
            ShmError::TooLarge {
                requested: 12_001,
                max: 12_000
            }
        ));
        assert!(err.to_string().contains("exceeds the maximum"));
    }

    #[test]
    fn the_default_maximum_is_one_gib() {
        let mut region = ShmRegion::create(4096).unwrap();
        assert_eq!(region.max_capacity(), 1 << 30);
        let err = region.grow((1 << 30) + 1).unwrap_err();
        assert!(matches!(err, ShmError::TooLarge { .. }));
        assert_eq!(region.capacity(), 4096);
        assert!(matches!(
            ShmRegion::create(usize::MAX),
            Err(ShmError::TooLarge { .. })
        ));
    }

    #[test]
    fn remap_past_the_file_size_fails_instead_of_faulting() {
        let parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        let err = worker.remap_if_needed(1 << 20).unwrap_err();
        assert!(matches!(
            err,
            ShmError::Short {
                size: 4096,
                needed: 1_048_576
            }
        ));
        assert_eq!(worker.capacity(), 4096);
        assert!(matches!(
            worker.remap_if_needed(usize::MAX),
            Err(ShmError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_file_cannot_shrink_under_a_mapping() {
        let region = ShmRegion::create(1 << 16).unwrap();
        assert!(rustix::fs::ftruncate(region.fd(), 0).is_err());
    }

    #[test]
    fn from_fd_rejects_unsealed_and_short_files() {
        let fd = rustix::fs::memfd_create("plain", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 1 << 16).unwrap();
        assert!(matches!(
            ShmRegion::from_fd(fd, 1 << 16),
            Err(ShmError::NotSealed)
        ));
        let region = ShmRegion::create(4096).unwrap();
        let fd = region.as_fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            ShmRegion::from_fd(fd, 1 << 16),
            Err(ShmError::Short { .. })
        ));
    }

    #[test]
    fn alloc_aligns_grows_and_resets() {
        let mut region = ShmRegion::create(4096).unwrap();
        assert_eq!(region.alloc(3).unwrap(), 0);
        assert_eq!(region.alloc(5000).unwrap(), 8);
        assert_eq!(region.capacity(), 8192);
        region.reset();
        assert_eq!(region.alloc(1).unwrap(), 0);
        assert!(matches!(
            region.alloc(usize::MAX),
            Err(ShmError::TooLarge { .. })
        ));
        assert!(format!("{region:?}").contains("capacity: 8192"));
    }
}
