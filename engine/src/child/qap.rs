//! The worker's side of QAP1 direct mode (see [`crate::qap::direct`]): reads its
//! client's messages from the socket the server handed over, answers `CMD_eval`,
//! `CMD_voidEval` and `CMD_setSEXP` in the session's environment, and gives the
//! connection back with anything else.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rookery_ffi::Error as RError;

use super::sockio::{read_appending, read_head, write_all, Head};
use super::Worker;
use rustix::net::sockopt::{self, Timeout};

use crate::protocol::{self, ProtocolError, QapTurnWire, Response};
use crate::qap::direct::{self, QapNote, QapServe};
use crate::qap::frame::{self, cmd, resp, Header, HEADER_LEN};
use crate::qap::sexp;
use crate::Value;

/// Notes wait at most this long before the worker hands them over.
const NOTES_EVERY: Duration = Duration::from_secs(1);
/// ... or until there are this many.
const NOTES_MAX: usize = 256;
/// Reply buffers up to this capacity are kept for the next reply.
const RETAIN: usize = 16 << 20;

/// What an eval's result became.
enum Answer {
    /// Encoded into the reply buffer, the message starting here.
    Encoded(usize),
    Value(Value),
    /// voidEval: nothing to send back but OK.
    Nothing,
    /// Over the result cap, with its size by Rserve's estimate.
    TooBig(u64),
}

/// One pass of direct mode: why it ended, and a handed-back message's bytes.
struct Pass {
    turn: QapTurnWire,
    message: Option<Vec<u8>>,
}

