//! The request pipeline, top to bottom:
//! request id → framing checks → route → access rules and rate limit → cache lookup (a hit is
//! answered here) → body cap → pick backend → build the upstream request (request body decoding)
//! → forward (or upgrade) → cache the response (or refresh it on 304) → compress or decode the
//! response → rewrite the response headers → attach the access-log observer.
//!
//! Each step is a small function below; [`handle`] reads as the list above.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};

use super::error::{ProxyError, error_response};
use super::headers::{self, ClientFacts, Present, X_REQUEST_ID};
use super::upgrade;
use super::{ConnInfo, ProxyState};
use crate::body::{ClientFault, RequestBody, ResponseBody, UpstreamBody};
use crate::compress;
use crate::config::UpstreamProtocol;
use crate::observe::access_log::AccessRecord;
use crate::protect::identity;
use crate::protect::upload_rate::{MinUploadRate, UploadPace};
use crate::routing::{RequestFacts, is_valid_host};
use crate::runtime::{Generation, HostRewrite, Route};
use crate::server::activity::InFlight;
use crate::upstream::retry::AttemptFailure;
use crate::upstream::{Backend, BackendLease, Outcome, SelectError, SelectionKey, UpstreamError};

/// `Cache-Status` (RFC 9211), named once rather than parsed from text on every response.
static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// What the pipeline learned about a request, for the log line.
struct Exchange {
    request_id: HeaderValue,
    route: Option<Arc<str>>,
    /// The backend last tried (its authority is shared, not copied: this is set per request).
    upstream: Option<Authority>,
    /// The backend serving the request, counted in flight until the response ends.
    lease: Option<BackendLease>,
    /// A sticky-session cookie to set on the response.
    set_cookie: Option<HeaderValue>,
    /// The route the request matched.
    matched: Option<Arc<Route>>,
    /// The route's rate-limit decision, for the RateLimit fields of the response.
    rate_limit: Option<crate::protect::rate_limit::Decision>,
    /// What the cache did (`Cache-Status`, RFC 9211).
    cache_status: Option<HeaderValue>,
}

impl Exchange {
    /// The exchange of a request the proxy makes on its own (a background cache refresh).
    fn apart(request_id: HeaderValue) -> Exchange {
        Exchange {
            request_id,
            route: None,
            upstream: None,
            lease: None,
            set_cookie: None,
            matched: None,
            rate_limit: None,
            cache_status: None,
        }
    }
}

/// Serves one request: forwards it to a backend, or answers with an error page.
pub async fn handle(
    state: &ProxyState,
    conn: &ConnInfo,
    in_flight: InFlight,
    request: Request<ClientBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let generation = state.generation();
    // One pass over the header names; from here on only headers that are there are looked up.
    let present = Present::of(request.headers());
    let mut exchange = Exchange {
        request_id: headers::request_id_present(request.headers(), present),
        route: None,
        upstream: None,
        lease: None,
        set_cookie: None,
        matched: None,
        rate_limit: None,
        cache_status: None,
    };
    // Kept for the log line and the error page; the request itself moves on to the backend.
    let access_log = state.access_log();
    let log_parts = access_log.is_enabled().then(|| LogParts::of(&request));
    let accept = if present.any(Present::ACCEPT) {
        request.headers().get(header::ACCEPT).cloned()
    } else {
        None
    };
    let uri = request.uri().clone();

    let method = request.method().clone();
    let unread_body = !http_body::Body::is_end_stream(request.body());
    // The client behind any trusted proxies: what the lists, the log, rate limits and hashing
    // see. The TCP peer stays what X-Forwarded-For is extended with.
    let client_ip = generation.trusted_proxies.client_ip(
        conn.peer.ip(),
        request.headers(),
        generation.client_ip_header,
    );
    let result = proxy(
        &generation,
        &state.metrics,
        conn,
        client_ip,
        present,
        &mut exchange,
        request,
    )
    .await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            report(&error, &exchange, conn, &uri);
            count_refusal(state, &exchange, &error);
            let mut accept_headers = http::HeaderMap::new();
            if let Some(accept) = accept {
                accept_headers.insert(header::ACCEPT, accept);
            }
            let mut response =
                error_response(error.status(), &exchange.request_id, &accept_headers);
            if let ProxyError::Denied(denial) = &error
                && let Some((name, value)) = denial.header()
            {
                response.headers_mut().insert(name, value);
            }
            if matches!(
                error,
                ProxyError::BadRequest(_)
                    | ProxyError::ClientBody(_)
                    | ProxyError::ClientBodyTimeout
                    | ProxyError::UploadTooSlow
                    | ProxyError::BodyTooLarge
            ) || (matches!(error, ProxyError::RateLimited | ProxyError::Denied(_))
                && unread_body)
            {
                // The rest of this request's bytes were not read; the connection cannot be reused.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    if let (Some(decision), Some(limiter)) = (
        &exchange.rate_limit,
        exchange
            .matched
            .as_ref()
            .and_then(|r| r.rate_limit.as_ref()),
    ) {
        for (name, value) in crate::protect::rate_limit::headers(decision, limiter.policy()) {
            response.headers_mut().append(name, value);
        }
    }
    let status = response.status();
    let route_metrics = match &exchange.matched {
        Some(route) => route
            .metrics
            .get_or_init(|| Arc::new(state.metrics.route(&route.name)))
            .clone(),
        None => state.unrouted.clone(),
    };
    route_metrics.count(&state.metrics, &method, status);
    let record = log_parts
        .filter(|_| access_log.wants(status))
        .map(|parts| AccessRecord {
            log: access_log,
            started,
            // The log shows the client behind any trusted proxies (only the IP is written).
            client: std::net::SocketAddr::new(client_ip, conn.peer.port()),
            method: parts.method,
            host: parts.host,
            target: parts.target,
            version: parts.version,
            status,
            route: exchange.route.clone().unwrap_or_else(|| Arc::from("-")),
            upstream: exchange
                .upstream
                .take()
                .map_or_else(|| "-".to_owned(), |a| a.as_str().to_owned()),
            request_id: exchange.request_id.clone(),
            referer: parts.referer,
            user_agent: parts.user_agent,
        });
    response.body_mut().observe(Box::new(Completion {
        record,
        started,
        metrics: route_metrics,
        _in_flight: in_flight,
        route: exchange.matched.take(),
        lease: exchange.lease.take(),
    }));
    response
}

/// Counts what the guards refused, per route: rate-limit rejections and access denials.
fn count_refusal(state: &ProxyState, exchange: &Exchange, error: &ProxyError) {
    let name = match error {
        ProxyError::RateLimited => "gatehouse_rate_limited_total",
        ProxyError::Denied(_) => "gatehouse_access_denied_total",
        _ => return,
    };
    let route = exchange.route.as_deref().unwrap_or("-");
    let status = error.status();
    state
        .metrics
        .counter(name, &[("route", route), ("status", status.as_str())])
        .increment(1);
}

