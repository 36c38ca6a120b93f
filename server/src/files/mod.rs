//! Per-user folders on disk, reached only through directory handles (cap-std).
//!
//! ```text
//! <data>/users/                    UserDirs     (0700; 0711 with worker accounts)
//!   <user>/                        UserDir      (0700, R's working tree for that user)
//!     sessions/<uuid>/             ConfinedDir  (0700, one per session)
//!     tmp/<uuid>/                  (0700, a confined session's R temp dir)
//!     jobs/                        ConfinedDir  (0700)
//! ```
//!
//! With worker accounts (the host runs as root), `<data>` and `users/` become 0711
//! (traverse, no listing: `open_path_for_accounts` in `confine/mod.rs`), and a session's folders, from
//! `<user>/` down, are handed to the account leased for it (`engine/start.rs`), so
//! they stay 0700 but owned by that account, which no other account can enter.
//!
//! This module owns every file access the server makes on a user's behalf. A caller
//! names files by a relative, `/`-separated string; [`check_relative`] vets it
//! lexically before the disk is touched, then the path is walked one component at a
//! time with no-follow opens, so no symbolic link is ever traversed: not one that
//! leaves the folder (cap-std refuses those anyway) and not one that stays inside it
//! (a user's R code may plant links to another user's files). A link can be removed
//! but never read, written or walked through. The only path strings that leave the
//! module are the absolute folders from `path()`, for R's `setwd()`; it must never
//! build a path to open from a string.
//!
//! `list` reports regular files and folders only: symbolic links, sockets, FIFOs,
//! names that are not valid UTF-8 and names [`check_relative`] would refuse are
//! left out, so every listed path can be read. [`ConfinedDir::total_size`] counts
//! every regular file, listed or not.
//!
//! Known limit: a regular file is checked before it is opened and again after; if
//! the user's own code swaps it for a FIFO in between, the open waits for a writer.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt, Metadata, MetadataExt, OpenOptions};
use cap_std::fs::{File, OpenOptionsExt};
use serde::Serialize;

/// Longest single path component, in bytes (the usual `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest relative path, in bytes (the usual `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most components in one relative path.
pub const MAX_COMPONENTS: usize = 32;
/// Most entries one walk of a folder visits before giving up with [`FileError::TooMany`].
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Deepest folder a walk descends into; deeper trees are [`FileError::TooMany`].
pub const MAX_WALK_DEPTH: usize = 2 * MAX_COMPONENTS;
/// Names starting with this are the module's temporary files, never a user's.
pub const TEMP_PREFIX: &str = ".rookery-tmp-";

const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;
const USERS: &str = "users";
const SESSIONS: &str = "sessions";
const JOBS: &str = "jobs";
const TMP: &str = "tmp";

/// What went wrong with a file operation; plain data, mapped to HTTP by the routes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The path broke a rule (lexical, or it meets a link or the wrong kind of file). 400.
    #[error("bad path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    /// Nothing at that path. 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// A walk met more than [`MAX_LIST_ENTRIES`] entries or deeper than [`MAX_WALK_DEPTH`].
    #[error(
        "too many entries: more than {MAX_LIST_ENTRIES}, or deeper than {MAX_WALK_DEPTH} folders"
    )]
    TooMany,
    /// Any other failure of the file system. 500.
    #[error("file system error: {0}")]
    Io(String),
}

/// One entry of [`ConfinedDir::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative to the listed folder, `/`-separated.
    pub path: String,
    /// Bytes for a file; what the file system reports for a folder.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: i64,
    pub is_dir: bool,
}

/// Checks a relative path lexically, before anything touches the disk. The error
/// names the rule that was broken.
pub fn check_relative(rel: &str) -> Result<(), FileError> {
    match broken_rule(rel) {
        None => Ok(()),
        Some(reason) => Err(bad(rel, reason)),
    }
}

