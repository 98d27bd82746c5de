//! Spool files on local disk: `<dir>/<seq:020>.spool`, the object's bytes
//! then a trailer (path, lengths, SHA-256, magic), written as `.part`,
//! synced, renamed and the directory synced; read back with the trailer and
//! (for uploads) the checksum verified. See the module doc of
//! [`super`] for the format. Nothing here knows about the object store.

use super::*;

pub(super) fn sync_dir(dir: &FsPath) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

pub(super) fn write_file(
    dir: &FsPath,
    seq: u64,
    location: &Path,
    payload: &PutPayload,
) -> Result<Entry, SpoolError> {
    let part = dir.join(format!("{seq:020}.part"));
    let file = dir.join(format!("{seq:020}.spool"));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for chunk in payload.iter() {
        hasher.update(chunk);
        size += chunk.len() as u64;
    }
    let sha256: [u8; 32] = hasher.finalize().into();
    let path_bytes = location.as_ref().as_bytes();
    let path_len = u32::try_from(path_bytes.len()).map_err(|_| SpoolError::Corrupt {
        path: part.clone(),
        reason: "object path too long".into(),
    })?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)?;
        for chunk in payload.iter() {
            f.write_all(chunk)?;
        }
        f.write_all(path_bytes)?;
        f.write_all(&path_len.to_be_bytes())?;
        f.write_all(&size.to_be_bytes())?;
        f.write_all(&sha256)?;
        f.write_all(MAGIC)?;
        f.sync_all()?;
        let modified = f.metadata()?.modified()?;
        drop(f);
        std::fs::rename(&part, &file)?;
        Ok(modified)
    })();
    let modified = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(SpoolError::Io {
                path: part,
                source: e,
            });
        }
    };
    sync_dir(dir)?;
    Ok(Entry {
        location: location.clone(),
        file,
        size,
        file_len: size + u64::from(path_len) + TRAILER_FIXED,
        sha256,
        modified,
    })
}

/// Reads a spool file's trailer (and, with `check_data`, verifies the data).
pub(super) fn read_entry(file: &FsPath, check_data: bool) -> Result<Entry, SpoolError> {
    let corrupt = |reason: &str| SpoolError::Corrupt {
        path: file.to_owned(),
        reason: reason.to_owned(),
    };
    let mut f = File::open(file).map_err(io_err(file))?;
    let meta = f.metadata().map_err(io_err(file))?;
    let file_len = meta.len();
    if file_len < TRAILER_FIXED {
        return Err(corrupt("shorter than a trailer"));
    }
    let mut fixed = [0u8; TRAILER_FIXED as usize];
    f.seek(SeekFrom::Start(file_len - TRAILER_FIXED))
        .and_then(|_| f.read_exact(&mut fixed))
        .map_err(io_err(file))?;
    if &fixed[44..52] != MAGIC {
        return Err(corrupt("no CHAPSPL1 trailer"));
    }
    let path_len = u64::from(u32::from_be_bytes(
        fixed[0..4]
            .try_into()
            .expect("4-byte slice of a fixed array"),
    ));
    let size = u64::from_be_bytes(
        fixed[4..12]
            .try_into()
            .expect("8-byte slice of a fixed array"),
    );
    let sha256: [u8; 32] = fixed[12..44]
        .try_into()
        .expect("32-byte slice of a fixed array");
    if size
        .checked_add(path_len)
        .and_then(|n| n.checked_add(TRAILER_FIXED))
        != Some(file_len)
    {
        return Err(corrupt("lengths in the trailer do not add up to the file"));
    }
    let mut path_bytes = vec![0u8; usize::try_from(path_len).map_err(|_| corrupt("path length"))?];
    f.seek(SeekFrom::Start(size))
        .and_then(|_| f.read_exact(&mut path_bytes))
        .map_err(io_err(file))?;
    let location = std::str::from_utf8(&path_bytes)
        .ok()
        .and_then(|s| Path::parse(s).ok())
        .ok_or_else(|| corrupt("object path is not a valid path"))?;
    if check_data {
        f.seek(SeekFrom::Start(0)).map_err(io_err(file))?;
        let mut hasher = Sha256::new();
        let copied = std::io::copy(&mut (&mut f).take(size), &mut HashWriter(&mut hasher))
            .map_err(io_err(file))?;
        if copied != size || <[u8; 32]>::from(hasher.finalize()) != sha256 {
            return Err(corrupt("data does not match its SHA-256"));
        }
    }
    Ok(Entry {
        location,
        file: file.to_owned(),
        size,
        file_len,
        sha256,
        modified: meta.modified().map_err(io_err(file))?,
    })
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a spooled object's data for upload, checking its SHA-256.
pub(super) fn read_data(entry: &Entry) -> Result<bytes::Bytes, SpoolError> {
    let mut f = File::open(&entry.file).map_err(io_err(&entry.file))?;
    let mut data = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
    (&mut f)
        .take(entry.size)
        .read_to_end(&mut data)
        .map_err(io_err(&entry.file))?;
    let sha: [u8; 32] = Sha256::digest(&data).into();
    if data.len() as u64 != entry.size || sha != entry.sha256 {
        return Err(SpoolError::Corrupt {
            path: entry.file.clone(),
            reason: "data does not match its SHA-256".into(),
        });
    }
    Ok(data.into())
}

pub(super) type Loaded = (nix::fcntl::Flock<File>, BTreeMap<u64, Entry>, u64);

/// Creates or opens the spool directory: takes the lock, removes
/// unacknowledged `.part` files, loads and checks every `.spool` file.
pub(super) fn load(dir: &FsPath) -> Result<Loaded, SpoolError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_path = dir.join(LOCK);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => SpoolError::Locked {
                path: dir.to_owned(),
            },
            e => SpoolError::Io {
                path: lock_path.clone(),
                source: e.into(),
            },
        })?;
    let mut entries = BTreeMap::new();
    let mut removed_parts = false;
    for item in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let path = item.path();
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".part") {
            // Never renamed into place, so never acknowledged.
            tracing::warn!(file = %path.display(), "removing an incomplete spool file");
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed_parts = true;
        } else if let Some(stem) = name.strip_suffix(".spool") {
            let seq: u64 = stem.parse().map_err(|_| SpoolError::Corrupt {
                path: path.clone(),
                reason: "name is not <seq>.spool".into(),
            })?;
            entries.insert(seq, read_entry(&path, true)?);
        }
    }
    if removed_parts {
        sync_dir(dir)?;
    }
    let conflicts_dir = dir.join(CONFLICTS);
    let conflicts = match std::fs::read_dir(&conflicts_dir) {
        Ok(rd) => rd.filter(|e| e.is_ok()).count() as u64,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(&conflicts_dir)(e)),
    };
    Ok((lock, entries, conflicts))
}
