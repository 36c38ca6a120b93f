//! Thin file-descriptor helpers for output capture (memfd, dup, dup2, drain).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd`; an invalid fd yields EBADF.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: the new descriptor is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

pub(crate) fn dup2(from: &OwnedFd, to: RawFd) -> io::Result<()> {
    // SAFETY: `from` is open for the call; dup2 atomically replaces `to`, which the
    // caller designates (stdout or stderr) and does not hold as an OwnedFd.
    check(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

pub(crate) fn flush_stdio() {
    // SAFETY: fflush(NULL) flushes every open C stdio stream; it takes no pointers.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

/// Reads the whole file from offset 0, then empties it and rewinds it.
pub(crate) fn take_all(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let file = std::mem::ManuallyDrop::new(
        // SAFETY: the File is never dropped (ManuallyDrop), so `fd` keeps ownership.
        unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) },
    );
    // Fds 1 and 2 share this description's offset, so the offset is the number of
    // bytes written since the last rewind: one cheap syscall when nothing was printed.
    // SAFETY: lseek on an open descriptor; SEEK_CUR with 0 only reads the offset.
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_CUR) } == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, 0)?;
    file.set_len(0)?;
    // SAFETY: lseek on an open descriptor; rewinds the shared offset of fds 1 and 2.
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}
