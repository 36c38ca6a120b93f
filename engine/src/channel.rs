//! `Channel`: one side of a parent <-> worker link: the socketpair end, the shared
//! control page and the shared payload region, used together to pass messages.
//!
//! Owns the turn-taking: a side resets the region, writes its payloads and its frame
//! there, and publishes `(offset, len)` in the mailbox; the peer reads everything it
//! was handed before it writes its answer. It must not know what the messages mean.
//!
//! ```text
//!   parent Channel                                worker Channel
//!   socket end  ◀──── socketpair: doorbell bytes, EOF = peer gone ────▶  socket end
//!   Mailbox     ◀──── memfd page: seq, sleeping flag, frame (off, len) ─▶  Mailbox
//!   ShmRegion   ◀──── memfd: payloads and frames, grows on demand ─────▶  ShmRegion
//! ```

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::mailbox::{Mailbox, Woken};
use crate::protocol::{self, Message, ProtocolError};
use crate::shm::ShmRegion;

/// The four fds that make a link, in the order they travel between processes.
pub struct LinkFds {
    pub socket: OwnedFd,
    pub mailbox: OwnedFd,
    pub region: OwnedFd,
    /// A `SOCK_SEQPACKET` end that carries fds the parent hands the worker (a QAP1
    /// client's socket), one per packet.
    pub handoff: OwnedFd,
}

/// What a receive returned.
#[derive(Debug)]
pub enum Received<M> {
    Message(M),
    /// The peer closed its socket end.
    Hangup,
    /// The peer process has exited ([`Watch::exit`] became readable).
    PeerExited,
    /// The call was cancelled ([`Watch::cancel`] became readable).
    Cancelled,
    TimedOut,
}

/// What a receive wakes for besides the peer's message and its hang-up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch<'a> {
    /// The peer's pidfd: readable once the peer process has exited.
    pub exit: Option<BorrowedFd<'a>>,
    /// A [`crate::CancelHandle`]'s eventfd: readable once the call is cancelled.
    pub cancel: Option<BorrowedFd<'a>>,
}

impl<'a> Watch<'a> {
    /// Only the peer's exit.
    pub fn exit(pidfd: BorrowedFd<'a>) -> Self {
        Watch {
            exit: Some(pidfd),
            cancel: None,
        }
    }
}

/// One side of a link.
#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
    handoff: OwnedFd,
    mailbox: Mailbox,
    region: ShmRegion,
    spin: Duration,
    /// How long the previous `recv` waited. Spinning pays only when messages come
    /// back within the spin budget; after a longer wait (a slow R call, an idle
    /// peer) the next `recv` sleeps at once instead of burning CPU the peer needs.
    last_wait: Duration,
}

/// Initial size of the payload region: small values never grow it.
const REGION_START: usize = 1 << 20;

impl Channel {
    /// Creates a link: this process's parent-side channel and the fds for the worker.
    /// `max_payload` caps the shared region (requests and answers larger than that
    /// are refused with a clear error instead of growing it further).
    pub fn create(spin: Duration, max_payload: usize) -> io::Result<(Channel, LinkFds)> {
        let (mine, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )?;
        let (my_handoff, their_handoff) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let mailbox = Mailbox::create()?;
        let mut region = ShmRegion::create(REGION_START).map_err(io::Error::other)?;
        region.set_max_capacity(max_payload);
        let fds = LinkFds {
            socket: theirs,
            mailbox: mailbox.as_fd().try_clone_to_owned()?,
            region: region.fd().try_clone_to_owned()?,
            handoff: their_handoff,
        };
        let channel = Channel {
            socket: mine,
            handoff: my_handoff,
            mailbox,
            region,
            spin,
            last_wait: Duration::ZERO,
        };
        Ok((channel, fds))
    }

