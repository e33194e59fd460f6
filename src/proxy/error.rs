//! Failures of the pipeline: each maps to one status code, one generic page for the client and
//! one cause for the operator's log.
//!
//! The client never learns which backend, address or software was involved: the page says only
//! the status and the request id, which the operator can find in the log.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::body::ResponseBody;

/// Why a request could not be proxied.
#[derive(Debug)]
pub enum ProxyError {
    /// The request is malformed in a way the HTTP parser let through.
    BadRequest(&'static str),
    /// The client's request body could not be read or decoded.
    ClientBody(String),
    /// The client paused too long while sending a body the proxy reads before forwarding.
    ClientBodyTimeout,
    /// The client sent its request body under `timeouts.min_upload_rate`.
    UploadTooSlow,
    /// No route matches.
    NoRoute,
    /// The request body is over the route's cap.
    BodyTooLarge,
    /// The pool has no backend to offer.
    NoBackend,
    /// Every backend is at its connection limit and the pool's queue is full.
    Overloaded,
    /// The backend could not be connected to.
    UpstreamConnect(String),
    /// The backend did not accept the connection within the connect timeout.
    UpstreamConnectTimeout(String),
    /// The backend connection failed after the request was sent, or sent an invalid response.
    UpstreamFailed(String),
    /// The backend did not send its response head in time.
    UpstreamTimeout,
    /// A streamed request body stopped moving for the whole upstream header timeout.
    UploadStalled,
    /// The route's rate limit refused the request.
    RateLimited,
    /// The route's access policy refused the request.
    Denied(crate::protect::access::Denial),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBodyTimeout | ProxyError::UploadTooSlow => {
                StatusCode::REQUEST_TIMEOUT
            }
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoBackend | ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect(_) | ProxyError::UpstreamFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout
            | ProxyError::UploadStalled
            | ProxyError::UpstreamConnectTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied(denial) => denial.status(),
        }
    }

    /// The cause, for the operator's log.
    pub fn cause(&self) -> String {
        match self {
            ProxyError::BadRequest(why) => format!("bad request: {why}"),
            ProxyError::ClientBody(cause) => format!("bad request body: {cause}"),
            ProxyError::ClientBodyTimeout => "client stopped sending its request body".to_owned(),
            ProxyError::UploadTooSlow => {
                "client sent its request body under the minimum upload rate".to_owned()
            }
            ProxyError::NoRoute => "no route matches".to_owned(),
            ProxyError::RateLimited => "rate limit exceeded".to_owned(),
            ProxyError::BodyTooLarge => "request body over the route's max_body".to_owned(),
            ProxyError::NoBackend => "pool has no backend available".to_owned(),
            ProxyError::Overloaded => {
                "every backend is at max_connections and the queue is full".to_owned()
            }
            ProxyError::UpstreamConnect(e) => format!("upstream connect failed: {e}"),
            ProxyError::UpstreamConnectTimeout(e) => format!("upstream connect timed out: {e}"),
            ProxyError::UpstreamFailed(e) => format!("upstream request failed: {e}"),
            ProxyError::UpstreamTimeout => "upstream response header timeout".to_owned(),
            ProxyError::UploadStalled => {
                "request body stopped moving for the upstream header timeout".to_owned()
            }
            ProxyError::Denied(denial) => {
                format!("refused by the route's access policy: {denial:?}")
            }
        }
    }

    /// True for failures that are the backend's, worth a warning rather than a debug line.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ProxyError::UpstreamConnect(_)
                | ProxyError::UpstreamConnectTimeout(_)
                | ProxyError::UpstreamFailed(_)
                | ProxyError::UpstreamTimeout
        )
    }
}

/// A short generic error page: JSON if the client prefers it, otherwise HTML.
pub fn error_response(
    status: StatusCode,
    request_id: &HeaderValue,
    request_headers: &HeaderMap,
) -> Response<ResponseBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    // Request ids are restricted to [A-Za-z0-9._:-] (see `headers::request_id`), so they need no escaping.
    let id = request_id.to_str().unwrap_or("");
    let (content_type, body) = if wants_json(request_headers) {
        (
            "application/json",
            format!(
                "{{\"status\":{},\"error\":\"{reason}\",\"request_id\":\"{id}\"}}\n",
                status.as_u16()
            ),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html><head><title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1>\n<p>Request ID: {id}</p></body></html>\n",
                code = status.as_u16()
            ),
        )
    };
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
    response
}

/// True when `Accept` ranks JSON above HTML (a crude but sufficient reading of q-values).
fn wants_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let quality = |wanted: &str| -> f32 {
        accept
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let media = parts.next()?.trim();
                if !media.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(0.0, f32::max)
    };
    let json = quality("application/json");
    json > 0.0 && json > quality("text/html")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn json_only_when_preferred_over_html() {
        assert!(wants_json(&accept("application/json")));
        assert!(wants_json(&accept("text/html;q=0.5, application/json")));
        assert!(!wants_json(&accept("text/html, application/json;q=0.9")));
        assert!(!wants_json(&accept("*/*")));
        assert!(!wants_json(&HeaderMap::new()));
    }

    #[test]
    fn every_error_maps_to_its_status() {
        let cases = [
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::ClientBody("truncated".into()), 400),
            (ProxyError::NoRoute, 404),
            (ProxyError::BodyTooLarge, 413),
            (ProxyError::NoBackend, 503),
            (ProxyError::UpstreamConnect("refused".into()), 502),
            (ProxyError::UpstreamFailed("reset".into()), 502),
            (ProxyError::UpstreamTimeout, 504),
            (ProxyError::UpstreamConnectTimeout("timed out".into()), 504),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn error_pages_carry_status_and_request_id_only() {
        let id = HeaderValue::from_static("abc123");
        let response = error_response(StatusCode::BAD_GATEWAY, &id, &accept("application/json"));
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["x-request-id"], "abc123");
    }
}