impl Worker<'_> {
    /// Answers [`crate::protocol::Request::ServeQap`].
    pub(super) fn serve_qap(&mut self, id: u64, options: QapServe) -> Result<(), ProtocolError> {
        let mut notes = Vec::new();
        let mut requests = options.requests;
        // The socket is taken off the handoff queue whatever happens next.
        let socket = self.channel.recv_fd();
        let pass = match (socket, self.ensure_temp()) {
            (Ok(socket), Ok(())) => {
                let socket = std::fs::File::from(socket);
                // Reads block for at most `idle` (instead of a poll before each), and
                // output is not drained after each call (nobody reads it): what this
                // pass changes, it puts back.
                let saved = sockopt::socket_timeout(&socket, Timeout::Recv)
                    .ok()
                    .flatten();
                let _ = sockopt::set_socket_timeout(&socket, Timeout::Recv, Some(options.idle));
                self.skip_drain = true;
                self.direct_oob = socket.try_clone().ok().map(|copy| super::oob::Direct {
                    socket: copy,
                    strings: options.strings,
                    allowed: options.oob,
                    max_message: options.max_message,
                    stall: options.stall,
                });
                let pass = self.serve_socket(&socket, &options, &mut notes, &mut requests);
                self.direct_oob = None;
                self.skip_drain = false;
                let _ = self.capture.drain();
                let _ = sockopt::set_socket_timeout(&socket, Timeout::Recv, saved);
                pass
            }
            (Ok(_), Err(e)) => Pass {
                turn: QapTurnWire::Closed {
                    reason: format!("the worker cannot run R code: {e}"),
                },
                message: None,
            },
            (Err(e), _) => Pass {
                turn: QapTurnWire::Closed {
                    reason: format!("no socket was handed over: {e}"),
                },
                message: None,
            },
        };
        self.channel.set_busy(false);
        let inline = self.config.inline_limit;
        self.channel.send(|region| {
            let turn = match (pass.turn, pass.message) {
                (QapTurnWire::Message { command, .. }, Some(bytes)) => QapTurnWire::Message {
                    command,
                    payload: protocol::put_bytes(&bytes, region, inline)?,
                },
                (turn, _) => turn,
            };
            Ok(Response::Qap {
                id,
                turn,
                notes,
                requests,
            })
        })
    }

    fn serve_socket(
        &mut self,
        socket: &std::fs::File,
        options: &QapServe,
        notes: &mut Vec<QapNote>,
        requests: &mut u64,
    ) -> Pass {
        let closed = |reason: String| Pass {
            turn: QapTurnWire::Closed { reason },
            message: None,
        };
        let mut since: Option<Instant> = None;
        loop {
            let due = since.is_some_and(|t| t.elapsed() >= NOTES_EVERY);
            if due || notes.len() >= NOTES_MAX {
                return Pass {
                    turn: QapTurnWire::Notes,
                    message: None,
                };
            }
            let (command, payload) = match self.read_message(socket, options) {
                Ok(Incoming::Message(command, payload)) => (command, payload),
                // A quiet client: the server decides what the quiet means (its idle
                // deadline), and others may use the session meanwhile.
                Ok(Incoming::Quiet) => {
                    return Pass {
                        turn: QapTurnWire::Notes,
                        message: None,
                    }
                }
                Ok(Incoming::Eof) => return closed("the client closed the connection".into()),
                Err(e) => return closed(e.to_string()),
            };
            *requests += 1;
            let answered = match command {
                cmd::EVAL | cmd::VOID_EVAL => {
                    self.direct_eval(socket.as_fd(), options, command, &payload)
                }
                cmd::SET_SEXP => self.direct_set(socket.as_fd(), options, &payload),
                _ => None,
            };
            match answered {
                Some(Ok(note)) => {
                    notes.push(QapNote {
                        request: *requests,
                        ..note
                    });
                    since.get_or_insert_with(Instant::now);
                    self.qap_in = payload;
                }
                Some(Err(e)) => return closed(format!("writing to the client: {e}")),
                None => {
                    return Pass {
                        turn: QapTurnWire::Message {
                            command,
                            payload: protocol::Payload::Inline(Vec::new()),
                        },
                        message: Some(payload),
                    }
                }
            }
        }
    }

    /// The next message, if one starts within the socket's receive timeout. A header
    /// over the size limit is answered (ERR_data_overflow) and ends the connection;
    /// a message that stalls halfway for longer than `options.stall` too.
    fn read_message(&mut self, socket: &std::fs::File, options: &QapServe) -> io::Result<Incoming> {
        let mut head = [0u8; HEADER_LEN];
        match read_head(socket.as_fd(), &mut head, options.stall)? {
            Head::Full => {}
            Head::Quiet => return Ok(Incoming::Quiet),
            Head::Eof => return Ok(Incoming::Eof),
        }
        let header = match Header::try_from_bytes(&head, options.max_message) {
            Ok(h) => h,
            Err(e) => {
                let refusal = frame::encode_message(frame::resp_err(e.status()), 0, &[]);
                write_all(socket.as_fd(), &refusal)?;
                return Err(io::Error::other(format!("refused message: {e}")));
            }
        };
        let mut payload = std::mem::take(&mut self.qap_in);
        payload.clear();
        read_appending(socket, &mut payload, header.len as usize, options.stall)?;
        Ok(Incoming::Message(header.cmd, payload))
    }

    /// `CMD_eval` / `CMD_voidEval`: `None` when the parameters are not one DT_STRING
    /// (the server answers those, as before).
    fn direct_eval(
        &mut self,
        socket: BorrowedFd<'_>,
        options: &QapServe,
        command: u32,
        payload: &[u8],
    ) -> Option<io::Result<QapNote>> {
        let params = frame::decode_params(payload).ok()?;
        let [param] = params.as_slice() else {
            return None;
        };
        let code = options.strings.text(param.as_string_bytes().ok()?);
        // Only the server's deadline interrupts a worker in direct mode; one that
        // arrived just after the previous call ended belongs to no call.
        rookery_ffi::clear_interrupt(self.r);
        self.channel.set_busy(true);
        // A plain double vector is encoded straight from R's memory into the reply;
        // anything else becomes a Value first.
        let mut buf = std::mem::take(&mut self.qap_out);
        let answer = command == cmd::EVAL;
        let (key, mut parsed) = self.parsed.take(&code);
        let outcome = self.evaluate_with(
            |r, env| {
                let exprs = match parsed.take() {
                    Some(exprs) => exprs,
                    None => r.parse(&code)?,
                };
                let result = r.eval_many(&exprs, Some(env));
                parsed = Some(exprs);
                result
            },
            |r, object| {
                if !answer {
                    return Ok(Answer::Nothing);
                }
                let limit = options.max_result;
                let plain = r.is_plain_double(object);
                if plain && limit > 0 {
                    let size = sexp::estimate_doubles(r.xlength(object));
                    if size > limit {
                        return Ok(Answer::TooBig(size));
                    }
                }
                if !plain {
                    let value = r.to_value(object)?;
                    if limit > 0 {
                        let size = sexp::estimate(&value);
                        if size > limit {
                            return Ok(Answer::TooBig(size));
                        }
                    }
                    return Ok(Answer::Value(value));
                }
                let direct = direct::encode_reply_with(&mut buf, |out| {
                    r.append_plain_doubles_le(object, out, sexp::push_double_array_header)
                });
                Ok(match direct {
                    Some(start) => Answer::Encoded(start),
                    None => Answer::Value(r.to_value(object)?),
                })
            },
        );
        self.channel.set_busy(false);
        if let Some(exprs) = parsed {
            self.parsed.put(key, exprs);
        }
        let mut note = QapNote {
            request: 0,
            command,
            text: Some(code),
            error: None,
        };
        let sent = match outcome {
            Ok((Answer::Encoded(start), _, _)) => write_all(socket, &buf[start..]),
            Ok((Answer::Value(value), _, _)) => {
                self.qap_out = std::mem::take(&mut buf);
                self.reply_value(socket, options, &value)
            }
            Ok((Answer::Nothing, _, _)) => {
                write_all(socket, &frame::encode_message(resp::OK, 0, &[]))
            }
            Ok((Answer::TooBig(size), _, _)) => {
                note.error = Some(
                    RError::ResultTooLarge {
                        bytes: size,
                        limit: options.max_result,
                    }
                    .to_string(),
                );
                // Rserve's figure: its estimate plus the 4 KiB margin it allocates.
                let size = u32::try_from(size + 4096).unwrap_or(u32::MAX);
                let refusal = frame::resp_err(frame::status::OBJECT_TOO_BIG);
                write_all(
                    socket,
                    &frame::encode_message(refusal, 0, &size.to_le_bytes()),
                )
            }
            Err(e) => self.reply_failure(socket, options, &e, &mut note),
        };
        if buf.capacity() > 0 && buf.capacity() <= RETAIN {
            self.qap_out = buf;
        }
        Some(sent.map(|()| note))
    }

    /// `CMD_setSEXP` to a syntactic name: `None` for anything else.
    fn direct_set(
        &mut self,
        socket: BorrowedFd<'_>,
        options: &QapServe,
        payload: &[u8],
    ) -> Option<io::Result<QapNote>> {
        let params = frame::decode_params(payload).ok()?;
        let [target, value] = params.as_slice() else {
            return None;
        };
        let name = options.strings.text(target.as_string_bytes().ok()?);
        if !crate::is_r_name(&name) {
            return None;
        }
        let mut note = QapNote {
            request: 0,
            command: cmd::SET_SEXP,
            text: Some(name.clone()),
            error: None,
        };
        let r = self.r;
        // A plain double vector goes straight from the message into R.
        let plain = value.as_sexp().ok().and_then(sexp::plain_double_body);
        let object = match plain {
            Some(body) => r.doubles_from_le(body),
            None => match direct::decode_value(value, options.strings) {
                Ok(v) => r.from_value(&v),
                Err(e) => {
                    let reply = frame::encode_message(frame::resp_err(e.status()), 0, &[]);
                    return Some(write_all(socket, &reply).map(|()| note));
                }
            },
        };
        let assigned = object.and_then(|object| r.assign(Some(self.env()?), &name, &object));
        let sent = match assigned {
            Ok(()) => write_all(socket, &frame::encode_message(resp::OK, 0, &[])),
            Err(e) => self.reply_failure(socket, options, &e, &mut note),
        };
        Some(sent.map(|()| note))
    }

    fn reply_value(
        &mut self,
        socket: BorrowedFd<'_>,
        options: &QapServe,
        value: &Value,
    ) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.qap_out);
        let sent = match direct::encode_value_reply(&mut buf, value, options.strings) {
            Ok(start) => write_all(socket, &buf[start..]),
            Err(e) => {
                let failure = RError::InvalidValue(e.to_string());
                let mut note = QapNote {
                    request: 0,
                    command: cmd::EVAL,
                    text: None,
                    error: None,
                };
                self.reply_failure(socket, options, &failure, &mut note)
            }
        };
        if buf.capacity() <= RETAIN {
            self.qap_out = buf;
        }
        sent
    }

    /// Rserve's status for a failed call (the parse status, or 127), with the
    /// message in an OOB_SEND message first when the client asked for them.
    fn reply_failure(
        &mut self,
        socket: BorrowedFd<'_>,
        options: &QapServe,
        e: &RError,
        note: &mut QapNote,
    ) -> io::Result<()> {
        let message = match e {
            RError::R { message, .. } => message.clone(),
            other => other.to_string(),
        };
        if options.oob_errors {
            write_all(
                socket,
                &direct::oob_error_message(&message, options.strings),
            )?;
        }
        note.error = Some(e.to_string());
        let code = direct::failure_status(matches!(e, RError::Parse { .. }));
        write_all(
            socket,
            &frame::encode_message(frame::resp_err(code), 0, &[]),
        )
    }
}

/// What the next read found.
enum Incoming {
    Message(u32, Vec<u8>),
    /// Nothing arrived within the socket's receive timeout.
    Quiet,
    Eof,
}