/// Finishes the access-log record and the in-flight count when the response body ends.
struct Completion {
    record: Option<AccessRecord>,
    started: Instant,
    metrics: Arc<crate::observe::metrics::RouteMetrics>,
    _in_flight: InFlight,
    /// The route matched, whose pool the lease is of.
    route: Option<Arc<Route>>,
    /// The backend answering, held until the body ends.
    lease: Option<BackendLease>,
}

impl crate::body::BodyObserver for Completion {
    /// A backend that stops within a body has failed as much as one that never answers: it
    /// counts for passive health (`outlier`), and gets a warning and a count of its own.
    fn backend_stalled(&mut self) {
        let (Some(route), Some(lease)) = (&self.route, &self.lease) else {
            return;
        };
        let pool = &route.pool;
        let Some(backend) = pool.backend(lease.index) else {
            return;
        };
        if let Some(metrics) = backend.metrics.get() {
            metrics.read_timeouts.increment(1);
        }
        tracing::warn!(
            pool = %pool.name,
            backend = %backend.authority,
            route = %route.name,
            "backend sent nothing for the read timeout within a response body; response cut"
        );
        pool.record_outcome(lease.index, Outcome::Failure);
    }

    fn finished(&mut self, bytes: u64, complete: bool) {
        self.metrics
            .duration
            .record(self.started.elapsed().as_secs_f64());
        self.metrics.response_bytes.increment(bytes);
        if let Some(record) = &mut self.record {
            record.finished(bytes, complete);
        }
    }
}

struct LogParts {
    method: Method,
    host: String,
    target: String,
    version: Version,
    referer: String,
    user_agent: String,
}

impl LogParts {
    fn of(request: &Request<ClientBody>) -> Self {
        let text = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        LogParts {
            method: request.method().clone(),
            host: request_host(request).unwrap_or("-").to_owned(),
            target: request.uri().path_and_query().map_or_else(
                || request.uri().path().to_owned(),
                |pq| pq.as_str().to_owned(),
            ),
            version: request.version(),
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
        }
    }
}

fn report(error: &ProxyError, exchange: &Exchange, conn: &ConnInfo, uri: &Uri) {
    let request_id = exchange.request_id.to_str().unwrap_or("-");
    let route = exchange.route.as_deref().unwrap_or("-");
    let upstream = exchange.upstream.as_ref().map_or("-", Authority::as_str);
    let status = error.status().as_u16();
    let cause = error.cause();
    if error.is_upstream() {
        tracing::warn!(request_id, route, upstream, status, client = %conn.peer, path = uri.path(), "{cause}");
    } else {
        tracing::debug!(request_id, route, status, client = %conn.peer, path = uri.path(), "{cause}");
    }
}

/// What response compression is negotiated on, for a route that compresses.
fn compression_facts<B>(route: &Route, request: &Request<B>) -> Option<compress::RequestFacts> {
    route
        .compression
        .as_ref()
        .map(|_| compress::RequestFacts::of(request.method(), request.headers()))
}

/// The protocol an HTTP/1.1 upgrade request asks for (see [`headers::upgrade_requested`]).
fn upgrade_requested<B>(request: &Request<B>, present: Present) -> Option<HeaderValue> {
    if present.any(Present::UPGRADE) {
        headers::upgrade_requested(request.headers())
    } else {
        None
    }
}

/// The host the client asked for: the URI authority (absolute-form, HTTP/2) or `Host`.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    request.uri().authority().map(|a| a.as_str()).or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

