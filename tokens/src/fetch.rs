//! The one JWKS fetcher: how the recorder and the review service get the
//! gateway's public keys (`/.well-known/jwks.json`, or a file an operator
//! placed). Redirects are never followed and every request is bounded in
//! time, so a JWKS URL cannot be turned into a request elsewhere or hang a
//! start-up. How often to fetch is the caller's decision.

use std::path::PathBuf;
use std::time::Duration;

use crate::{TokenError, Verifier};

/// Longest a JWKS fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest JWKS document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Where a JWKS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// An `http://` or `https://` URL.
    Url(String),
    /// A local file.
    File(PathBuf),
}

impl JwksSource {
    /// A URL if `s` starts with `http://` or `https://`, else a file path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            Self::Url(s.to_owned())
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(u) => f.write_str(u),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a JWKS could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request failed (unreachable, timed out, refused).
    #[error("{source_name}: {error}")]
    Request {
        /// The URL.
        source_name: String,
        /// What failed.
        #[source]
        error: reqwest::Error,
    },
    /// The server answered with a status other than success (a redirect
    /// included: it is not followed).
    #[error("{source_name}: HTTP {status}")]
    Status {
        /// The URL.
        source_name: String,
        /// The status.
        status: u16,
    },
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("{source_name}: JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge {
        /// The URL or file.
        source_name: String,
    },
    /// The file could not be read.
    #[error("{source_name}: {error}")]
    File {
        /// The file.
        source_name: String,
        /// What failed.
        #[source]
        error: std::io::Error,
    },
    /// The document is not JSON.
    #[error("{source_name}: not JSON: {error}")]
    Json {
        /// The URL or file.
        source_name: String,
        /// What failed.
        #[source]
        error: serde_json::Error,
    },
    /// The document holds no usable key.
    #[error("{source_name}: {error}")]
    Keys {
        /// The URL or file.
        source_name: String,
        /// Why.
        #[source]
        error: TokenError,
    },
}

/// Fetches a JWKS and turns it into a [`Verifier`].
#[derive(Clone, Debug)]
pub struct JwksFetcher {
    source: JwksSource,
    client: reqwest::Client,
}

impl JwksFetcher {
    /// A fetcher for `source`, each fetch bounded by [`FETCH_TIMEOUT`].
    pub fn new(source: JwksSource) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(FetchError::Client)?;
        Ok(Self { source, client })
    }

    /// Where it fetches from.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// Fetches the document now.
    pub async fn fetch(&self) -> Result<Verifier, FetchError> {
        let source_name = self.source.to_string();
        let bytes = match &self.source {
            JwksSource::Url(url) => {
                let response =
                    self.client
                        .get(url)
                        .send()
                        .await
                        .map_err(|error| FetchError::Request {
                            source_name: source_name.clone(),
                            error,
                        })?;
                if !response.status().is_success() {
                    return Err(FetchError::Status {
                        source_name,
                        status: response.status().as_u16(),
                    });
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
                {
                    return Err(FetchError::TooLarge { source_name });
                }
                response
                    .bytes()
                    .await
                    .map_err(|error| FetchError::Request {
                        source_name: source_name.clone(),
                        error,
                    })?
                    .to_vec()
            }
            JwksSource::File(path) => {
                tokio::fs::read(path)
                    .await
                    .map_err(|error| FetchError::File {
                        source_name: source_name.clone(),
                        error,
                    })?
            }
        };
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge { source_name });
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|error| FetchError::Json {
                source_name: source_name.clone(),
                error,
            })?;
        Verifier::from_jwks(&doc).map_err(|error| FetchError::Keys { source_name, error })
    }
}
