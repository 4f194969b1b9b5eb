//! Spool files for large bodies under `<state_dir>/spool/`: a body streams into `<random>.tmp`,
//! then at commit the file is fsynced, renamed to `<id>` and the directory fsynced, before the
//! message record is written. Owns file naming and that write order; never touches sled.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Suffix of files still being written (always removed by recovery).
pub const TMP_SUFFIX: &str = ".tmp";
/// Buffer between the session and the spool file.
const WRITE_BUFFER: usize = 64 * 1024;

/// A body being written to a temp file. Dropping it removes the file.
pub struct SpoolTmp {
    path: PathBuf,
    out: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

impl SpoolTmp {
    /// Create a fresh temp file in `dir`.
    pub async fn create(dir: &Path) -> io::Result<SpoolTmp> {
        let name = format!("{:016x}{}", fastrand::u64(..), TMP_SUFFIX);
        let path = dir.join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(SpoolTmp {
            path,
            out: Some(tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file)),
        })
    }

    pub async fn write_all(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.write_all(chunk).await,
            None => Err(io::Error::other("spool file already finished")),
        }
    }

    /// fsync the file, rename it to `dir/<name>` and fsync the directory. On error the temp
    /// (or renamed) file is removed. Returns the final path.
    pub async fn finish(mut self, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let result = self.finish_inner(dir, name).await;
        if result.is_err() {
            let _ = fs::remove_file(dir.join(name));
        }
        result
        // `self` drops here: removes the temp path if it still exists (it does not after a
        // successful rename).
    }

    async fn finish_inner(&mut self, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("spool file already finished"))?;
        out.flush().await?;
        let file = out.into_inner().into_std().await;
        let from = self.path.clone();
        let to = dir.join(name);
        let dir = dir.to_path_buf();
        let to2 = to.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            drop(file);
            fs::rename(&from, &to2)?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| io::Error::other(format!("spool writer task: {e}")))??;
        Ok(to)
    }
}

impl Drop for SpoolTmp {
    fn drop(&mut self) {
        // Not committed (or already renamed: then this is a harmless NotFound).
        let _ = fs::remove_file(&self.path);
    }
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Files in the spool directory: (name, is temp).
pub fn list(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let tmp = name.ends_with(TMP_SUFFIX);
        out.push((name, tmp));
    }
    Ok(out)
}
