//! One error type for the whole core.
//!
//! Each [`ErrorKind`] corresponds to exactly one Python exception class in
//! `slabcache.errors` (the bindings hold the mapping), so a subsystem chooses
//! the kind and a clear message and never thinks about Python.

use std::fmt;

/// What went wrong, coarse enough to map onto one Python exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A value is out of range or malformed (negative size, NaN, bad shape). Python: `InvalidArgumentError` (ValueError).
    InvalidArgument,
    /// A value has the wrong type (key type mismatch, dtype). Python: `InvalidTypeError` (TypeError).
    InvalidType,
    /// An id or key that does not exist. Python: `NotFoundError` (KeyError).
    NotFound,
    /// An id or key that already exists where a fresh one is required. Python: `AlreadyExistsError` (KeyError).
    AlreadyExists,
    /// A pointer that is not a live allocation of this allocator. Python: `InvalidFreeError` (ValueError).
    InvalidFree,
    /// A pointer that was live once and is already free. Python: `DoubleFreeError` (InvalidFreeError).
    DoubleFree,
    /// An object used after it was freed or closed. Python: `ClosedError` (ValueError).
    Closed,
    /// The request cannot be satisfied with the memory or blocks available. Python: `OutOfMemoryError` (MemoryError).
    OutOfMemory,
    /// An operating-system I/O failure. Python: `StorageError` (OSError).
    Io,
    /// On-disk data failed validation (checksum, magic, version, truncation). Python: `CorruptionError` (StorageError).
    Corrupt,
    /// Another process holds the lock on a store. Python: `LockedError` (StorageError).
    Locked,
}

impl ErrorKind {
    /// The name of the Python exception class in `slabcache.errors` for this kind.
    ///
    /// ```
    /// use slabcache_core::ErrorKind;
    /// assert_eq!(ErrorKind::DoubleFree.python_class(), "DoubleFreeError");
    /// ```
    pub const fn python_class(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgumentError",
            ErrorKind::InvalidType => "InvalidTypeError",
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::AlreadyExists => "AlreadyExistsError",
            ErrorKind::InvalidFree => "InvalidFreeError",
            ErrorKind::DoubleFree => "DoubleFreeError",
            ErrorKind::Closed => "ClosedError",
            ErrorKind::OutOfMemory => "OutOfMemoryError",
            ErrorKind::Io => "StorageError",
            ErrorKind::Corrupt => "CorruptionError",
            ErrorKind::Locked => "LockedError",
        }
    }
}

/// An error from the core: a kind and a human-readable message.
///
/// ```
/// use slabcache_core::{Error, ErrorKind};
/// let e = Error::invalid_argument("size must be positive, got -1");
/// assert_eq!(e.kind(), ErrorKind::InvalidArgument);
/// assert!(e.to_string().contains("size must be positive"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    errno: Option<i32>,
}

impl Error {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            errno: None,
        }
    }
    /// The same error carrying the operating-system error number (`ENOSPC`, `EIO`, ...).
    ///
    /// ```
    /// use slabcache_core::{Error, ErrorKind};
    /// let e = Error::new(ErrorKind::Io, "disk full").with_errno(28);
    /// assert_eq!(e.errno(), Some(28));
    /// ```
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }
    /// The operating-system error number behind an I/O failure, if known.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// Shorthand for [`ErrorKind::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }
    /// Shorthand for [`ErrorKind::OutOfMemory`].
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfMemory, message)
    }
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => {
                ErrorKind::Corrupt
            }
            std::io::ErrorKind::OutOfMemory => ErrorKind::OutOfMemory,
            _ => ErrorKind::Io,
        };
        let errno = e.raw_os_error();
        let err = Error::new(kind, e.to_string());
        match errno {
            Some(code) => err.with_errno(code),
            None => err,
        }
    }
}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_storage_kinds() {
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read");
        assert_eq!(Error::from(eof).kind(), ErrorKind::Corrupt);
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "nope");
        assert_eq!(Error::from(denied).kind(), ErrorKind::Io);
    }
}