fn broken_rule(rel: &str) -> Option<&'static str> {
    if rel.is_empty() {
        return Some("the path is empty");
    }
    if rel.len() > MAX_PATH_BYTES {
        return Some("the path is longer than 4096 bytes");
    }
    if rel.starts_with('/') {
        return Some("the path is absolute");
    }
    whole_path_rule(rel).or_else(|| components_rule(rel))
}

fn whole_path_rule(rel: &str) -> Option<&'static str> {
    if rel.contains('\\') {
        Some("the path contains a backslash")
    } else if rel.contains('\0') {
        Some("the path contains a NUL byte")
    } else if rel.chars().any(char::is_control) {
        Some("the path contains a control character")
    } else if rel.split('/').count() > MAX_COMPONENTS {
        Some("the path has more than 32 components")
    } else {
        None
    }
}

fn components_rule(rel: &str) -> Option<&'static str> {
    rel.split('/').find_map(component_rule)
}

fn component_rule(part: &str) -> Option<&'static str> {
    match part {
        "" => Some("the path has an empty component (`//` or a trailing `/`)"),
        "." => Some("the path has a `.` component"),
        ".." => Some("the path has a `..` component"),
        _ if part.len() > MAX_COMPONENT_BYTES => Some("a component is longer than 255 bytes"),
        _ if part.starts_with(TEMP_PREFIX) => {
            Some("a component uses the reserved `.rookery-tmp-` prefix")
        }
        _ => None,
    }
}

fn bad(rel: &str, reason: &'static str) -> FileError {
    FileError::BadPath {
        path: rel.to_owned(),
        reason,
    }
}

fn io_error(what: &str, e: &io::Error) -> FileError {
    FileError::Io(format!("{what}: {e}"))
}

/// Turns a failed open of `name` (a component of `rel`) into the most telling error.
fn explain(dir: &Dir, name: &str, rel: &str, e: &io::Error) -> FileError {
    if e.kind() == io::ErrorKind::NotFound {
        return FileError::NotFound(rel.to_owned());
    }
    match dir.symlink_metadata(name) {
        Ok(m) if m.is_symlink() => bad(rel, "the path goes through a symbolic link"),
        Ok(m) if !m.is_dir() && !m.is_file() => bad(rel, "the path meets a special file"),
        Ok(m) if !m.is_dir() => bad(rel, "a parent of the path is not a folder"),
        _ => io_error(rel, e),
    }
}

