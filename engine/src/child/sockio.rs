//! Byte-level reads and writes on a QAP1 client's socket in a worker (direct mode's
//! loop in `child::qap`, OOB replies in `child::oob`): whole headers and payloads
//! under a stall deadline, buffers that grow with the bytes that arrive, writes
//! without SIGPIPE.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// What [`read_head`] found.
pub(super) enum Head {
    Full,
    Quiet,
    Eof,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Fills `head`: [`Head::Quiet`] when nothing arrives within the receive timeout,
/// [`Head::Eof`] when the client closed before a first byte; once a byte came, the
/// rest may stall up to `stall` in all.
pub(super) fn read_head(
    socket: BorrowedFd<'_>,
    head: &mut [u8],
    stall: Duration,
) -> io::Result<Head> {
    let mut at = 0;
    let mut stalled = None::<Instant>;
    while at < head.len() {
        match rustix::io::read(socket, &mut head[at..]) {
            Ok(0) if at == 0 => return Ok(Head::Eof),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) if at == 0 => return Ok(Head::Quiet),
            Err(rustix::io::Errno::AGAIN) => {
                if stalled.get_or_insert_with(Instant::now).elapsed() >= stall {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Head::Full)
}

/// Reads exactly `len` bytes onto the end of `buf`, into its spare capacity (a
/// large payload is not zeroed first), stalling up to `stall` in all. The buffer
/// grows with the bytes that arrive (`read_to_end` doubles it as it fills), never
/// by the declared length beyond [`RESERVE_AHEAD`]: a client that announces a large
/// message and sends little makes the worker reserve little.
pub(super) fn read_appending(
    socket: &std::fs::File,
    buf: &mut Vec<u8>,
    len: usize,
    stall: Duration,
) -> io::Result<()> {
    use std::io::Read;
    buf.reserve(len.min(RESERVE_AHEAD));
    let want = buf.len() + len;
    let mut stalled = None::<Instant>;
    while buf.len() < want {
        let left = (want - buf.len()) as u64;
        match socket.take(left).read_to_end(buf) {
            Ok(_) if buf.len() < want => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if would_block(&e) => {
                if stalled.get_or_insert_with(Instant::now).elapsed() >= stall {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a message's buffer reserves ahead of its bytes.
const RESERVE_AHEAD: usize = 1 << 20;

/// Writes all of `bytes` (no SIGPIPE: a gone client is an error).
pub(super) fn write_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(socket, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
