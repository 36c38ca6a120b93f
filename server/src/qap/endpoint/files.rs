//! The QAP1 file commands of one connection (`CMD_openFile` ... `CMD_removeFile`):
//! paths go only through the session folder's confined handle, reads are whole-file
//! and served in pieces, writes are collected and stored atomically on close.

use super::{Connection, End};
use crate::qap::frame::{cmd, dt, status, Param};

/// A file opened by `CMD_openFile` (read whole, served in pieces) or `CMD_createFile`
/// (collected, then written in one step on `CMD_closeFile`, so a reader never sees
/// half of it). Paths go through the session folder's confined handle only.
#[derive(Debug)]
pub(super) enum OpenFile {
    Read { data: Vec<u8>, at: usize },
    Write { path: String, data: Vec<u8> },
}

impl Connection {
    /// `CMD_openFile`, `CMD_createFile`, `CMD_removeFile` with a path relative to the
    /// session's folder (anything that would leave it is refused: ERR_IOerror).
    pub(super) fn file_by_name(&mut self, command: u32, params: &[Param<'_>]) -> Result<(), End> {
        let Some(path) = params.first().and_then(|p| p.as_str().ok()) else {
            return self.reply_err(status::INV_PAR);
        };
        let dir = &self.session().dir;
        let outcome = match command {
            cmd::OPEN_FILE => dir.read(&path).and_then(|data| {
                self.check_size(data.len())?;
                self.file = Some(OpenFile::Read { data, at: 0 });
                Ok(())
            }),
            cmd::CREATE_FILE => crate::files::check_relative(&path).map(|()| {
                self.file = Some(OpenFile::Write {
                    path,
                    data: Vec::new(),
                });
            }),
            _ => dir.remove(&path),
        };
        match outcome {
            Ok(()) => self.reply_ok(&[]),
            Err(e) => {
                tracing::info!(conn = %self.id, error = %e, "QAP1 file command refused");
                self.reply_err(status::IO_ERROR)
            }
        }
    }

    fn check_size(&self, len: usize) -> Result<(), crate::files::FileError> {
        let max = self.state.config.limits.qap_max_message_bytes;
        if len as u64 > max {
            return Err(crate::files::FileError::Io(format!(
                "file of {len} bytes is over the {max}-byte limit"
            )));
        }
        Ok(())
    }

    /// `CMD_readFile [max bytes]`: the next piece as a raw payload; empty at the end.
    pub(super) fn read_file(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        let want = match params.first().map(Param::as_int) {
            None => 32_768,
            Some(Ok(n)) if n > 0 => n as usize,
            Some(_) => return self.reply_err(status::INV_PAR),
        };
        let piece = match &mut self.file {
            Some(OpenFile::Read { data, at }) => {
                let end = (*at + want).min(data.len());
                let piece = data[*at..end].to_vec();
                *at = end;
                piece
            }
            _ => return self.reply_err(status::NOT_OPEN),
        };
        self.reply_ok(&piece)
    }

    /// `CMD_writeFile` with a DT_BYTESTREAM.
    pub(super) fn write_file(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        let Some(p) = params.first().filter(|p| p.dt == dt::BYTESTREAM) else {
            return self.reply_err(status::INV_PAR);
        };
        let max = self.state.config.limits.qap_max_message_bytes;
        match &mut self.file {
            Some(OpenFile::Write { data, .. }) if (data.len() + p.data.len()) as u64 <= max => {
                data.extend_from_slice(p.data);
                self.reply_ok(&[])
            }
            Some(OpenFile::Write { .. }) => self.reply_err(status::IO_ERROR),
            _ => self.reply_err(status::NOT_OPEN),
        }
    }

    /// `CMD_closeFile`: a file being written is stored now (atomically).
    pub(super) fn close_file(&mut self) -> Result<(), End> {
        match self.file.take() {
            Some(OpenFile::Write { path, data }) => match self.session().dir.write(&path, &data) {
                Ok(()) => self.reply_ok(&[]),
                Err(e) => {
                    tracing::info!(conn = %self.id, error = %e, "QAP1 file write refused");
                    self.reply_err(status::IO_ERROR)
                }
            },
            Some(OpenFile::Read { .. }) => self.reply_ok(&[]),
            None => self.reply_err(status::NOT_OPEN),
        }
    }
}