/// Creates `name` in `dir` with mode 0700 unless it exists, and opens it, no-follow.
fn ensure_private_dir(dir: &Dir, name: &str) -> io::Result<Dir> {
    match dir.create_dir_with(name, DirBuilder::new().mode(PRIVATE_DIR_MODE)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    dir.open_dir_nofollow(name)
}

/// The handle on `<data>/users`, from which each user's folder is opened.
#[derive(Debug)]
pub struct UserDirs {
    dir: Dir,
    root: PathBuf,
}

impl UserDirs {
    /// Opens `<data>/users`, creating `data` if needed and `users` with mode 0700.
    pub fn open(data: &Path) -> io::Result<UserDirs> {
        std::fs::create_dir_all(data)?;
        let base = Dir::open_ambient_dir(data, cap_std::ambient_authority())?;
        let dir = ensure_private_dir(&base, USERS)?;
        let root = data.canonicalize()?.join(USERS);
        Ok(UserDirs { dir, root })
    }

    /// The folder of user `name` (one plain component), created 0700 on first use.
    pub fn user(&self, name: &str) -> Result<UserDir, FileError> {
        check_relative(name)?;
        if name.contains('/') {
            return Err(bad(name, "a user name must be one path component"));
        }
        let dir =
            ensure_private_dir(&self.dir, name).map_err(|e| explain(&self.dir, name, name, &e))?;
        Ok(UserDir {
            dir,
            path: self.root.join(name),
        })
    }

    /// Removes user `name`'s folder and everything in it (links removed, never
    /// followed); a user without a folder is fine.
    pub fn remove_user(&self, name: &str) -> Result<(), FileError> {
        check_relative(name)?;
        if name.contains('/') {
            return Err(bad(name, "a user name must be one path component"));
        }
        match self.dir.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => self.dir.remove_dir_all(name),
            Ok(_) => self.dir.remove_file_or_symlink(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|e| io_error(name, &e))
    }
}

/// One user's folder: their sessions and jobs.
#[derive(Debug)]
pub struct UserDir {
    dir: Dir,
    path: PathBuf,
}

impl UserDir {
    /// Creates the folder of a new session (mode 0700); an existing one is an error.
    pub fn create_session(&self, id: &uuid::Uuid) -> Result<ConfinedDir, FileError> {
        let sessions = self.private_subdir(SESSIONS)?;
        let name = id.to_string();
        sessions
            .create_dir_with(&name, DirBuilder::new().mode(PRIVATE_DIR_MODE))
            .map_err(|e| io_error(&session_rel(id), &e))?;
        self.open_session(&sessions, id)
    }

    /// The folder of an existing session; [`FileError::NotFound`] if there is none.
    pub fn session(&self, id: &uuid::Uuid) -> Result<ConfinedDir, FileError> {
        let sessions = self.dir.open_dir_nofollow(SESSIONS);
        let sessions = sessions.map_err(|e| explain(&self.dir, SESSIONS, &session_rel(id), &e))?;
        self.open_session(&sessions, id)
    }

    /// Removes a session's folder and everything in it (links are removed, not followed).
    pub fn remove_session(&self, id: &uuid::Uuid) -> Result<(), FileError> {
        let rel = session_rel(id);
        let sessions = self.dir.open_dir_nofollow(SESSIONS);
        let sessions = sessions.map_err(|e| explain(&self.dir, SESSIONS, &rel, &e))?;
        let name = id.to_string();
        let meta = sessions
            .symlink_metadata(&name)
            .map_err(|e| explain(&sessions, &name, &rel, &e))?;
        let removed = if meta.is_dir() {
            sessions.remove_dir_all(&name)
        } else {
            sessions.remove_file_or_symlink(&name)
        };
        removed.map_err(|e| io_error(&rel, &e))
    }

    /// Creates `tmp/<id>/` (0700): the R temp dir of one confined session. Returns
    /// its absolute path, for the worker; never open it by that path.
    pub fn create_temp(&self, id: &uuid::Uuid) -> Result<PathBuf, FileError> {
        let tmp = self.private_subdir(TMP)?;
        let name = id.to_string();
        let rel = format!("{TMP}/{name}");
        tmp.create_dir_with(&name, DirBuilder::new().mode(PRIVATE_DIR_MODE))
            .map_err(|e| io_error(&rel, &e))?;
        Ok(self.path.join(TMP).join(name))
    }

    /// Removes `tmp/<id>/` and everything in it; a missing one is fine.
    pub fn remove_temp(&self, id: &uuid::Uuid) -> Result<(), FileError> {
        let rel = format!("{TMP}/{id}");
        let tmp = match self.dir.open_dir_nofollow(TMP) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(explain(&self.dir, TMP, &rel, &e)),
        };
        match tmp.remove_dir_all(id.to_string()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&rel, &e)),
        }
    }

    /// The absolute path of the user's temp folders (`tmp/`), wiped when the user's
    /// worker account is given back.
    pub fn temp_root(&self) -> PathBuf {
        self.path.join(TMP)
    }

    /// The user's `jobs` folder, created 0700 on first use.
    pub fn jobs(&self) -> Result<ConfinedDir, FileError> {
        let dir = self.private_subdir(JOBS)?;
        Ok(ConfinedDir {
            dir,
            path: self.path.join(JOBS),
            owner: None,
        })
    }

    /// The absolute path of the user's folder, for R's `setwd()`; never open it.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn private_subdir(&self, name: &str) -> Result<Dir, FileError> {
        ensure_private_dir(&self.dir, name).map_err(|e| explain(&self.dir, name, name, &e))
    }

    fn open_session(&self, sessions: &Dir, id: &uuid::Uuid) -> Result<ConfinedDir, FileError> {
        let name = id.to_string();
        let dir = sessions.open_dir_nofollow(&name);
        let dir = dir.map_err(|e| explain(sessions, &name, &session_rel(id), &e))?;
        Ok(ConfinedDir {
            dir,
            path: self.path.join(SESSIONS).join(name),
            owner: None,
        })
    }
}

