//! Every way a request can end without an upstream answer, and the one mapping from
//! those to a status code. Bodies name the class of failure, never an internal detail.

use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::upstream::{ConnectFailure, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("could not connect to the upstream: {0}")]
    UpstreamConnect(ConnectFailure),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("the upstream answered with something unusable")]
    UpstreamProtocol,
    #[error("request body larger than the configured maximum")]
    BodyTooLarge,
    #[error("request body stalled")]
    BodyIdle,
    #[error("the Host does not match the TLS server name")]
    Misdirected,
    #[error("malformed request: {0}")]
    BadRequest(BadRequest),
    #[error("no such tether endpoint")]
    OwnPathNotFound,
    /// The shared store could not be read and `store.on_error = "refuse"`.
    #[error("the session store cannot be read")]
    StoreUnavailable,
}

/// Why a request was refused as malformed; a closed set, so no free text leaks.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum BadRequest {
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("the request target and Host disagree")]
    AuthorityMismatch,
    #[error("unusable request target")]
    Target,
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Connect(why) => ProxyError::UpstreamConnect(why),
            UpstreamError::Timeout => ProxyError::UpstreamTimeout,
            UpstreamError::Protocol => ProxyError::UpstreamProtocol,
            UpstreamError::BodyTooLarge => ProxyError::BodyTooLarge,
            UpstreamError::BodyIdle => ProxyError::BodyIdle,
            UpstreamError::Target => ProxyError::BadRequest(BadRequest::Target),
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyIdle => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::OwnPathNotFound => StatusCode::NOT_FOUND,
            ProxyError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Metric label for upstream failures; `None` for the client's own faults.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::UpstreamConnect(_) => Some("connect"),
            ProxyError::UpstreamTimeout => Some("timeout"),
            ProxyError::UpstreamProtocol => Some("protocol"),
            ProxyError::BodyTooLarge
            | ProxyError::BodyIdle
            | ProxyError::Misdirected
            | ProxyError::BadRequest(_)
            | ProxyError::OwnPathNotFound
            | ProxyError::StoreUnavailable => None,
        }
    }

    /// A short plain-text answer naming the class of failure.
    pub fn into_response(self) -> Response<ProxyBody> {
        super::answer::text(self.status())
    }
}