async fn proxy(
    generation: &Generation,
    metrics: &crate::observe::metrics::Metrics,
    conn: &ConnInfo,
    client_ip: std::net::IpAddr,
    present: Present,
    exchange: &mut Exchange,
    mut request: Request<ClientBody>,
) -> Result<Response<ResponseBody>, ProxyError> {
    // The `Host` lines, looked up once for the checks, routing and the forwarding headers.
    let (host_line, more_hosts) = if present.any(Present::HOST) {
        let mut lines = request.headers().get_all(header::HOST).iter();
        (lines.next().cloned(), lines.next().is_some())
    } else {
        (None, false)
    };
    check_framing(&request, host_line.as_ref(), more_hosts)?;
    crate::protect::strict::check_request_with(
        &request,
        crate::protect::strict::Framing {
            host: host_line.as_ref(),
            more_hosts,
            content_length: present.any(Present::CONTENT_LENGTH),
            transfer_encoding: present.any(Present::TRANSFER_ENCODING),
        },
    )
    .map_err(ProxyError::BadRequest)?;
    // The host the client asked for (see `request_host`), as the header value that `Host`,
    // `X-Forwarded-Host` and `Location` rewriting pass on; checked above, so it is text.
    let client_host = match request.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        // Valid (`check_framing`), so text.
        None => host_line,
    };
    let host = client_host.as_ref().and_then(|h| h.to_str().ok());
    normalize_target(&mut request, generation.security.merge_slashes)?;
    if let Some(port) = conn.redirect_https {
        return redirect_to_https(&request, host, port);
    }
    let route = route_for(generation, &request, host)?;
    exchange.route = Some(route.name.clone());
    exchange.matched = Some(route.clone());
    // Addresses and method first (cheap), then the rate limit, then credentials: password
    // guesses are throttled before any hash is computed.
    if let Some(access) = &route.access {
        access
            .check_client(client_ip, request.method())
            .map_err(ProxyError::Denied)?;
    }
    if let Some(limiter) = &route.rate_limit {
        let decision = limiter.check(
            &route.name,
            client_ip,
            request.headers(),
            tokio::time::Instant::now(),
        );
        exchange.rate_limit = Some(decision);
        if !decision.allowed {
            return Err(ProxyError::RateLimited);
        }
    }
    if let Some(access) = &route.access {
        access
            .authenticate(request.headers())
            .await
            .map_err(ProxyError::Denied)?;
        if access.consumes_authorization() {
            // The credentials were for this proxy; no backend gets the password.
            request.headers_mut().remove(header::AUTHORIZATION);
        }
    }
    // What Gatehouse's page is negotiated on, should a backend 5xx be replaced.
    let mut page_headers = http::HeaderMap::new();
    if generation.security.replace_error_pages
        && let Some(accept) = request.headers().get(header::ACCEPT)
    {
        page_headers.insert(header::ACCEPT, accept.clone());
    }
    // Every answer the cache makes (a hit, a 304, a purge, a stale stand-in) goes out the same way.
    let serve = |exchange, answer, compression, public_host: Option<HeaderValue>| {
        serve_answer(
            generation,
            conn,
            &route,
            exchange,
            answer,
            compression,
            &page_headers,
            public_host.as_ref(),
        )
    };
    // The cache looks after the access rules, so a stored response only reaches clients the
    // route lets in; upgrades never involve it.
    let mut cache_forwarding = None;
    if let Some(cache) = &route.cache
        && upgrade_requested(&request, present).is_none()
    {
        let host = host.unwrap_or("").to_owned();
        if request.method().as_str() == "PURGE" {
            // Answered here on a caching route, never forwarded (the ACL is the cache's).
            let answer = cache.purge(conn.proto, &host, request.uri(), client_ip);
            let public_host = HeaderValue::from_str(&host).ok();
            return Ok(serve(exchange, answer, None, public_host));
        }
        // Boxed: the lookup (which may wait for a coalesced fetch) would otherwise add its
        // state to every request's future, cached route or not, and that future is moved
        // around per request (see docs/performance.md).
        // A background refresh must not use connections private to this client.
        let background = !route.pool.sends_proxy_header();
        let looked_up = cache.lookup(metrics, conn.proto, &host, &mut request, background);
        match Box::pin(looked_up).await {
            crate::cache::Lookup::AnswerAndRefresh(answer, forwarding) => {
                let compression = compression_facts(&route, &request);
                let public_host = HeaderValue::from_str(&host).ok();
                let key = route
                    .pool
                    .selection_key(request.uri(), request.headers(), client_ip);
                // Finished per attempt, as the refresh changes the head first.
                if let Ok((head, _body)) = client_head(
                    generation,
                    conn,
                    &route,
                    request,
                    present,
                    client_host,
                    None,
                ) {
                    spawn_refresh(
                        route.clone(),
                        key,
                        head,
                        exchange.request_id.clone(),
                        forwarding,
                    );
                }
                return Ok(serve(exchange, answer, compression, public_host));
            }
            crate::cache::Lookup::Answer(answer) => {
                let compression = compression_facts(&route, &request);
                let public_host = HeaderValue::from_str(&host).ok();
                return Ok(serve(exchange, answer, compression, public_host));
            }
            crate::cache::Lookup::Forward(forwarding) => cache_forwarding = Some(forwarding),
        }
    }
    let limit_flag = check_body_size(&route, &request, present)?;
    let decoding = route
        .request_decoding
        .and_then(|d| compress::request_coding(request.headers()).map(|encoding| (encoding, d)));
    // A decoded body can outgrow its compressed size: it always needs the 413 flag.
    let limit_flag = match (&decoding, limit_flag) {
        (Some(_), None) => Some(Arc::new(AtomicBool::new(false))),
        (_, flag) => flag,
    };

    let upgrade =
        upgrade_requested(&request, present).filter(|_| request.version() == Version::HTTP_11);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let compression = compression_facts(&route, &request);
    let key = route
        .pool
        .selection_key(request.uri(), request.headers(), client_ip);
    let finish = Finish {
        request_id: &exchange.request_id,
        upgrade: upgrade.as_ref(),
        decoded: decoding.is_some(),
    };
    // The head and body live in this block: the attempts borrow them (their future then holds
    // two references, not copies), and whatever is left of them goes when the attempts end.
    let (public_host, forwarded) = {
        let (mut head, body) = client_head(
            generation,
            conn,
            &route,
            request,
            present,
            client_host,
            Some(finish),
        )?;
        // The host backend addresses in `Location` are rewritten to.
        let public_host = head.client_host.clone();
        let request_bytes = route
            .metrics
            .get_or_init(|| Arc::new(metrics.route(&route.name)))
            .request_bytes
            .clone();
        let mut body = body_source(
            generation,
            &route,
            body,
            limit_flag.clone(),
            decoding,
            request_bytes,
        )
        .await?;
        let forwarded = forward_with_retries(
            metrics,
            conn,
            exchange,
            &route,
            key,
            &mut head,
            &mut body,
            upgrade.as_ref(),
            limit_flag.as_deref(),
        )
        .await;
        (public_host, forwarded)
    };
    let (mut response, lease) = match forwarded {
        Ok(forwarded) => forwarded,
        Err(error) => {
            // RFC 5861 stale-if-error: a stale stored response may stand in for a backend that
            // cannot be reached.
            if error.is_upstream()
                && let Some(answer) = cache_forwarding.take().and_then(|f| f.on_error())
            {
                return Ok(serve(exchange, answer, compression, public_host));
            }
            return Err(error);
        }
    };
    // Here, where the response is already in place, not in the forwarding future, whose
    // result would be copied once more.
    response
        .body_mut()
        .set_read_timeout(route.upstream_read_timeout);
    if let Some(client_upgrade) = client_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        // The tunnel holds the lease until it closes.
        let timeouts = upgrade::TunnelTimeouts {
            idle: generation.timeouts.tunnel_idle.limit(),
            send: generation.timeouts.client_send.limit(),
        };
        let stall = |reason| {
            metrics.counter(
                "gatehouse_tunnel_timeouts_total",
                &[("route", &route.name), ("reason", reason)],
            )
        };
        let stalls = upgrade::TunnelStalls {
            idle: stall("idle"),
            client_send: stall("client_send"),
        };
        let mut response = upgrade::splice(
            response,
            client_upgrade,
            conn.drain.clone(),
            Some(lease),
            timeouts,
            stalls,
        )?;
        rewrite_response(
            generation,
            conn,
            &route,
            exchange,
            &mut response,
            public_host.as_ref(),
        );
        return Ok(response);
    }
    let response = match cache_forwarding {
        Some(forwarding) => match forwarding.on_response(response) {
            crate::cache::Completed::Answer(answer) => {
                exchange.lease = Some(lease);
                return Ok(serve(exchange, answer, compression, public_host));
            }
            crate::cache::Completed::Pass(response, status) => {
                exchange.cache_status = Some(status.to_header_value());
                response
            }
        },
        None => response.map(Into::into),
    };
    if identity::should_replace_error_page(
        generation.security.replace_error_pages,
        response.status(),
    ) {
        // The backend's body (stack traces, banners, host names) never reaches the client.
        let mut page = error_response(response.status(), &exchange.request_id, &page_headers);
        page.headers_mut()
            .extend(identity::kept_error_headers(response.headers()));
        drop(response);
        exchange.lease = Some(lease);
        rewrite_response(
            generation,
            conn,
            &route,
            exchange,
            &mut page,
            public_host.as_ref(),
        );
        return Ok(page);
    }
    let mut response = match (&route.compression, compression) {
        (Some(policy), Some(facts)) => {
            let plan = compress::plan(policy, &facts, response.status(), response.headers());
            compress::apply(policy, plan, response).await
        }
        _ => response.map(ResponseBody::upstream),
    };
    // Held until the response body ends.
    exchange.lease = Some(lease);
    rewrite_response(
        generation,
        conn,
        &route,
        exchange,
        &mut response,
        public_host.as_ref(),
    );
    Ok(response)
}