fn session_rel(id: &uuid::Uuid) -> String {
    format!("{SESSIONS}/{id}")
}

/// A folder whose files are named only by checked relative paths, never through a link.
#[derive(Debug)]
pub struct ConfinedDir {
    dir: Dir,
    path: PathBuf,
    /// Files and folders the server creates here are handed to this uid/gid (the
    /// worker account leased for the folder's owner), so confined R can use them.
    owner: Option<(u32, u32)>,
}

impl ConfinedDir {
    /// The bytes of the regular file at `rel`.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, FileError> {
        let (mut file, len) = self.open(rel)?;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(rel, &e))?;
        Ok(bytes)
    }

    /// The regular file at `rel`, opened for reading, and its size: for sending it
    /// a piece at a time.
    pub fn open(&self, rel: &str) -> Result<(std::fs::File, u64), FileError> {
        check_relative(rel)?;
        let (parent, name) = self.open_parent(rel, false)?;
        let file = open_regular(&parent, name, rel)?;
        let len = file.metadata().map_err(|e| io_error(rel, &e))?.len();
        Ok((file.into_std(), len))
    }

    /// Writes `bytes` to `rel` whole: into a temporary name, then renamed over the
    /// target, so a reader sees the old file or the new one. Missing parent folders
    /// are created (0700); an existing link or folder at `rel` is refused.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), FileError> {
        let mut file = self.create(rel)?;
        file.write_all(bytes)?;
        file.commit()
    }

    /// A file for `rel` written a piece at a time, as [`ConfinedDir::write`] writes
    /// one whole: the pieces go to a temporary name, and only
    /// [`NewFile::commit`] puts the file at `rel`. Dropped uncommitted, it leaves
    /// nothing behind and the old file, if any, untouched.
    pub fn create(&self, rel: &str) -> Result<NewFile, FileError> {
        check_relative(rel)?;
        let (parent, name) = self.open_parent(rel, true)?;
        refuse_non_file(&parent, name, rel)?;
        let temp = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let file = create_new(&parent, &temp).map_err(|e| io_error(rel, &e))?;
        let root = self.dir.try_clone().map_err(|e| io_error(rel, &e))?;
        Ok(NewFile {
            file: Some(file),
            parent,
            temp,
            name: name.to_owned(),
            rel: rel.to_owned(),
            root: ConfinedDir {
                dir: root,
                path: self.path.clone(),
                owner: self.owner,
            },
        })
    }

    /// Hands `rel` and the folders leading to it to [`ConfinedDir::owned_by`]'s
    /// account, never through a link.
    fn give_to_owner(&self, rel: &str) -> io::Result<()> {
        let Some((uid, gid)) = self.owner else {
            return Ok(());
        };
        let uid = rustix::fs::Uid::from_raw(uid);
        let gid = rustix::fs::Gid::from_raw(gid);
        let mut parts = rel.split('/').peekable();
        let mut dir = self.dir.try_clone()?;
        while let Some(part) = parts.next() {
            rustix::fs::chownat(
                &dir,
                part,
                Some(uid),
                Some(gid),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )?;
            if parts.peek().is_some() {
                dir = dir.open_dir_nofollow(part)?;
            }
        }
        Ok(())
    }

    /// Hands what the server writes here to `uid`/`gid` from now on.
    pub fn owned_by(mut self, uid: u32, gid: u32) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    /// Removes the file, link or empty folder at `rel` (a link itself, not its target).
    pub fn remove(&self, rel: &str) -> Result<(), FileError> {
        check_relative(rel)?;
        let (parent, name) = self.open_parent(rel, false)?;
        let meta = parent
            .symlink_metadata(name)
            .map_err(|e| explain(&parent, name, rel, &e))?;
        if !meta.is_dir() {
            return parent
                .remove_file_or_symlink(name)
                .map_err(|e| io_error(rel, &e));
        }
        parent
            .remove_dir(name)
            .map_err(|e| match is_empty_dir(&parent, name) {
                Ok(false) => bad(rel, "the folder is not empty"),
                _ => io_error(rel, &e),
            })
    }

    /// Every file and folder inside, recursively, sorted by path; links are left out.
    pub fn list(&self) -> Result<Vec<FileEntry>, FileError> {
        self.list_capped(MAX_LIST_ENTRIES)
    }

    /// The bytes of every regular file inside, listed or not (links are not followed).
    pub fn total_size(&self) -> Result<u64, FileError> {
        let mut walk = Walk::new(MAX_LIST_ENTRIES);
        walk.dir(&self.dir, "", 0)?;
        Ok(walk
            .found
            .iter()
            .filter(|f| !f.entry.is_dir)
            .map(|f| f.entry.size)
            .sum())
    }

    /// The absolute path of this folder, for R's `setwd()`; never open it.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn list_capped(&self, cap: usize) -> Result<Vec<FileEntry>, FileError> {
        let mut walk = Walk::new(cap);
        walk.dir(&self.dir, "", 0)?;
        let mut out: Vec<FileEntry> = walk
            .found
            .into_iter()
            .filter(|f| f.listed)
            .map(|f| f.entry)
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Opens the folder holding `rel`'s last component, walking component by component
    /// without following links; with `create`, missing folders are made (0700).
    fn open_parent<'a>(&self, rel: &'a str, create: bool) -> Result<(Dir, &'a str), FileError> {
        let (folders, name) = match rel.rsplit_once('/') {
            Some((folders, name)) => (Some(folders), name),
            None => (None, rel),
        };
        let mut dir = self.dir.try_clone().map_err(|e| io_error(rel, &e))?;
        for part in folders.into_iter().flat_map(|f| f.split('/')) {
            dir = step(&dir, part, rel, create)?;
        }
        Ok((dir, name))
    }
}

