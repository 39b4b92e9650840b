//! Every file operation of the log and its snapshots, behind one small trait:
//! [`RealFs`] (the default) does them on the real file system, and
//! [`SimDisk`] keeps them in memory with what was written apart from what
//! was synced, so a test can cut the power at any point and see exactly what
//! a real disk may have kept.
//!
//! # The failure model of [`SimDisk`]
//! - File contents: a write changes what reads see at once; it is durable
//!   only once the file is synced (`sync_data` or `sync_all`). At a power cut
//!   each file keeps its synced bytes plus a part of its unsynced ones chosen
//!   by the test ([`Cut`]): none, a prefix of the dirty pages, a prefix with
//!   the next page torn at a sector, or any subset of pages (writes reaching
//!   the platter out of order). Unsynced pages that are lost read as what
//!   was synced there (zeros past the synced end).
//! - Directory entries: creating, renaming and removing a file change what
//!   listings see at once, and are durable only once the directory is synced.
//!   A power cut forgets every entry change no directory sync covered (a file
//!   created and synced but never linked durably is gone; a rename or remove
//!   not covered is undone).
//! - Space: an optional capacity; a write past it fails with `StorageFull`
//!   and changes nothing (as `ENOSPC`), until space is freed or raised.
//! - After a cut, the handles of the old "machine" fail with an I/O error: a
//!   log writer still running there cannot touch the disk the test recovers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// An open file of a [`Vfs`], written at a cursor or at positions.
pub trait VfsFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `data` at the cursor and moves it past them.
    ///
    /// # Errors
    /// The OS error (`StorageFull` when the disk is full).
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// Writes all of `data` at `offset` (the cursor does not move).
    ///
    /// # Errors
    /// As [`VfsFile::write_all`].
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()>;
    /// Reserves disk space for `len` bytes from `offset` (extending the file
    /// with zeros), so that writes there cannot fail for want of room
    /// (`fallocate`; written zeros where the file system has no such call).
    ///
    /// # Errors
    /// The OS error (`StorageFull` when the disk has no room).
    fn allocate(&mut self, offset: u64, len: u64) -> std::io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len`.
    ///
    /// # Errors
    /// The OS error.
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
    /// Moves the cursor to `offset`.
    ///
    /// # Errors
    /// The OS error.
    fn seek_to(&mut self, offset: u64) -> std::io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    ///
    /// # Errors
    /// The OS error.
    fn sync_data(&mut self) -> std::io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    ///
    /// # Errors
    /// The OS error.
    fn sync_all(&mut self) -> std::io::Result<()>;
}

/// Held while a daemon owns a data dir; dropping it releases the dir.
pub trait DirLock: Send + Sync + std::fmt::Debug {}

/// Why a data dir could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process (or log) holds it.
    Held,
    /// The lock file could not be opened or locked.
    Io(std::io::Error),
}

/// The file operations of the log and snapshots.
pub trait Vfs: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its parents (0700) if missing.
    ///
    /// # Errors
    /// The OS error.
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()>;
    /// Takes the exclusive lock of `dir` (its `LOCK` file).
    ///
    /// # Errors
    /// [`LockError::Held`] if another holder has it.
    fn lock(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError>;
    /// The names of the files in `dir`.
    ///
    /// # Errors
    /// The OS error.
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// The whole content of `path`.
    ///
    /// # Errors
    /// The OS error.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// The whole content of `path`, into `buf` (replacing what it held, and
    /// reusing its memory where it can: a recovery reads one large file
    /// after another, and fresh memory costs a page fault per page).
    ///
    /// # Errors
    /// The OS error.
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
        *buf = self.read(path)?;
        Ok(())
    }
    /// At most the first `len` bytes of `path`.
    ///
    /// # Errors
    /// The OS error.
    fn read_prefix(&self, path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
        let mut bytes = self.read(path)?;
        bytes.truncate(len);
        Ok(bytes)
    }
    /// The size of `path` in bytes.
    ///
    /// # Errors
    /// The OS error.
    fn len(&self, path: &Path) -> std::io::Result<u64>;
    /// Creates `path` (0600), failing if it exists.
    ///
    /// # Errors
    /// The OS error.
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>>;
    /// Creates `path` (0600) or empties it.
    ///
    /// # Errors
    /// The OS error.
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>>;
    /// Opens an existing `path` for writing, the cursor at 0.
    ///
    /// # Errors
    /// The OS error.
    fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>>;
    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Removes `path`.
    ///
    /// # Errors
    /// The OS error.
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// Makes the entries of `dir` (creates, renames, removes) durable.
    ///
    /// # Errors
    /// The OS error.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl VfsFile for RealFile {
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(data, offset)
    }
    fn allocate(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(&self.0, FallocateFlags::empty(), offset, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
                use std::os::unix::fs::FileExt;
                let zeros = vec![0u8; 1 << 20];
                let mut at = offset;
                while at < offset + len {
                    let n = (offset + len - at).min(zeros.len() as u64);
                    self.0.write_all_at(&zeros[..n as usize], at)?;
                    at += n;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn seek_to(&mut self, offset: u64) -> std::io::Result<()> {
        self.0.seek(SeekFrom::Start(offset)).map(|_| ())
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code)] File);
impl DirLock for RealLock {}

fn private() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

impl Vfs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)
    }
    fn lock(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError> {
        let file = private()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(RealLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held),
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(e)),
        }
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        buf.clear();
        buf.reserve(usize::try_from(len).unwrap_or(0));
        f.read_to_end(buf)?;
        Ok(())
    }
    fn read_prefix(&self, path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(len as u64)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }
    fn len(&self, path: &Path) -> std::io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let f = private().create_new(true).write(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let f = private()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let f = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Which unsynced writes a simulated power cut keeps (per file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// None: every file is as last synced.
    Nothing,
    /// Every unsynced write (as if the power held long enough).
    Everything,
    /// The first `n` dirty pages of each file, in file order.
    Prefix(usize),
    /// The first `n` dirty pages, then the next one with only its first
    /// `sectors` sectors.
    Torn {
        /// Whole dirty pages kept.
        pages: usize,
        /// Sectors kept of the next one.
        sectors: usize,
    },
    /// The dirty pages whose bit in `mask` (page index modulo 64) is set:
    /// later pages on disk while earlier ones are not.
    Pages(u64),
}

/// Page size of the simulated disk.
pub const PAGE: usize = 4096;
/// Sector size of the simulated disk.
pub const SECTOR: usize = 512;

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power cut for sure.
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Set by a power cut: everything done through this disk fails (the
    /// disk to recover is the one the cut returned).
    dead: bool,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// Path -> inode, as listings see it.
    names: BTreeMap<PathBuf, u64>,
    /// Path -> inode, as a power cut keeps it.
    synced_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locked: BTreeSet<PathBuf>,
    capacity: Option<u64>,
    /// Makes every sync fail (a dying disk).
    sync_fails: bool,
}

impl SimState {
    /// Bytes held by the files as they are now (a truncation or a removal
    /// frees its blocks at once, synced or not, as on ext4).
    fn used(&self) -> u64 {
        self.names
            .values()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.data.len() as u64)
            .sum()
    }

    fn inode(&mut self, path: &Path) -> std::io::Result<&mut Inode> {
        let id = *self.names.get(path).ok_or_else(|| not_found(path))?;
        self.inodes.get_mut(&id).ok_or_else(|| not_found(path))
    }

    /// Whether growing a file from `old` to `new` bytes fits.
    fn fits(&self, old: usize, new: usize) -> bool {
        match self.capacity {
            Some(cap) if new > old => self.used() + (new - old) as u64 <= cap,
            _ => true,
        }
    }

    fn create_name(&mut self, path: &Path) -> std::io::Result<u64> {
        let parent = path.parent().unwrap_or(Path::new(""));
        if !self.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.names.insert(path.to_owned(), id);
        Ok(id)
    }
}

fn not_found(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{}: no such file (simulated disk)", path.display()),
    )
}

fn full() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "no space left on device (simulated disk)",
    )
}

fn dead() -> std::io::Error {
    std::io::Error::other("the power was cut (simulated disk)")
}

/// An in-memory disk with a power switch (see the module docs). Clones share
/// the disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    cursor: u64,
}

impl SimFile {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut SimState, u64) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut s = self.state.lock();
        if s.dead {
            return Err(dead());
        }
        f(&mut s, self.inode)
    }
}

fn write_at(s: &mut SimState, inode: u64, data: &[u8], offset: u64) -> std::io::Result<()> {
    let offset = usize::try_from(offset).map_err(std::io::Error::other)?;
    let end = offset + data.len();
    let old = s.inodes.get(&inode).map_or(0, |n| n.data.len());
    if !s.fits(old, end) {
        return Err(full());
    }
    let node = s.inodes.get_mut(&inode).ok_or_else(dead)?;
    if node.data.len() < end {
        node.data.resize(end, 0);
    }
    node.data[offset..end].copy_from_slice(data);
    Ok(())
}

impl VfsFile for SimFile {
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        let at = self.cursor;
        self.with(|s, i| write_at(s, i, data, at))?;
        self.cursor += data.len() as u64;
        Ok(())
    }
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.with(|s, i| write_at(s, i, data, offset))
    }
    fn allocate(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.with(|s, i| {
            let end = usize::try_from(offset + len).map_err(std::io::Error::other)?;
            let old = s.inodes.get(&i).map_or(0, |n| n.data.len());
            if end <= old {
                return Ok(());
            }
            if !s.fits(old, end) {
                return Err(full());
            }
            s.inodes.get_mut(&i).ok_or_else(dead)?.data.resize(end, 0);
            Ok(())
        })
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.with(|s, i| {
            let len = usize::try_from(len).map_err(std::io::Error::other)?;
            let old = s.inodes.get(&i).map_or(0, |n| n.data.len());
            if !s.fits(old, len) {
                return Err(full());
            }
            s.inodes.get_mut(&i).ok_or_else(dead)?.data.resize(len, 0);
            Ok(())
        })
    }
    fn seek_to(&mut self, offset: u64) -> std::io::Result<()> {
        self.with(|_, _| Ok(()))?;
        self.cursor = offset;
        Ok(())
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.with(|s, i| {
            if s.sync_fails {
                return Err(std::io::Error::other("I/O error on sync (simulated disk)"));
            }
            let node = s.inodes.get_mut(&i).ok_or_else(dead)?;
            node.synced.clone_from(&node.data);
            Ok(())
        })
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<SimState>>,
    dir: PathBuf,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.state.lock().locked.remove(&self.dir);
    }
}

impl SimDisk {
    /// An empty disk with no capacity limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits the bytes all files may hold (`None`: no limit). Writes past it
    /// fail with `StorageFull`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Bytes the files hold (counting unsynced growth).
    #[must_use]
    pub fn used(&self) -> u64 {
        self.state.lock().used()
    }

    /// Makes every sync fail (`true`) or work again.
    pub fn set_sync_fails(&self, fail: bool) {
        self.state.lock().sync_fails = fail;
    }

    /// The content of `path` as reads see it now (`None` if absent).
    #[must_use]
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let id = s.names.get(path)?;
        s.inodes.get(id).map(|n| n.data.clone())
    }

    /// Cuts the power: returns the disk as it comes back (what was synced
    /// and, of the rest, what `cut` says). This disk, and every handle and
    /// thread of the old machine still using it, fails from now on.
    #[must_use]
    pub fn power_cut(&self, cut: Cut) -> SimDisk {
        let mut s = self.state.lock();
        s.dead = true;
        let names = s.synced_names.clone();
        let mut inodes = BTreeMap::new();
        for id in names.values() {
            if let Some(node) = s.inodes.get(id) {
                let kept = survivor(node, cut);
                inodes.insert(
                    *id,
                    Inode {
                        data: kept.clone(),
                        synced: kept,
                    },
                );
            }
        }
        let state = SimState {
            dead: false,
            next_inode: s.next_inode,
            inodes,
            names: names.clone(),
            synced_names: names,
            dirs: s.dirs.clone(),
            locked: BTreeSet::new(),
            capacity: s.capacity,
            sync_fails: false,
        };
        SimDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// An open handle on `inode`, its cursor at 0.
    fn handle(&self, inode: u64) -> Box<dyn VfsFile> {
        Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode,
            cursor: 0,
        })
    }

    fn live(&self) -> std::io::Result<parking_lot::MutexGuard<'_, SimState>> {
        let s = self.state.lock();
        if s.dead {
            return Err(dead());
        }
        Ok(s)
    }
}

/// What a file holds after a power cut of kind `cut`.
fn survivor(node: &Inode, cut: Cut) -> Vec<u8> {
    let (data, synced) = (&node.data, &node.synced);
    let page_count = data.len().max(synced.len()).div_ceil(PAGE);
    let dirty: Vec<usize> = (0..page_count)
        .filter(|&p| {
            let r = p * PAGE..((p + 1) * PAGE);
            let a = data.get(r.start..r.end.min(data.len())).unwrap_or_default();
            let b = synced
                .get(r.start..r.end.min(synced.len()))
                .unwrap_or_default();
            a != b
        })
        .collect();
    let mut out = synced.clone();
    // A kept page brings its bytes and the file's length up to them.
    let keep = |out: &mut Vec<u8>, from: usize, to: usize| {
        let to = to.min(data.len());
        if from >= to {
            return;
        }
        if out.len() < to {
            out.resize(to, 0);
        }
        out[from..to].copy_from_slice(&data[from..to]);
    };
    match cut {
        Cut::Nothing => {}
        Cut::Everything => return data.clone(),
        Cut::Prefix(n) => {
            for &p in dirty.iter().take(n) {
                keep(&mut out, p * PAGE, (p + 1) * PAGE);
            }
        }
        Cut::Torn { pages, sectors } => {
            for &p in dirty.iter().take(pages) {
                keep(&mut out, p * PAGE, (p + 1) * PAGE);
            }
            if let Some(&p) = dirty.get(pages) {
                keep(
                    &mut out,
                    p * PAGE,
                    p * PAGE + sectors.min(PAGE / SECTOR) * SECTOR,
                );
            }
        }
        Cut::Pages(mask) => {
            for &p in &dirty {
                if mask & (1 << (p % 64)) != 0 {
                    keep(&mut out, p * PAGE, (p + 1) * PAGE);
                }
            }
        }
    }
    // A truncation not synced survives only with the writes after it.
    if data.len() < synced.len() && !matches!(cut, Cut::Nothing) {
        out.truncate(data.len());
    }
    out
}

impl Vfs for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        let mut s = self.live()?;
        for a in dir.ancestors() {
            s.dirs.insert(a.to_owned());
        }
        Ok(())
    }
    fn lock(&self, dir: &Path) -> Result<Box<dyn DirLock>, LockError> {
        let mut s = self.live().map_err(LockError::Io)?;
        if !s.locked.insert(dir.to_owned()) {
            return Err(LockError::Held);
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_owned(),
        }))
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let s = self.live()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut s = self.live()?;
        Ok(s.inode(path)?.data.clone())
    }
    fn len(&self, path: &Path) -> std::io::Result<u64> {
        let mut s = self.live()?;
        Ok(s.inode(path)?.data.len() as u64)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let mut s = self.live()?;
        if s.names.contains_key(path) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists (simulated disk)", path.display()),
            ));
        }
        let inode = s.create_name(path)?;
        Ok(self.handle(inode))
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let mut s = self.live()?;
        let inode = match s.names.get(path) {
            Some(&id) => {
                s.inode(path)?.data.clear();
                id
            }
            None => s.create_name(path)?,
        };
        Ok(self.handle(inode))
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        let s = self.live()?;
        let inode = *s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(self.handle(inode))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut s = self.live()?;
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_owned(), id);
        Ok(())
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let mut s = self.live()?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut s = self.live()?;
        if s.sync_fails {
            return Err(std::io::Error::other("I/O error on sync (simulated disk)"));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.synced_names.retain(|p, _| !in_dir(p));
        s.synced_names.extend(current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn disk() -> (SimDisk, PathBuf) {
        let d = SimDisk::new();
        let dir = PathBuf::from("/data");
        d.create_dir_all(&dir).unwrap();
        (d, dir)
    }

    #[test]
    fn unsynced_writes_and_entries_are_lost_at_a_cut() {
        let (d, dir) = disk();
        let a = dir.join("a");
        let mut f = d.create_new(&a).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        // Synced data, but the entry was never made durable.
        let d = d.power_cut(Cut::Everything);
        assert!(d.read(&a).is_err());
        assert!(f.write_all(b"x").is_err(), "old handles are dead");

        let mut f = d.create_new(&a).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all(b" world").unwrap();
        let d = d.power_cut(Cut::Nothing);
        assert_eq!(d.read(&a).unwrap(), b"hello");
    }

    #[test]
    fn pages_can_land_out_of_order() {
        let (d, dir) = disk();
        let a = dir.join("a");
        let mut f = d.create_new(&a).unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all(&vec![7u8; 3 * PAGE]).unwrap();
        let d = d.power_cut(Cut::Pages(0b100));
        let got = d.read(&a).unwrap();
        assert_eq!(got.len(), 3 * PAGE);
        assert!(got[..2 * PAGE].iter().all(|&b| b == 0));
        assert!(got[2 * PAGE..].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_torn_page_keeps_whole_sectors() {
        let (d, dir) = disk();
        let a = dir.join("a");
        let mut f = d.create_new(&a).unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all(&vec![1u8; 2 * PAGE]).unwrap();
        let d = d.power_cut(Cut::Torn {
            pages: 1,
            sectors: 3,
        });
        assert_eq!(d.read(&a).unwrap().len(), PAGE + 3 * SECTOR);
    }

    #[test]
    fn renames_need_a_directory_sync() {
        let (d, dir) = disk();
        let (tmp, fin) = (dir.join("x.tmp"), dir.join("x"));
        let mut f = d.create_new(&tmp).unwrap();
        f.write_all(b"snap").unwrap();
        f.sync_all().unwrap();
        d.sync_dir(&dir).unwrap();
        d.rename(&tmp, &fin).unwrap();
        let d = d.power_cut(Cut::Everything);
        assert!(d.read(&fin).is_err());
        assert_eq!(d.read(&tmp).unwrap(), b"snap");
    }

    #[test]
    fn a_full_disk_refuses_growth_and_changes_nothing() {
        let (d, dir) = disk();
        d.set_capacity(Some(10));
        let mut f = d.create_new(&dir.join("a")).unwrap();
        f.write_all(b"12345678").unwrap();
        let e = f.write_all(b"abc").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(d.read(&dir.join("a")).unwrap(), b"12345678");
        d.set_capacity(None);
        f.write_all(b"abc").unwrap();
    }
}