/// Refreshes a stored response in a task of its own (RFC 5861 `stale-while-revalidate`), while
/// the client is answered with the stale one. The task holds nothing of the client's
/// connection: it has its own copy of the request head, asks one backend once (no retries: the
/// stale response is still there, and the next request past the window revalidates in the
/// foreground), reads the response body for the store, and ends within `refresh_timeout`.
fn spawn_refresh(
    route: Arc<Route>,
    key: SelectionKey,
    mut head: ClientHead,
    request_id: HeaderValue,
    forwarding: Box<crate::cache::Forwarding>,
) {
    head.method = http::Method::GET;
    // The refresh has no body, whatever the client's request had.
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.remove(header::TRANSFER_ENCODING);
    let limit = forwarding.refresh_timeout();
    let refresh = async move {
        let pool = &route.pool;
        let Ok(lease) = pool.select(key, &[]).await else {
            return;
        };
        let Some(backend) = pool.backend(lease.index) else {
            return;
        };
        let exchange = Exchange::apart(request_id);
        let headers = std::mem::take(&mut head.headers);
        let Ok(request) = aim(
            &head,
            headers,
            &route,
            backend,
            RequestBody::empty(),
            None,
            &exchange,
        ) else {
            return;
        };
        let mut sent_at = tokio::time::Instant::now();
        let response = match forward(&route, backend, request, None, &mut sent_at).await {
            Ok(response) => response,
            Err(error) => {
                pool.record_outcome(lease.index, Outcome::Failure);
                tracing::debug!(route = %route.name, cause = %error.cause(), "background cache refresh failed");
                return;
            }
        };
        let failed = pool.is_failure_status(response.status().as_u16());
        pool.record_outcome(
            lease.index,
            if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
        );
        let max_bytes = forwarding.max_object_size();
        if let crate::cache::Completed::Pass(response, _) = forwarding.on_response(response) {
            // Read to the end so the cache's copy completes; a body larger than the store
            // takes is not worth reading on.
            use http_body_util::BodyExt;
            let mut body = response.into_body();
            let mut read = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > max_bytes {
                    break;
                }
            }
        }
        drop(lease);
    };
    tokio::spawn(async move {
        if tokio::time::timeout(limit, refresh).await.is_err() {
            tracing::debug!("background cache refresh abandoned after refresh_timeout");
        }
    });
}

/// Sends a response the cache made (a hit, a 304, a stale response on error, a 504 for
/// `only-if-cached`) through the same steps as a backend's response: error-page replacement,
/// compression for this client, header rewriting.
#[allow(clippy::too_many_arguments)]
fn serve_answer(
    generation: &Generation,
    conn: &ConnInfo,
    route: &Route,
    exchange: &mut Exchange,
    answer: crate::cache::Answer,
    compression: Option<compress::RequestFacts>,
    page_headers: &http::HeaderMap,
    public_host: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    exchange.cache_status = Some(answer.cache_status.to_header_value());
    let status = answer.status;
    if identity::should_replace_error_page(generation.security.replace_error_pages, status) {
        let mut page = error_response(status, &exchange.request_id, page_headers);
        page.headers_mut()
            .extend(identity::kept_error_headers(&answer.headers));
        rewrite_response(generation, conn, route, exchange, &mut page, public_host);
        return page;
    }
    let mut response = Response::new(answer.body);
    *response.status_mut() = status;
    *response.headers_mut() = answer.headers;
    let mut response = match (&route.compression, compression) {
        (Some(policy), Some(facts)) => {
            let plan = compress::plan(policy, &facts, status, response.headers());
            compress::apply_stored(policy, plan, response)
        }
        _ => response.map(ResponseBody::full),
    };
    rewrite_response(
        generation,
        conn,
        route,
        exchange,
        &mut response,
        public_host,
    );
    response
}

/// A `308 Permanent Redirect` to the same host, path and query over HTTPS (308 keeps the method
/// and body, unlike 301).
fn redirect_to_https(
    request: &Request<ClientBody>,
    host: Option<&str>,
    port: u16,
) -> Result<Response<ResponseBody>, ProxyError> {
    let host = host.ok_or(ProxyError::BadRequest("no host to redirect to"))?;
    let name = crate::routing::normalize_host(host);
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let location = HeaderValue::try_from(location)
        .map_err(|_| ProxyError::BadRequest("invalid host for a redirect"))?;
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Refuses requests whose framing the HTTP parser accepted but a proxy must not pass on.
/// `host` is the first `Host` line; `more_hosts` says there are others.
fn check_framing(
    request: &Request<ClientBody>,
    host: Option<&HeaderValue>,
    more_hosts: bool,
) -> Result<(), ProxyError> {
    if more_hosts {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if request.version() == Version::HTTP_11
        && host.is_none()
        && request.uri().authority().is_none()
    {
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
        return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"));
    }
    // RFC 9112 §3.2: a Host with an invalid value is a 400 too; so is userinfo in the target.
    if let Some(host) = host
        && !is_valid_host(host.as_bytes())
    {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }
    if let Some(authority) = request.uri().authority()
        && !is_valid_host(authority.as_str().as_bytes())
    {
        return Err(ProxyError::BadRequest(
            "invalid authority in the request target",
        ));
    }
    if request.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest(
            "CONNECT is not served by a reverse proxy listener",
        ));
    }
    Ok(())
}

/// Replaces the request's path with its normalised spelling, the query kept as sent, so that
/// routing, prefix rewriting and the backend all see the same path.
fn normalize_target<B>(request: &mut Request<B>, merge_slashes: bool) -> Result<(), ProxyError> {
    let path = crate::protect::strict::normalize_path(request.uri().path(), merge_slashes)
        .map_err(ProxyError::BadRequest)?;
    let mut target = match path {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    if let Some(query) = request.uri().query() {
        target.push('?');
        target.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(target)
            .map_err(|_| ProxyError::BadRequest("normalised path is invalid"))?,
    );
    *request.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("normalised path is invalid"))?;
    Ok(())
}

fn route_for(
    generation: &Generation,
    request: &Request<ClientBody>,
    host: Option<&str>,
) -> Result<Arc<Route>, ProxyError> {
    let facts = RequestFacts {
        host,
        path: request.uri().path(),
        method: request.method(),
        headers: request.headers(),
    };
    generation
        .routes
        .route_for(&facts)
        .map(|(_, route)| route.clone())
        .ok_or(ProxyError::NoRoute)
}

/// Refuses a declared body over the cap at once (without reading it, so a client that sent
/// `Expect: 100-continue` never uploads); returns the flag that marks a streamed body going over.
fn check_body_size(
    route: &Route,
    request: &Request<ClientBody>,
    present: Present,
) -> Result<Option<Arc<AtomicBool>>, ProxyError> {
    let Some(limit) = route.max_body else {
        return Ok(None);
    };
    if present.any(Present::CONTENT_LENGTH)
        && let Some(length) = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    {
        return if length > limit {
            Err(ProxyError::BodyTooLarge)
        } else {
            Ok(None)
        };
    }
    Ok(Some(Arc::new(AtomicBool::new(false))))
}