/// Opens the folder `name` inside `dir`, no-follow, creating it first if asked.
fn step(dir: &Dir, name: &str, rel: &str, create: bool) -> Result<Dir, FileError> {
    let opened = if create {
        ensure_private_dir(dir, name)
    } else {
        dir.open_dir_nofollow(name)
    };
    opened.map_err(|e| explain(dir, name, rel, &e))
}

/// Opens a regular file for reading; links, folders and special files are refused.
fn open_regular(dir: &Dir, name: &str, rel: &str) -> Result<File, FileError> {
    let meta = dir
        .symlink_metadata(name)
        .map_err(|e| explain(dir, name, rel, &e))?;
    kind_is_file(&meta, rel)?;
    let mut opts = OpenOptions::new();
    opts.read(true).follow(FollowSymlinks::No);
    let file = dir
        .open_with(name, &opts)
        .map_err(|e| explain(dir, name, rel, &e))?;
    kind_is_file(&file.metadata().map_err(|e| io_error(rel, &e))?, rel)?;
    Ok(file)
}

fn kind_is_file(meta: &Metadata, rel: &str) -> Result<(), FileError> {
    if meta.is_symlink() {
        Err(bad(rel, "the path is a symbolic link"))
    } else if meta.is_dir() {
        Err(bad(rel, "the path is a folder"))
    } else if !meta.is_file() {
        Err(bad(rel, "the path is a special file"))
    } else {
        Ok(())
    }
}

