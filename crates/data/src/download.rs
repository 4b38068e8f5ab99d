//! Fetching the official CIFAR-10 binary archive: streamed to a temporary file while its MD5
//! is computed, checked against the published checksum, unpacked into a temporary folder and
//! only then renamed into place, so an interrupted or corrupted download never leaves a
//! half-written dataset where the reader would find it.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::DataError;
use crate::cifar10::{Cifar10, FOLDER_NAME};

/// Where the official binary archive is published.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The published MD5 of that archive.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Removes a temporary file or folder when dropped, unless it was [`TempPath::keep`]-ed.
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn new(path: PathBuf) -> Self {
        TempPath(Some(path))
    }
    fn path(&self) -> &Path {
        self.0.as_deref().expect("temporary path already released")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

/// What [`download_cifar10`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// The dataset was already in place and readable; nothing was fetched.
    AlreadyPresent(PathBuf),
    /// The archive was fetched (this many bytes), verified and unpacked here.
    Fetched { dir: PathBuf, bytes: u64 },
}

/// Downloads the CIFAR-10 binary archive from `url` into `dest`, verifies its MD5 against
/// `expected_md5`, and unpacks it to `dest/cifar-10-batches-bin`. `progress(done, total)`
/// is called as bytes arrive (`total` when the server sends a length).
pub fn download_cifar10(
    dest: &Path,
    url: &str,
    expected_md5: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<DownloadOutcome, DataError> {
    let final_dir = dest.join(FOLDER_NAME);
    if final_dir.is_dir() && Cifar10::load(&final_dir).is_ok() {
        return Ok(DownloadOutcome::AlreadyPresent(final_dir));
    }
    fs::create_dir_all(dest).map_err(|e| DataError::io(dest, e))?;
    let pid = std::process::id();

    // 1. Stream the archive to a temporary file, hashing as we go.
    let archive = TempPath::new(dest.join(format!(".cifar-10-binary.tar.gz.part-{pid}")));
    let (bytes, actual_md5) = fetch(url, archive.path(), progress)?;
    if !actual_md5.eq_ignore_ascii_case(expected_md5) {
        return Err(DataError::Checksum {
            url: url.to_owned(),
            expected: expected_md5.to_owned(),
            actual: actual_md5,
        });
    }

    // 2. Unpack into a temporary folder and check that a readable dataset came out.
    let staging = TempPath::new(dest.join(format!(".cifar-10-unpack-{pid}")));
    let file = fs::File::open(archive.path()).map_err(|e| DataError::io(archive.path(), e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(staging.path())
        .map_err(|e| DataError::malformed(url, format!("cannot unpack the archive: {e}")))?;
    let unpacked = staging.path().join(FOLDER_NAME);
    Cifar10::load(&unpacked)
        .map_err(|e| DataError::malformed(url, format!("the archive does not hold CIFAR-10: {e}")))?;

    // 3. Move it into place; a stale, unreadable folder there is replaced.
    if final_dir.exists() {
        let stale = TempPath::new(dest.join(format!(".cifar-10-stale-{pid}")));
        fs::rename(&final_dir, stale.path()).map_err(|e| DataError::io(&final_dir, e))?;
    }
    fs::rename(&unpacked, &final_dir).map_err(|e| DataError::io(&final_dir, e))?;
    Ok(DownloadOutcome::Fetched { dir: final_dir, bytes })
}

/// GETs `url` into `path`; returns the byte count and the hex MD5 of what was written.
fn fetch(url: &str, path: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<(u64, String), DataError> {
    let err = |message: String| DataError::Download {
        url: url.to_owned(),
        message,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let total = response.body().content_length();
    let mut reader = response.into_body().into_reader();
    let mut file = fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    progress(0, total);
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| DataError::io(path, e))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().map_err(|e| DataError::io(path, e))?;
    if let Some(t) = total
        && t != done
    {
        return Err(err(format!("connection closed after {done} of {t} bytes")));
    }
    let digest = hasher.finalize();
    Ok((done, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Hex MD5 of a byte string (used by tests to describe fixture archives).
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