/// The client's request head, cleaned of what must not reach a backend and given the
/// forwarding headers, ready to be aimed at a backend by [`aim`] once per attempt.
struct ClientHead {
    method: Method,
    path_and_query: PathAndQuery,
    /// The host the client asked for.
    client_host: Option<HeaderValue>,
    headers: http::HeaderMap,
    /// The body is decoded on its way: the backend gets no coding and no length.
    decoded: bool,
    /// `headers` are final for every backend ([`finish_headers`] ran): an attempt only sends
    /// them. False when the `Host` depends on the backend, or the head is still to change.
    finished: bool,
}

/// What [`client_head`] needs to finish the headers once for every attempt.
struct Finish<'a> {
    request_id: &'a HeaderValue,
    upgrade: Option<&'a HeaderValue>,
    decoded: bool,
}

/// `present` says which headers the request has (see [`Present`]); `client_host` is the host
/// the client asked for. With `finish`, the headers are finished here unless the `Host` a
/// backend gets depends on the backend.
fn client_head(
    generation: &Generation,
    conn: &ConnInfo,
    route: &Route,
    request: Request<ClientBody>,
    mut present: Present,
    client_host: Option<HeaderValue>,
    finish: Option<Finish<'_>>,
) -> Result<(ClientHead, ClientBody), ProxyError> {
    let path_and_query = rewrite_path(route, request.uri())?;
    // `client_host` is the client's `Host` line, and nothing below may remove that line: a
    // preserved host needs no second write.
    let host_in_place = matches!(route.host, HostRewrite::Preserve)
        && request.uri().authority().is_none()
        && !present.any(Present::CONNECTION)
        && generation.subject_headers.is_empty()
        && conn.subject_header.is_none();
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    headers::remove_hop_by_hop_present(&mut headers, present);
    // Only a certificate verified by a listener may speak through these headers.
    for name in &generation.subject_headers {
        headers.remove(name);
    }
    if let Some(name) = &conn.subject_header {
        headers.remove(name);
        if let Some(subject) = &conn.client_subject {
            headers.insert(name.clone(), subject.clone());
            present = present.with(Present::of_name(name));
        }
    }
    // hyper answers `Expect: 100-continue` itself when the body is first read; the backend
    // must not wait for a second `100 Continue`.
    if present.any(Present::EXPECT) {
        headers.remove(header::EXPECT);
    }
    // Forwarding headers from a peer that is not a trusted proxy are the client's own say-so:
    // the header this proxy writes starts afresh at the address it saw.
    if present.any(Present::CLIENT_CLAIM) && !generation.trusted_proxies.is_trusted(conn.peer.ip())
    {
        headers::remove_client_claims(&mut headers);
        present = present.without(
            Present::CLIENT_CLAIM
                .with(Present::X_FORWARDED_FOR)
                .with(Present::FORWARDED),
        );
    }
    headers::add_forwarding_present(
        &mut headers,
        &generation.forwarded,
        ClientFacts {
            ip: conn.peer.ip(),
            ip_text: &conn.peer_ip,
            proto: conn.proto,
            host: client_host.as_ref(),
        },
        present,
    );
    let mut head = ClientHead {
        method: parts.method,
        path_and_query,
        client_host,
        headers,
        decoded: false,
        finished: false,
    };
    if let Some(finish) = finish {
        head.decoded = finish.decoded;
        if !matches!(route.host, HostRewrite::Backend) {
            let host = if host_in_place {
                None
            } else {
                backend_host(&head, route, None)
            };
            finish_headers(
                &mut head.headers,
                route,
                host,
                head.decoded,
                finish.request_id,
                finish.upgrade,
            );
            head.finished = true;
        }
    }
    Ok((head, body))
}

/// The `Host` a backend gets; `backend` is needed only for [`HostRewrite::Backend`].
fn backend_host(
    head: &ClientHead,
    route: &Route,
    backend: Option<&Backend>,
) -> Option<HeaderValue> {
    match &route.host {
        HostRewrite::Preserve => head.client_host.clone(),
        HostRewrite::Backend => {
            backend.and_then(|b| HeaderValue::from_str(b.authority.as_str()).ok())
        }
        HostRewrite::Fixed(value) => Some(value.clone()),
    }
}

/// The last changes to the headers a backend gets, in this order: the decoded body's coding and
/// length go, `Host` is set (HTTP/2 carries it in the URI instead), the route's edits apply, and
/// the request id and an upgrade's headers override whatever the edits did.
fn finish_headers(
    headers: &mut http::HeaderMap,
    route: &Route,
    host: Option<HeaderValue>,
    decoded: bool,
    request_id: &HeaderValue,
    upgrade: Option<&HeaderValue>,
) {
    if decoded {
        // The backend gets the decoded bytes: no coding, length unknown until the end.
        headers.remove(header::CONTENT_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
    }
    if route.pool.protocol == UpstreamProtocol::H2c {
        // HTTP/2 carries the host as `:authority` (taken from the URI); a `Host` header that
        // differs from it may be refused (RFC 9113 §8.3.1).
        headers.remove(header::HOST);
    } else if let Some(host) = host {
        headers.insert(header::HOST, host);
    }
    route.request_edits.apply(headers);
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// Where each attempt's request body comes from.
enum BodySource {
    /// Sent once; no retry after the first attempt has it.
    Once(Option<RequestBody>),
    /// No body: any number of attempts.
    Empty,
    /// Held in memory: any number of attempts.
    Buffered(bytes::Bytes),
    /// Handed on until an attempt reads it.
    Slot(crate::body::BodySlot),
}

impl BodySource {
    fn next(&mut self) -> Option<RequestBody> {
        match self {
            BodySource::Once(body) => body.take(),
            BodySource::Empty => Some(RequestBody::empty()),
            BodySource::Buffered(data) => Some(RequestBody::buffered(data.clone())),
            BodySource::Slot(slot) => slot.attempt(),
        }
    }

    fn is_available(&self) -> bool {
        match self {
            BodySource::Once(body) => body.is_some(),
            BodySource::Empty | BodySource::Buffered(_) => true,
            BodySource::Slot(slot) => slot.is_available(),
        }
    }
}

/// Decides how the body travels: streamed once when the pool does not retry, held in memory when
/// it is small and declared (so any failure can be retried), or handed between attempts until
/// one reads it (so a connect failure can still be retried).
async fn body_source(
    generation: &Generation,
    route: &Route,
    body: ClientBody,
    limit_flag: Option<Arc<AtomicBool>>,
    decoding: Option<(compress::Encoding, compress::RequestDecoding)>,
    bytes: metrics::Counter,
) -> Result<BodySource, ProxyError> {
    let retries = route.pool.retry.tries > 1;
    let min_rate = MinUploadRate::new(
        generation.timeouts.min_upload_rate.0,
        generation.timeouts.min_upload_grace.0,
    );
    if http_body::Body::is_end_stream(&body) && decoding.is_none() {
        return Ok(if retries {
            BodySource::Empty
        } else {
            BodySource::Once(Some(RequestBody::new(body)))
        });
    }
    let declared = http_body::Body::size_hint(&body).exact();
    if retries && decoding.is_none() && declared.is_some_and(|n| n <= route.pool.retry.buffer_body)
    {
        let read = read_whole_body(body, generation.timeouts.client_body.0, min_rate).await?;
        bytes.increment(read.len() as u64);
        return Ok(BodySource::Buffered(read));
    }
    let body = match (decoding, route.max_body, limit_flag) {
        (Some((encoding, decoding)), _, Some(flag)) => {
            let codec = compress::Codec::decoder(encoding)
                .map_err(|_| ProxyError::BadRequest("cannot decode the request body"))?;
            let decoder =
                compress::CodecBody::new(codec, Vec::new(), body.into_incoming().map(Into::into));
            RequestBody::decoded(decoder, decoding.max_decoded, flag)
        }
        (_, Some(limit), Some(flag)) => RequestBody::limited(body, limit, flag),
        _ => RequestBody::new(body),
    }
    .paced(min_rate)
    .counting(bytes);
    Ok(if retries {
        BodySource::Slot(crate::body::BodySlot::new(body))
    } else {
        BodySource::Once(Some(body))
    })
}

/// Reads a (small, declared) body whole, allowing at most `pause` between two pieces of it, and
/// holding the client to `min_rate` over the whole of it.
async fn read_whole_body(
    mut body: ClientBody,
    pause: Duration,
    min_rate: Option<MinUploadRate>,
) -> Result<bytes::Bytes, ProxyError> {
    use http_body_util::BodyExt;
    let mut pace = min_rate.map(UploadPace::new);
    let mut data = bytes::BytesMut::new();
    loop {
        let now = tokio::time::Instant::now();
        let pause_ends = now + pause;
        let (deadline, slow) = match pace.as_mut().map(|pace| pace.waiting(now)) {
            Some(rate_ends) if rate_ends < pause_ends => (rate_ends, true),
            _ => (pause_ends, false),
        };
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if slow => return Err(ProxyError::UploadTooSlow),
            Err(_) => return Err(ProxyError::ClientBodyTimeout),
            Ok(None) => return Ok(data.freeze()),
            Ok(Some(Err(e))) => return Err(ProxyError::ClientBody(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk);
                    if let Some(pace) = pace.as_mut() {
                        pace.delivered(chunk.len() as u64, tokio::time::Instant::now());
                    }
                }
            }
        }
    }
}