/// Allows writing `name` only if nothing is there yet or a regular file is.
fn refuse_non_file(dir: &Dir, name: &str, rel: &str) -> Result<(), FileError> {
    match dir.symlink_metadata(name) {
        Ok(meta) => kind_is_file(&meta, rel),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(rel, &e)),
    }
}

fn create_new(dir: &Dir, name: &str) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .follow(FollowSymlinks::No);
    dir.open_with(name, &opts)
}

/// A file being written (see [`ConfinedDir::create`]).
#[derive(Debug)]
pub struct NewFile {
    /// `None` once committed.
    file: Option<File>,
    parent: Dir,
    temp: String,
    name: String,
    rel: String,
    root: ConfinedDir,
}

impl NewFile {
    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        let file = self
            .file
            .as_mut()
            .expect("a NewFile is written before it is committed");
        file.write_all(bytes).map_err(|e| io_error(&self.rel, &e))
    }

    /// Puts the file at its path, over the old one if any, and hands it to the
    /// folder's owner account.
    pub fn commit(mut self) -> Result<(), FileError> {
        let file = self.file.take().expect("a NewFile is committed once");
        let rel = self.rel.clone();
        drop(file);
        let placed = self
            .parent
            .rename(&self.temp, &self.parent, &self.name)
            .map_err(|e| io_error(&rel, &e));
        if placed.is_err() {
            let _ = self.parent.remove_file(&self.temp);
        }
        placed?;
        self.root
            .give_to_owner(&rel)
            .map_err(|e| io_error(&rel, &e))
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.parent.remove_file(&self.temp);
        }
    }
}

fn is_empty_dir(dir: &Dir, name: &str) -> io::Result<bool> {
    Ok(dir.open_dir_nofollow(name)?.entries()?.next().is_none())
}

/// One thing a walk met: listed if [`check_relative`] accepts its path.
#[derive(Debug)]
struct Found {
    entry: FileEntry,
    listed: bool,
}

/// A bounded depth-first walk that never follows a link.
#[derive(Debug)]
struct Walk {
    cap: usize,
    seen: usize,
    found: Vec<Found>,
}

impl Walk {
    fn new(cap: usize) -> Walk {
        Walk {
            cap,
            seen: 0,
            found: Vec::new(),
        }
    }

    fn dir(&mut self, dir: &Dir, prefix: &str, depth: usize) -> Result<(), FileError> {
        if depth >= MAX_WALK_DEPTH {
            return Err(FileError::TooMany);
        }
        let entries = dir.entries().map_err(|e| io_error(prefix, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(prefix, &e))?;
            self.seen += 1;
            if self.seen > self.cap {
                return Err(FileError::TooMany);
            }
            self.entry(dir, &entry.file_name().to_string_lossy(), prefix, depth)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: &Dir,
        name: &str,
        prefix: &str,
        depth: usize,
    ) -> Result<(), FileError> {
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = match dir.symlink_metadata(name) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // removed meanwhile
            Err(e) => return Err(io_error(&path, &e)),
        };
        if !meta.is_dir() && !meta.is_file() {
            return Ok(());
        }
        let listed = check_relative(&path).is_ok();
        let entry = FileEntry {
            size: meta.size(),
            modified: meta.mtime(),
            is_dir: meta.is_dir(),
            path,
        };
        let sub = if entry.is_dir {
            Some(entry.path.clone())
        } else {
            None
        };
        self.found.push(Found { entry, listed });
        match sub {
            Some(sub) => self.subdir(dir, name, &sub, depth),
            None => Ok(()),
        }
    }

    fn subdir(&mut self, dir: &Dir, name: &str, path: &str, depth: usize) -> Result<(), FileError> {
        match dir.open_dir_nofollow(name) {
            Ok(sub) => self.dir(&sub, path, depth + 1),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(explain(dir, name, path, &e)),
        }
    }
}

#[cfg(test)]
mod tests;