    /// The worker side of a link made by [`Channel::create`].
    pub fn from_fds(fds: LinkFds, spin: Duration, max_payload: usize) -> io::Result<Channel> {
        rustix::io::ioctl_fionbio(&fds.socket, true)?;
        let capacity =
            usize::try_from(rustix::fs::fstat(&fds.region)?.st_size).map_err(io::Error::other)?;
        let mut region = ShmRegion::from_fd(fds.region, capacity).map_err(io::Error::other)?;
        region.set_max_capacity(max_payload);
        Ok(Channel {
            socket: fds.socket,
            handoff: fds.handoff,
            mailbox: Mailbox::from_fd(fds.mailbox)?,
            region,
            spin,
            last_wait: Duration::ZERO,
        })
    }

    /// Sends the message `build` makes; `build` may place payloads in the region first.
    pub fn send<M: Message>(
        &mut self,
        build: impl FnOnce(&mut ShmRegion) -> Result<M, ProtocolError>,
    ) -> Result<(), ProtocolError> {
        self.region.reset();
        let msg = build(&mut self.region)?;
        let (offset, len) = protocol::put_frame(&msg, &mut self.region)?;
        self.mailbox
            .publish(offset, len, self.socket.as_fd())
            .map_err(ProtocolError::Io)
    }

    /// Waits for the peer's next message, or for what `watch` names, or for
    /// `deadline`. Payloads the message names stay readable in [`Channel::region`]
    /// until this side sends.
    pub fn recv<M: Message>(
        &mut self,
        watch: Watch<'_>,
        deadline: Option<Instant>,
    ) -> Result<Received<M>, ProtocolError> {
        let (both, one);
        let extra: &[BorrowedFd<'_>] = match (watch.exit, watch.cancel) {
            (Some(exit), Some(cancel)) => {
                both = [exit, cancel];
                &both
            }
            (Some(fd), None) | (None, Some(fd)) => {
                one = [fd];
                &one
            }
            (None, None) => &[],
        };
        let spin = if self.last_wait <= self.spin {
            self.spin
        } else {
            Duration::ZERO
        };
        let started = Instant::now();
        let woken = self
            .mailbox
            .wait(spin, self.socket.as_fd(), extra, deadline)?;
        self.last_wait = started.elapsed();
        Ok(match woken {
            Woken::Frame { offset, len } => {
                Received::Message(protocol::take_frame(offset, len, &mut self.region)?)
            }
            Woken::Hangup => Received::Hangup,
            Woken::Extra(0) if watch.exit.is_some() => Received::PeerExited,
            Woken::Extra(_) => Received::Cancelled,
            Woken::TimedOut => Received::TimedOut,
        })
    }

    /// Whether the peer took the last message this side sent.
    pub fn delivered(&self) -> bool {
        self.mailbox.delivered()
    }

    /// Hands `fd` to the peer (a duplicate arrives there); send it before the request
    /// that uses it.
    pub fn send_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        crate::packet::send_packet(self.handoff.as_fd(), &0u8, &[fd])
    }

    /// The next fd the peer handed over with [`Channel::send_fd`].
    pub fn recv_fd(&self) -> io::Result<OwnedFd> {
        match crate::packet::recv_packet::<u8>(self.handoff.as_fd())? {
            Some((_, mut fds)) if fds.len() == 1 => Ok(fds.remove(0)),
            Some(_) => Err(io::Error::other("a handoff packet without exactly one fd")),
            None => Err(io::Error::other("the handoff socket is closed")),
        }
    }

    /// The worker's "running a call of its own" stamp (see [`Mailbox::set_busy`]).
    pub fn set_busy(&self, busy: bool) {
        self.mailbox.set_busy(busy);
    }

    /// How long the worker has been running a call of its own, if it is.
    pub fn busy_for(&self) -> Option<Duration> {
        self.mailbox.busy_for()
    }

    /// The shared payload region, for [`protocol::take_value`].
    pub fn region(&mut self) -> &mut ShmRegion {
        &mut self.region
    }
}