/// Sends the request to a backend of the route's pool, and to others while the pool's retry
/// policy allows: connect failures always, other failures for requests that may be repeated.
/// Each outcome feeds the pool's passive health checks and latency estimates.
#[allow(clippy::too_many_arguments)]
async fn forward_with_retries(
    metrics: &crate::observe::metrics::Metrics,
    conn: &ConnInfo,
    exchange: &mut Exchange,
    route: &Route,
    key: SelectionKey,
    head: &mut ClientHead,
    body: &mut BodySource,
    upgrade: Option<&HeaderValue>,
    limit_flag: Option<&AtomicBool>,
) -> Result<(Response<UpstreamBody>, BackendLease), ProxyError> {
    let pool = &route.pool;
    // One reading of the clock for the retry budget, the choice of a backend and the start of
    // its latency: the request leaves right after the choice (a wait for a free slot reads it
    // again).
    let mut now = tokio::time::Instant::now();
    pool.retry.on_request(now);
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error = None;
    // A response with a retried status, kept in case no other backend does better.
    let mut fallback: Option<(Response<UpstreamBody>, BackendLease)> = None;
    // The headers for the next attempt, while one may follow (an attempt consumes its own).
    let mut spare: Option<SpareHeaders> = None;
    for attempt in 1..=pool.retry.tries {
        if attempt > 1 {
            now = tokio::time::Instant::now();
        }
        let lease = match pool.select_at(key, &tried, &mut now).await {
            Ok(lease) => lease,
            Err(SelectError::Overloaded) if fallback.is_none() => {
                return Err(ProxyError::Overloaded);
            }
            Err(_) => break,
        };
        let Some(backend) = pool.backend(lease.index) else {
            break;
        };
        let Some(attempt_body) = body.next() else {
            break;
        };
        if attempt > 1 {
            pool.retries
                .get_or_init(|| {
                    metrics.counter("gatehouse_upstream_retries_total", &[("pool", &pool.name)])
                })
                .increment(1);
        }
        let backend_metrics = backend
            .metrics
            .get_or_init(|| metrics.backend(&pool.name, backend.authority.as_str()));
        exchange.upstream = Some(backend.authority.clone());
        // Retrying spends budget: only worth it when some backend is left to try.
        let another_left = pool.backends.len() > tried.len() + 1;
        // No attempt after this one: the headers need no copy.
        let last_try = attempt == pool.retry.tries || !another_left;
        if let Some(copy) = spare.take() {
            head.headers = copy.into_map();
        }
        let headers = std::mem::take(&mut head.headers);
        if !last_try {
            spare = Some(SpareHeaders::of(&headers));
        }
        // Built in a block: a local that was borrowed (`extensions_mut`) stays in the future's
        // state across the await below even after it is moved, 384 bytes every level above
        // this one copies; this `request` is only moved.
        let request = {
            let mut request = aim(
                head,
                headers,
                route,
                backend,
                attempt_body,
                upgrade,
                exchange,
            )?;
            if pool.sends_proxy_header() {
                // Its backend connections announce this client: they must be this client's own.
                request.extensions_mut().insert(conn.upstream_origin());
            }
            request
        };
        // When the request was all sent: the backend's latency runs from there, so a slow
        // client upload does not make a backend look slow to the balancer.
        let mut sent_at = now;
        match forward(route, backend, request, limit_flag, &mut sent_at).await {
            Ok(response) => {
                let status = response.status().as_u16();
                // One reading of the clock for the latency, the instant it was observed and the
                // outcome.
                let now = tokio::time::Instant::now();
                let elapsed = now.saturating_duration_since(sent_at);
                backend_metrics.response_time.record(elapsed.as_secs_f64());
                let failed = pool.is_failure_status(status);
                if !failed {
                    // A backend that fails fast must not look fast to the latency balancer.
                    backend.state.observe_latency(elapsed, now);
                }
                pool.record_outcome_at(
                    lease.index,
                    if failed {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    },
                    now,
                );
                if another_left
                    && pool.retry.retries_status(status)
                    && pool.retry.should_retry(
                        attempt,
                        AttemptFailure::Status(status),
                        &head.method,
                        body.is_available(),
                        now,
                    )
                {
                    tracing::debug!(pool = %pool.name, backend = %backend.authority, status, attempt, "retrying on another backend");
                    tried.push(lease.index);
                    fallback = Some((response, lease));
                    continue;
                }
                if let Some(sticky) = &pool.sticky
                    && key.sticky != Some(lease.index)
                {
                    exchange.set_cookie = sticky.set_cookie(lease.index, conn.proto == "https");
                }
                return Ok((response, lease));
            }
            Err(error) => {
                let failure = match &error {
                    ProxyError::UpstreamConnect(_) | ProxyError::UpstreamConnectTimeout(_) => {
                        backend_metrics.connect_errors.increment(1);
                        AttemptFailure::Connect
                    }
                    ProxyError::UpstreamFailed(_) | ProxyError::UpstreamTimeout => {
                        AttemptFailure::AfterSend
                    }
                    // The client's fault (or not clearly the backend's): nothing to retry,
                    // nothing held against the backend.
                    _ => return Err(error),
                };
                pool.record_outcome(lease.index, Outcome::Failure);
                if another_left
                    && pool.retry.should_retry(
                        attempt,
                        failure,
                        &head.method,
                        body.is_available(),
                        tokio::time::Instant::now(),
                    )
                {
                    tracing::debug!(pool = %pool.name, backend = %backend.authority, cause = %error.cause(), attempt, "retrying on another backend");
                    tried.push(lease.index);
                    last_error = Some(error);
                    continue;
                }
                return match fallback {
                    Some(answer) => Ok(answer),
                    None => Err(error),
                };
            }
        }
    }
    match (fallback, last_error) {
        (Some(answer), _) => Ok(answer),
        (None, Some(error)) => Err(error),
        (None, None) => Err(ProxyError::NoBackend),
    }
}

