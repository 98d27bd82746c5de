//! The HTTP transport under `object_store`'s S3 client: the workspace's one
//! reqwest (0.12, rustls, the same the gateway's OIDC client uses).
//!
//! Why not object_store's own `aws` feature: it brings reqwest 0.13 with its
//! own TLS verifier stack, a second copy of the HTTP client next to the
//! 0.12 that `openidconnect` requires. object_store's `aws-base` feature is
//! the same S3 client without a transport, and takes any [`HttpConnector`];
//! this is that connector. It signs nothing and sees requests only after
//! object_store has signed them.
//!
//! It must never follow redirects (a redirected signed request would go
//! elsewhere), never use `http://` unless the configuration allows it, and
//! never put a URL with query parameters (presigned) into an error.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt as _;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};

/// Builds reqwest 0.12 clients for object_store.
#[derive(Debug, Clone)]
pub struct ReqwestConnector {
    timeout: Duration,
    connect_timeout: Duration,
    allow_http: bool,
}

impl ReqwestConnector {
    /// A connector whose requests time out after `timeout` (connecting
    /// after `connect_timeout`); `allow_http` permits plain HTTP.
    pub fn new(timeout: Duration, connect_timeout: Duration, allow_http: bool) -> Self {
        Self {
            timeout,
            connect_timeout,
            allow_http,
        }
    }
}

impl HttpConnector for ReqwestConnector {
    /// object_store's `ClientOptions` are ignored: the store is configured
    /// through [`super::StoreConfig`], which sets the same values here.
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!self.allow_http)
            .no_proxy()
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(Transport(client)))
    }
}

#[derive(Debug)]
struct Transport(reqwest::Client);

#[async_trait]
impl HttpService for Transport {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        *request.body_mut() = Some(match body.as_bytes() {
            Some(bytes) => reqwest::Body::from(bytes.clone()),
            None => reqwest::Body::wrap(body),
        });
        let response = self.0.execute(request).await.map_err(http_error)?;
        let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        let body = HttpResponseBody::new(body.map_err(http_error));
        Ok(HttpResponse::from_parts(parts, body))
    }
}

/// Classifies a reqwest error the way object_store's own transport does:
/// the kind decides whether a request may be retried.
fn http_error(e: reqwest::Error) -> HttpError {
    let mut kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else if e.is_body() || e.is_request() {
        HttpErrorKind::Request
    } else {
        HttpErrorKind::Unknown
    };
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => kind = HttpErrorKind::Timeout,
                K::ConnectionRefused => kind = HttpErrorKind::Connect,
                K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof => {
                    kind = HttpErrorKind::Interrupted
                }
                _ => {}
            }
        }
        source = inner.source();
    }
    // The URL may carry a presigned query: keep it out of errors and logs.
    HttpError::new(kind, e.without_url())
}
