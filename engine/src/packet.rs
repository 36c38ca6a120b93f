//! Packets over a `SOCK_SEQPACKET` socket with file descriptors attached
//! (`SCM_RIGHTS`): the zygote's control protocol and a link's handoff socket both
//! speak this way. Owns framing (postcard), the size cap and fd passing; it must not
//! know what the messages mean.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// The largest control packet either side sends.
pub(crate) const MAX_PACKET: usize = 256 << 10;

/// Sends one packet with `fds` attached.
pub(crate) fn send_packet<M: Serialize>(
    socket: BorrowedFd<'_>,
    msg: &M,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let bytes = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_PACKET {
        return Err(io::Error::other(format!(
            "control message of {} bytes exceeds {MAX_PACKET}",
            bytes.len()
        )));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !ancillary.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many fds for one control message"));
    }
    let iov = [IoSlice::new(&bytes)];
    rustix::net::sendmsg(socket, &iov, &mut ancillary, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receives one packet and the fds attached to it; `None` when the peer closed.
///
/// The buffer is sized from a peek at the packet: in the zygote, every page written
/// after a fork stops being shared with the workers forked before, so a large
/// scratch buffer per message would cost each worker that much private memory.
pub(crate) fn recv_packet<M: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
) -> io::Result<Option<(M, Vec<OwnedFd>)>> {
    let size = loop {
        match rustix::net::recv(socket, &mut [0u8; 1], RecvFlags::PEEK | RecvFlags::TRUNC) {
            Ok((_, len)) => break len.min(MAX_PACKET),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut buf = vec![0u8; size.max(1)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match rustix::net::recvmsg(socket, &mut iov, &mut ancillary, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for msg in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Ok(None);
    }
    let msg = postcard::from_bytes(&buf[..received.bytes]).map_err(io::Error::other)?;
    Ok(Some((msg, fds)))
}