/// A copy of an attempt's headers for the next attempt. A plain list costs one allocation to
/// make and one to free, where a `HeaderMap` clone costs two of each and copies its index
/// table; every request that may be retried makes one, and only a retry turns it back into a
/// map.
struct SpareHeaders(Vec<(header::HeaderName, HeaderValue)>);

impl SpareHeaders {
    fn of(headers: &http::HeaderMap) -> SpareHeaders {
        let mut list = Vec::with_capacity(headers.len());
        list.extend(
            headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        SpareHeaders(list)
    }

    /// The map again, its names and values in the same order.
    fn into_map(self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::with_capacity(self.0.len());
        for (name, value) in self.0 {
            headers.append(name, value);
        }
        headers
    }
}

/// The request for one attempt: the client head aimed at `backend`.
fn aim(
    head: &ClientHead,
    headers: http::HeaderMap,
    route: &Route,
    backend: &Backend,
    body: RequestBody,
    upgrade: Option<&HeaderValue>,
    exchange: &Exchange,
) -> Result<Request<RequestBody>, ProxyError> {
    let uri = Uri::builder()
        .scheme(route.pool.scheme())
        .authority(backend.authority.clone())
        .path_and_query(head.path_and_query.clone())
        .build()
        .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
    let mut upstream = Request::new(body);
    *upstream.method_mut() = head.method.clone();
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers;
    let h2c = route.pool.protocol == UpstreamProtocol::H2c;
    if head.finished && !h2c {
        return Ok(upstream);
    }
    let host = backend_host(head, route, Some(backend));
    if h2c {
        // HTTP/2 carries the host as `:authority` (taken from the URI); a `Host` header that
        // differs from it may be refused (RFC 9113 §8.3.1).
        if let Some(authority) = host
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        {
            let mut uri_parts = upstream.uri().clone().into_parts();
            uri_parts.authority = Some(authority);
            if let Ok(uri) = Uri::from_parts(uri_parts) {
                *upstream.uri_mut() = uri;
            }
        }
    }
    if !head.finished {
        finish_headers(
            upstream.headers_mut(),
            route,
            host,
            head.decoded,
            &exchange.request_id,
            upgrade,
        );
    }
    Ok(upstream)
}

/// How a send ended when it did not end with the backend's answer or error.
enum Sent {
    Answered(Result<Response<UpstreamBody>, UpstreamError>),
    /// The backend sent no response head in time after the whole body was sent.
    TimedOut,
    /// The body stopped moving for the whole timeout: the client stalled (or the backend
    /// stopped reading). Not counted against the backend, never retried.
    UploadStalled,
}

/// Sends a request whose body is still to stream. The backend has the header timeout to answer
/// once the body is all sent; while it streams, the clock restarts each time a piece of it
/// moves, so a long upload is not cut off but a stalled one is. `sent_at` becomes the instant
/// the body was all sent.
async fn forward_streaming(
    route: &Route,
    backend: &Backend,
    mut request: Request<RequestBody>,
    sent_at: &mut tokio::time::Instant,
) -> Sent {
    let mut body_progress = request.body_mut().progress();
    let timeout = route.upstream_header_timeout;
    let sent = route.pool.send(backend, request);
    tokio::pin!(sent);
    loop {
        tokio::select! {
            result = &mut sent => break Sent::Answered(result),
            moved = body_progress.changed() => {
                if moved.is_err() {
                    *sent_at = tokio::time::Instant::now();
                    break match tokio::time::timeout(timeout, &mut sent).await {
                        Ok(result) => Sent::Answered(result),
                        Err(_) => Sent::TimedOut,
                    };
                }
            }
            () = tokio::time::sleep(timeout) => break Sent::UploadStalled,
        }
    }
}

/// A plain function that picks the sending future before it exists, rather than an `async fn`:
/// the request's future nests this one, and an `async fn` here kept the request twice (argument
/// and local) beside the larger streaming future in every request's state (2,504 bytes; every
/// level above holds it). The streaming path, for requests with a body, is boxed.
fn forward<'a>(
    route: &'a Route,
    backend: &'a Backend,
    request: Request<RequestBody>,
    limit_flag: Option<&'a AtomicBool>,
    sent_at: &'a mut tokio::time::Instant,
) -> impl Future<Output = Result<Response<UpstreamBody>, ProxyError>> + Send + 'a {
    let sending = if http_body::Body::is_end_stream(request.body()) {
        // No body (most GETs): one timer, armed once, from the instant the caller read (the
        // request leaves now: no clock reading of its own).
        // (Configured durations are at most 100 years: the sum cannot overflow.)
        Sending::Bodiless {
            send: tokio::time::timeout_at(
                *sent_at + route.upstream_header_timeout,
                route.pool.send(backend, request),
            ),
        }
    } else {
        Sending::Streaming {
            streaming: Box::pin(forward_streaming(route, backend, request, sent_at)),
        }
    };
    Forwarding {
        sending,
        limit_flag,
    }
}

pin_project_lite::pin_project! {
    /// How a request is being sent: a bodiless one under one timeout, or one whose body streams.
    #[project = SendingProj]
    enum Sending<A, B> {
        Bodiless { #[pin] send: tokio::time::Timeout<A> },
        Streaming { streaming: Pin<Box<B>> },
    }
}

pin_project_lite::pin_project! {
    /// [`forward`]'s future: the send, then what its outcome means for the client. Written out
    /// rather than with `map` combinators, which move the whole finished future out of their
    /// state (hundreds of bytes of memcpy per request).
    struct Forwarding<'a, A, B> {
        #[pin]
        sending: Sending<A, B>,
        limit_flag: Option<&'a AtomicBool>,
    }
}

