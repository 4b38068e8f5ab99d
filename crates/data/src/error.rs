use std::path::PathBuf;

/// Everything that can go wrong while reading or fetching data; each message names the
/// file and what was expected, so the CLI can print it as one line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Missing(String),
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("download from {url} failed: {message}")]
    Download { url: String, message: String },
    #[error("checksum mismatch for {url}: expected MD5 {expected}, got {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Malformed {
            path: path.into(),
            message: message.into(),
        }
    }
}
