//! The API's bearer-token policy: where the token comes from, what is refused, and the
//! constant-time comparison every guarded request goes through.

use std::path::Path;

use subtle::ConstantTimeEq;

/// The shortest API token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;
/// The longest API token accepted.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Why an API token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("cannot read the API token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("the API token environment variable ${var} is not set (or is not valid UTF-8)")]
    EnvUnset {
        /// The variable.
        var: String,
    },
    /// The token is empty.
    #[error(
        "the API token from {origin} is empty; put a random token of at least {MIN_TOKEN_CHARS} characters there (e.g. `openssl rand -hex 32`)"
    )]
    Empty {
        /// Where it came from.
        origin: String,
    },
    /// The token is too short.
    #[error(
        "the API token from {origin} is {len} characters long; at least {MIN_TOKEN_CHARS} are required (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Where it came from.
        origin: String,
        /// Its length.
        len: usize,
    },
    /// The token is too long.
    #[error(
        "the API token from {origin} is {len} bytes long; at most {MAX_TOKEN_BYTES} are accepted"
    )]
    TooLong {
        /// Where it came from.
        origin: String,
        /// Its length.
        len: usize,
    },
    /// The token holds a character that cannot travel in an HTTP header.
    #[error(
        "the API token from {origin} contains whitespace or a character outside visible ASCII, which cannot be sent in an `Authorization` header"
    )]
    BadChar {
        /// Where it came from.
        origin: String,
    },
}

/// The API's access policy: the bearer token every mutating request must present, and
/// whether reads are open to anyone who can reach the server.
///
/// `Debug` never shows the token.
pub struct ApiAuth {
    token: Box<[u8]>,
    origin: String,
    open_reads: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("token", &"<redacted>")
            .field("origin", &self.origin)
            .field("open_reads", &self.open_reads)
            .finish()
    }
}

impl ApiAuth {
    /// A policy with `token` (surrounding whitespace trimmed); `origin` says where it
    /// came from, for messages. Refuses an empty token, one shorter than
    /// [`MIN_TOKEN_CHARS`] or longer than [`MAX_TOKEN_BYTES`], and one with characters
    /// other than visible ASCII. Reads are closed; see [`ApiAuth::with_open_reads`].
    pub fn new(token: &str, origin: &str) -> Result<ApiAuth, AuthError> {
        let token = token.trim();
        let origin = origin.to_owned();
        if token.is_empty() {
            return Err(AuthError::Empty { origin });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::BadChar { origin });
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong {
                origin,
                len: token.len(),
            });
        }
        if token.len() < MIN_TOKEN_CHARS {
            return Err(AuthError::TooShort {
                origin,
                len: token.len(),
            });
        }
        Ok(ApiAuth {
            token: token.as_bytes().into(),
            origin,
            open_reads: false,
        })
    }

    /// The token in the file `path` (whitespace trimmed). A file that group or others
    /// can read is accepted with a warning (secrets mounted by container runtimes often
    /// are), but `chmod 600` it.
    pub fn from_file(path: &Path) -> Result<ApiAuth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    "the API token file {} is accessible to group or others (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    meta.permissions().mode() & 0o777,
                    path.display()
                );
            }
        }
        ApiAuth::new(&text, &format!("the file {}", path.display()))
    }

    /// The token in the environment variable `var` (whitespace trimmed), or in the vault
    /// of `fleetgate_trust::secret_env` when the process sealed that variable.
    pub fn from_env(var: &str) -> Result<ApiAuth, AuthError> {
        let text = fleetgate_trust::secret_env::var(var).ok_or_else(|| AuthError::EnvUnset {
            var: var.to_owned(),
        })?;
        ApiAuth::new(&text, &format!("${var}"))
    }

    /// Let requests that change nothing through without a token (`open = true`).
    pub fn with_open_reads(mut self, open: bool) -> ApiAuth {
        self.open_reads = open;
        self
    }

    /// Reads need no token.
    pub fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// Where the token came from (`the file PATH` or `$VAR`), never the token.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `presented` is the token. Constant time in the token's content and length: both
    /// sides are compared as zero-padded [`MAX_TOKEN_BYTES`] buffers, plus their lengths.
    pub fn verify(&self, presented: &[u8]) -> bool {
        if presented.len() > MAX_TOKEN_BYTES {
            // Only says "longer than any token can be", which is public.
            return false;
        }
        let mut ours = [0u8; MAX_TOKEN_BYTES];
        let mut theirs = [0u8; MAX_TOKEN_BYTES];
        ours[..self.token.len()].copy_from_slice(&self.token);
        theirs[..presented.len()].copy_from_slice(presented);
        let same_len = (self.token.len() as u64).ct_eq(&(presented.len() as u64));
        let same = ours[..].ct_eq(&theirs[..]) & same_len;
        ours.fill(0);
        same.into()
    }
}