impl<A, B> Future for Forwarding<'_, A, B>
where
    A: Future<Output = Result<Response<UpstreamBody>, UpstreamError>>,
    B: Future<Output = Sent>,
{
    type Output = Result<Response<UpstreamBody>, ProxyError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let sent = match this.sending.project() {
            SendingProj::Bodiless { send } => match std::task::ready!(send.poll(cx)) {
                Ok(result) => Sent::Answered(result),
                Err(_) => Sent::TimedOut,
            },
            SendingProj::Streaming { streaming } => std::task::ready!(streaming.as_mut().poll(cx)),
        };
        std::task::Poll::Ready(outcome_of(sent, *this.limit_flag))
    }
}

/// What a send's outcome means for the client.
fn outcome_of(
    outcome: Sent,
    limit_flag: Option<&AtomicBool>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    match outcome {
        Sent::TimedOut => Err(ProxyError::UpstreamTimeout),
        Sent::UploadStalled => Err(ProxyError::UploadStalled),
        Sent::Answered(Ok(response)) => Ok(response),
        Sent::Answered(Err(error)) => {
            if limit_flag.is_some_and(|f| f.load(Ordering::Relaxed)) {
                return Err(ProxyError::BodyTooLarge);
            }
            Err(match error {
                // As nginx does: a backend that cannot be reached in time is a gateway timeout.
                UpstreamError::Connect {
                    timed_out: true,
                    cause,
                } => ProxyError::UpstreamConnectTimeout(cause),
                UpstreamError::Connect { cause, .. } => ProxyError::UpstreamConnect(cause),
                UpstreamError::Failed(cause) => ProxyError::UpstreamFailed(cause),
                UpstreamError::ClientBody { fault, cause } => match fault {
                    ClientFault::TooLarge => ProxyError::BodyTooLarge,
                    ClientFault::Unreadable => ProxyError::ClientBody(cause),
                    ClientFault::TooSlow => ProxyError::UploadTooSlow,
                },
            })
        }
    }
}

/// Applies `strip_prefix` then `add_prefix` to the path; the query is kept as is.
pub(crate) fn rewrite_path(route: &Route, uri: &Uri) -> Result<PathAndQuery, ProxyError> {
    let original = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if route.strip_prefix.is_none() && route.add_prefix.is_none() {
        return Ok(original);
    }
    let path = original.path();
    let stripped = match &route.strip_prefix {
        Some(prefix) => path.strip_prefix(prefix.as_str()).unwrap_or(path),
        None => path,
    };
    let mut rewritten = String::with_capacity(original.as_str().len() + 16);
    match &route.add_prefix {
        Some(prefix) => {
            rewritten.push_str(prefix.trim_end_matches('/'));
            if !stripped.starts_with('/') {
                rewritten.push('/');
            }
        }
        None if !stripped.starts_with('/') => rewritten.push('/'),
        None => {}
    }
    rewritten.push_str(stripped);
    if let Some(query) = original.query() {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    PathAndQuery::try_from(rewritten)
        .map_err(|_| ProxyError::BadRequest("rewritten path is invalid"))
}

fn rewrite_response(
    generation: &Generation,
    conn: &ConnInfo,
    route: &Route,
    exchange: &Exchange,
    response: &mut Response<ResponseBody>,
    public_host: Option<&HeaderValue>,
) {
    let upgrading = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    let upgrade_to = upgrading
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    // Hop-by-hop headers and identity hiding in one pass over the names; hiding comes before
    // the configured edits, so a header an operator adds on purpose stays. (Hiding never
    // removes `Connection` or `Upgrade`, so the upgrade's pair can go back afterwards.)
    let present = headers::strip_response(headers, &generation.hide);
    if let Some(protocol) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if generation.security.rewrite_location && present.any(Present::LOCATION) {
        identity::rewrite_location_among(
            headers,
            route.pool.backends.iter().map(|b| &b.authority),
            public_host,
            conn.proto,
        );
    }
    route.response_edits.apply(headers);
    if let Some(cookie) = &exchange.set_cookie {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    if let Some(status) = &exchange.cache_status {
        // RFC 9211.
        headers.insert(CACHE_STATUS.clone(), status.clone());
    }
    headers.insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
    if conn.proto == "https"
        && let Some(hsts) = &route.hsts
    {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if generation.forwarded.via {
        headers::add_via(headers);
    }
    *response.version_mut() = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::HeaderEdits;
    use crate::upstream::UpstreamPool;

    fn route(strip: Option<&str>, add: Option<&str>) -> Route {
        let pool_config: crate::config::PoolConfig =
            toml::from_str("backends = [\"127.0.0.1:1\"]").expect("pool config");
        Route {
            name: Arc::from("r"),
            pool: Arc::new(
                UpstreamPool::new("p", &pool_config, &Default::default()).expect("pool"),
            ),
            strip_prefix: strip.map(str::to_owned),
            add_prefix: add.map(str::to_owned),
            host: HostRewrite::Preserve,
            request_edits: HeaderEdits::default(),
            response_edits: HeaderEdits::default(),
            upstream_header_timeout: std::time::Duration::from_secs(1),
            upstream_read_timeout: None,
            max_body: None,
            hsts: None,
            compression: None,
            request_decoding: None,
            access: None,
            metrics: std::sync::OnceLock::new(),
            rate_limit: None,
            cache: None,
        }
    }

    fn rewritten(strip: Option<&str>, add: Option<&str>, target: &str) -> String {
        let uri: Uri = target.parse().unwrap();
        rewrite_path(&route(strip, add), &uri)
            .unwrap()
            .as_str()
            .to_owned()
    }

    #[tokio::test]
    async fn paths_are_stripped_then_prefixed_keeping_the_query() {
        assert_eq!(rewritten(None, None, "/a/b?x=1"), "/a/b?x=1");
        assert_eq!(
            rewritten(Some("/api"), None, "/api/users?id=2"),
            "/users?id=2"
        );
        assert_eq!(rewritten(Some("/api"), None, "/api"), "/");
        assert_eq!(rewritten(Some("/api/"), None, "/api/users"), "/users");
        assert_eq!(rewritten(Some("/api"), None, "/other"), "/other");
        assert_eq!(
            rewritten(Some("/api"), Some("/v2"), "/api/users"),
            "/v2/users"
        );
        assert_eq!(rewritten(None, Some("/v2/"), "/users"), "/v2/users");
        assert_eq!(
            rewritten(Some("/api/"), Some("/v2"), "/api/users?q"),
            "/v2/users?q"
        );
    }
}
