//! Access policy of a route or listener: IP deny and allow lists, the methods a route serves, and
//! HTTP basic authentication against an htpasswd file.
//!
//! [`AccessPolicy::check`] decides in a fixed order — `deny`, then `allow`, then methods, then
//! credentials — so the cheap checks refuse what they can before any password hash is computed,
//! and an address on the deny list is refused even with the right password.
//!
//! Passwords are checked against bcrypt or Argon2 hashes only: the older htpasswd schemes (MD5
//! `$apr1$`, `{SHA}`, crypt(3) DES, plain text) fall to commodity hardware and are refused when
//! the file is loaded. A strong hash costs tens of milliseconds of CPU by design, so a client that
//! keeps sending the same correct credentials is not made to pay it on every request: a verified
//! password is remembered as a keyed digest (HMAC-SHA-256 under a random per-load key, so the
//! memory holds nothing an attacker could crack offline faster than the hash itself), at most
//! [`CACHE_CAPACITY`] users at a time. Failures are never remembered. Full verifications run on
//! the blocking thread pool and at most about half the cores' worth at once (see
//! [`AccessPolicy::check_async`]), so a flood of wrong passwords cannot stall the proxy.
//!
//! An unknown user name costs one full verification against another user's hash, as a wrong
//! password for a known user does, so response times do not tell which user names exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use aws_lc_rs::hmac;
use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::ip::IpList;
use crate::config::{BasicAuthSettings, ListenerConfig, RouteConfig};

/// Most users whose verified password is remembered at once.
pub const CACHE_CAPACITY: usize = 1024;

/// Longest `Authorization` value looked at; longer ones are malformed.
const MAX_AUTHORIZATION: usize = 4096;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The client's address is denied, or not allowed: 403.
    Forbidden,
    /// The route does not serve this method: 405 with this `Allow` value.
    MethodNotAllowed {
        /// The methods the route serves, for the `Allow` header.
        allow: HeaderValue,
    },
    /// No valid credentials: 401 with this `WWW-Authenticate` value.
    Unauthorized {
        /// The basic-auth challenge.
        challenge: HeaderValue,
    },
}

impl Denial {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::Forbidden => StatusCode::FORBIDDEN,
            Denial::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Denial::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The header the answer must carry (`Allow` or `WWW-Authenticate`), if any.
    pub fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        match self {
            Denial::Forbidden => None,
            Denial::MethodNotAllowed { allow } => Some((header::ALLOW, allow.clone())),
            Denial::Unauthorized { challenge } => {
                Some((header::WWW_AUTHENTICATE, challenge.clone()))
            }
        }
    }
}

/// The methods a route serves, with the `Allow` value that lists them.
#[derive(Debug, Clone)]
struct MethodList {
    methods: Vec<Method>,
    allow: HeaderValue,
}

impl MethodList {
    /// Serving `GET` means serving `HEAD` too (RFC 9110 §9.3.2: HEAD is GET without the body).
    fn new(mut methods: Vec<Method>) -> MethodList {
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            let at = methods.iter().position(|m| m == Method::GET).unwrap_or(0);
            methods.insert(at + 1, Method::HEAD);
        }
        let mut seen = Vec::with_capacity(methods.len());
        for method in methods {
            if !seen.contains(&method) {
                seen.push(method);
            }
        }
        let text = seen
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        // Method names are tokens, always a valid header value.
        let allow = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
        MethodList {
            methods: seen,
            allow,
        }
    }
}

/// Who may use a route or connect to a listener.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    deny: Option<IpList>,
    allow: Option<IpList>,
    methods: Option<MethodList>,
    basic_auth: Option<BasicAuth>,
}

impl AccessPolicy {
    /// A policy from its parts; `None` means no such check. Allowing `GET` allows `HEAD`.
    pub fn new(
        deny: Option<IpList>,
        allow: Option<IpList>,
        methods: Option<Vec<Method>>,
        basic_auth: Option<BasicAuth>,
    ) -> AccessPolicy {
        AccessPolicy {
            deny,
            allow,
            methods: methods.map(MethodList::new),
            basic_auth,
        }
    }

    /// A route's policy (`deny`, `allow`, `allow_methods`, `basic_auth`), or `None` when the
    /// route sets none of them. Reads the list and htpasswd files, so a reload re-reads them.
    pub fn for_route(route: &RouteConfig) -> Result<Option<AccessPolicy>, String> {
        let deny = list(route.deny.as_deref(), "deny")?;
        let allow = list(route.allow.as_deref(), "allow")?;
        let methods = route
            .allow_methods
            .as_deref()
            .map(|ms| parse_methods(ms.iter().map(|m| m.get_ref())))
            .transpose()
            .map_err(|e| format!("allow_methods: {e}"))?;
        let basic_auth = route
            .basic_auth
            .as_ref()
            .map(|settings| BasicAuth::load(settings.get_ref()))
            .transpose()
            .map_err(|e| format!("basic_auth: {e}"))?;
        let policy = AccessPolicy::new(deny, allow, methods, basic_auth);
        Ok((!policy.is_empty()).then_some(policy))
    }

    /// A listener's policy (`deny`, `allow`), or `None` when it sets neither.
    pub fn for_listener(listener: &ListenerConfig) -> Result<Option<AccessPolicy>, String> {
        let deny = list(listener.deny.as_deref(), "deny")?;
        let allow = list(listener.allow.as_deref(), "allow")?;
        let policy = AccessPolicy::new(deny, allow, None, None);
        Ok((!policy.is_empty()).then_some(policy))
    }

    /// True when the policy checks nothing.
    pub fn is_empty(&self) -> bool {
        self.deny.is_none()
            && self.allow.is_none()
            && self.methods.is_none()
            && self.basic_auth.is_none()
    }

    /// True when the policy authenticates requests: the `Authorization` header is then the
    /// proxy's and is not passed on.
    pub fn consumes_authorization(&self) -> bool {
        self.basic_auth.is_some()
    }

    /// The address checks alone: false if `client` is denied or not allowed. This is the whole
    /// check of a listener's policy, made on the TCP peer at accept.
    pub fn admits(&self, client: IpAddr) -> bool {
        if self.deny.as_ref().is_some_and(|deny| deny.contains(client)) {
            return false;
        }
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.contains(client))
    }

    /// Checks a request from `client` (its effective address): deny list, allow list, method,
    /// then credentials. A password not verified recently is verified here, on the calling
    /// thread; async callers should use [`AccessPolicy::check_async`].
    pub fn check(
        &self,
        client: IpAddr,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), Denial> {
        self.check_cheap(client, method)?;
        match &self.basic_auth {
            None => Ok(()),
            Some(auth) => auth.check(headers),
        }
    }

    /// As [`AccessPolicy::check`], running a full password verification (a cache miss) on the
    /// blocking thread pool, with at most [`verification_slots`] of them at once.
    pub async fn check_async(
        &self,
        client: IpAddr,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), Denial> {
        self.check_cheap(client, method)?;
        self.authenticate(headers).await
    }

    /// The cheap part of [`AccessPolicy::check`]: deny list, allow list, method. With
    /// [`AccessPolicy::authenticate`] after it, a caller can run other checks (a rate limit)
    /// between the two, so a flood of password guesses is throttled before any hash is computed.
    pub fn check_client(&self, client: IpAddr, method: &Method) -> Result<(), Denial> {
        self.check_cheap(client, method)
    }

    /// The credentials part of [`AccessPolicy::check_async`]: passes when the policy has no
    /// basic auth.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<(), Denial> {
        match &self.basic_auth {
            None => Ok(()),
            Some(auth) => auth.check_async(headers).await,
        }
    }

    fn check_cheap(&self, client: IpAddr, method: &Method) -> Result<(), Denial> {
        if !self.admits(client) {
            return Err(Denial::Forbidden);
        }
        if let Some(list) = &self.methods
            && !list.methods.contains(method)
        {
            return Err(Denial::MethodNotAllowed {
                allow: list.allow.clone(),
            });
        }
        Ok(())
    }
}

fn list(
    entries: Option<&[serde_spanned::Spanned<String>]>,
    key: &str,
) -> Result<Option<IpList>, String> {
    entries
        .map(|entries| IpList::parse_entries(entries.iter().map(|e| e.get_ref())))
        .transpose()
        .map_err(|e| format!("{key}: {e}"))
}

/// Parses method names for a route's `methods` and `allow_methods`. Methods are case-sensitive; a lower-case spelling of
/// a standard method is refused as the typo it almost certainly is.
pub fn parse_methods<I, S>(names: I) -> Result<Vec<Method>, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut methods = Vec::new();
    for name in names {
        let name = name.as_ref();
        let method = Method::from_bytes(name.as_bytes())
            .ok()
            .filter(|_| !name.is_empty())
            .ok_or_else(|| format!("{name:?} is not an HTTP method"))?;
        let upper = name.to_ascii_uppercase();
        if upper != name
            && [
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
                "QUERY",
            ]
            .contains(&upper.as_str())
        {
            return Err(format!(
                "{name:?}: methods are case-sensitive; did you mean {upper:?}?"
            ));
        }
        methods.push(method);
    }
    if methods.is_empty() {
        return Err("lists no method".to_owned());
    }
    Ok(methods)
}

/// A password hash from an htpasswd file.
#[derive(Debug)]
enum PasswordHash {
    /// `$2a$`, `$2b$` or `$2y$`.
    Bcrypt(String),
    /// `$argon2id$` or `$argon2i$` in PHC string format.
    Argon2(Box<argon2::PasswordHash>),
}

impl PasswordHash {
    /// Recognises a hash, refusing the weak and the unsupported schemes by name.
    fn parse(text: &str) -> Result<PasswordHash, String> {
        const REHASH: &str = "re-hash it with bcrypt (`htpasswd -B`) or Argon2id";
        if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
        {
            return if is_bcrypt_rest(rest) {
                Ok(PasswordHash::Bcrypt(text.to_owned()))
            } else {
                Err(
                    "malformed bcrypt hash (expected $2y$NN$ and 53 characters of salt and \
                     hash, cost 04-31)"
                        .to_owned(),
                )
            };
        }
        if text.starts_with("$argon2") {
            return parse_argon2(text);
        }
        let scheme = if text.starts_with("$apr1$") {
            "MD5 ($apr1$) hashes are weak"
        } else if text.starts_with("{SHA}") {
            "SHA-1 ({SHA}) hashes are weak"
        } else if text.starts_with("$1$") {
            "MD5-crypt ($1$) hashes are weak"
        } else if text.starts_with("$2x$") {
            "$2x$ marks hashes made by a buggy bcrypt"
        } else if text.starts_with("$5$") || text.starts_with("$6$") {
            "SHA-crypt ($5$, $6$) is not supported"
        } else if text.starts_with('$') {
            "unknown hash scheme"
        } else {
            "looks like a plain-text password or a crypt(3) DES hash, which are weak"
        };
        Err(format!("{scheme}; {REHASH}"))
    }

    /// True if `password` hashes to this. Costs a full hash computation.
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Argon2(hash) => {
                use argon2::PasswordVerifier as _;
                argon2::Argon2::default()
                    .verify_password(password, &**hash)
                    .is_ok()
            }
        }
    }
}

/// After `$2y$`: two cost digits in 04..=31, `$`, then 22 characters of salt and 31 of hash in
/// bcrypt's base64 alphabet.
fn is_bcrypt_rest(rest: &str) -> bool {
    let bytes = rest.as_bytes();
    if bytes.len() != 56 || bytes[2] != b'$' {
        return false;
    }
    let cost = match (bytes[0], bytes[1]) {
        (a @ b'0'..=b'9', b @ b'0'..=b'9') => (a - b'0') * 10 + (b - b'0'),
        _ => return false,
    };
    (4..=31).contains(&cost)
        && bytes[3..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/'))
}

fn parse_argon2(text: &str) -> Result<PasswordHash, String> {
    let hash = argon2::PasswordHash::new(text)
        .map_err(|e| format!("malformed Argon2 hash (expected PHC format $argon2id$v=19$m=...,t=...,p=...$salt$hash): {e}"))?;
    let algorithm = hash.algorithm.as_str();
    if algorithm == "argon2d" {
        return Err("argon2d is meant for proof-of-work, not passwords; use argon2id".to_owned());
    }
    if algorithm != "argon2id" && algorithm != "argon2i" {
        return Err(format!("unknown hash scheme {algorithm:?}"));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("Argon2 hash without salt or hash".to_owned());
    }
    argon2::Params::try_from(&hash).map_err(|e| format!("bad Argon2 parameters: {e}"))?;
    Ok(PasswordHash::Argon2(Box::new(hash)))
}

/// A verified password, remembered.
struct Proof {
    /// HMAC of the user and password under the load's cache key.
    tag: hmac::Tag,
    /// The hash it was verified against (the user's entry at the time).
    hash: Arc<PasswordHash>,
}

/// HTTP basic authentication against one htpasswd file.
///
/// Cheap to clone: clones share the users, the cache and the counters.
#[derive(Clone)]
pub struct BasicAuth {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the users came from, for `Debug`.
    source: String,
    users: HashMap<String, Arc<PasswordHash>>,
    /// Verified against for unknown users, so they cost what a known user does.
    decoy: Arc<PasswordHash>,
    challenge: HeaderValue,
    cache_key: hmac::Key,
    cache: RwLock<HashMap<String, Proof>>,
    verifications: AtomicU64,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("source", &self.inner.source)
            .field("users", &self.inner.users.len())
            .finish_non_exhaustive()
    }
}

/// What the cache knows about a pair of credentials.
enum Lookup {
    /// Verified before.
    Granted,
    /// Needs a full verification against `hash`; `known` is false for a decoy.
    Verify {
        hash: Arc<PasswordHash>,
        known: bool,
    },
}

/// Credentials from an `Authorization: Basic` header.
struct Credentials {
    user: String,
    password: String,
}

impl BasicAuth {
    /// Reads the htpasswd file named by `settings`: `user:hash` lines (an optional third
    /// `:comment` field is ignored), blank lines and `#` comment lines skipped. Refuses the file
    /// if any hash is of a weak or unsupported scheme, naming the line.
    pub fn load(settings: &BasicAuthSettings) -> Result<BasicAuth, String> {
        let path = &settings.htpasswd;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read htpasswd file {path}: {e}"))?;
        BasicAuth::from_htpasswd(path, &text, &settings.realm)
    }

    /// As [`BasicAuth::load`], from the file's text; `source` names it in errors.
    pub fn from_htpasswd(source: &str, text: &str, realm: &str) -> Result<BasicAuth, String> {
        let challenge = challenge(realm)?;
        let mut users = HashMap::new();
        let mut first = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let at = format!("{source}:{}", index + 1);
            let Some((user, rest)) = line.split_once(':') else {
                return Err(format!("{at}: expected user:hash"));
            };
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err(format!(
                    "{at}: user name is empty or has control characters"
                ));
            }
            let hash = rest.split(':').next().unwrap_or("");
            let hash = Arc::new(
                PasswordHash::parse(hash).map_err(|why| format!("{at}: user {user:?}: {why}"))?,
            );
            if users.insert(user.to_owned(), hash.clone()).is_some() {
                return Err(format!("{at}: user {user:?} appears twice"));
            }
            first.get_or_insert(hash);
        }
        let Some(decoy) = first else {
            return Err(format!("{source}: no users"));
        };
        let cache_key =
            hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new())
                .map_err(|_| "cannot generate a random key".to_owned())?;
        Ok(BasicAuth {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                users,
                decoy,
                challenge,
                cache_key,
                cache: RwLock::new(HashMap::new()),
                verifications: AtomicU64::new(0),
            }),
        })
    }

    /// Number of users in the file.
    pub fn users(&self) -> usize {
        self.inner.users.len()
    }

    /// Full hash verifications run so far (cache misses, unknown users included).
    pub fn verifications(&self) -> u64 {
        self.inner.verifications.load(Ordering::Relaxed)
    }

    /// The 401 answer.
    fn unauthorized(&self) -> Denial {
        Denial::Unauthorized {
            challenge: self.inner.challenge.clone(),
        }
    }

    /// Checks the request's credentials, verifying on this thread if they are not cached.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denial> {
        let Some(credentials) = basic_credentials(headers) else {
            return Err(self.unauthorized());
        };
        let granted = match self.lookup(&credentials) {
            Lookup::Granted => true,
            Lookup::Verify { hash, known } => self.verify(&credentials, &hash, known),
        };
        if granted {
            Ok(())
        } else {
            Err(self.unauthorized())
        }
    }

    /// Checks the request's credentials; a full verification runs on the blocking pool, at most
    /// [`verification_slots`] at once over the whole process.
    pub async fn check_async(&self, headers: &HeaderMap) -> Result<(), Denial> {
        let Some(credentials) = basic_credentials(headers) else {
            return Err(self.unauthorized());
        };
        let (hash, known) = match self.lookup(&credentials) {
            Lookup::Granted => return Ok(()),
            Lookup::Verify { hash, known } => (hash, known),
        };
        // The semaphore is never closed; without a permit the work would still be bounded by
        // the blocking pool.
        let _permit = VERIFY_SLOTS.acquire().await.ok();
        let this = self.clone();
        let granted = tokio::task::spawn_blocking(move || this.verify(&credentials, &hash, known))
            .await
            .unwrap_or(false);
        if granted {
            Ok(())
        } else {
            Err(self.unauthorized())
        }
    }

    /// The cheap part: a cached proof for these credentials, or the hash to verify against.
    fn lookup(&self, credentials: &Credentials) -> Lookup {
        let Some(hash) = self.inner.users.get(&credentials.user) else {
            return Lookup::Verify {
                hash: self.inner.decoy.clone(),
                known: false,
            };
        };
        let cache = self.inner.cache.read().unwrap_or_else(|e| e.into_inner());
        if let Some(proof) = cache.get(&credentials.user)
            && Arc::ptr_eq(&proof.hash, hash)
            // Constant-time comparison of the tags.
            && hmac::verify(
                &self.inner.cache_key,
                &self.cache_message(credentials),
                proof.tag.as_ref(),
            )
            .is_ok()
        {
            return Lookup::Granted;
        }
        Lookup::Verify {
            hash: hash.clone(),
            known: true,
        }
    }

    /// The expensive part: a full verification; success (of a known user) is remembered.
    fn verify(&self, credentials: &Credentials, hash: &Arc<PasswordHash>, known: bool) -> bool {
        self.inner.verifications.fetch_add(1, Ordering::Relaxed);
        let matches = hash.matches(credentials.password.as_bytes());
        if !(matches && known) {
            return false;
        }
        let tag = hmac::sign(&self.inner.cache_key, &self.cache_message(credentials));
        let mut cache = self.inner.cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY
            && !cache.contains_key(&credentials.user)
            && let Some(evicted) = cache.keys().next().cloned()
        {
            // The map's iteration order is randomised per map: an arbitrary entry goes.
            cache.remove(&evicted);
        }
        cache.insert(
            credentials.user.clone(),
            Proof {
                tag,
                hash: hash.clone(),
            },
        );
        true
    }

    /// What the cache's HMAC covers: the user's length, the user, the password.
    fn cache_message(&self, credentials: &Credentials) -> Vec<u8> {
        let user = credentials.user.as_bytes();
        let password = credentials.password.as_bytes();
        let mut message = Vec::with_capacity(8 + user.len() + password.len());
        message.extend_from_slice(&(user.len() as u64).to_be_bytes());
        message.extend_from_slice(user);
        message.extend_from_slice(password);
        message
    }
}

/// How many full verifications may run at once, over the whole process: half the cores, at
/// least one, so the rest keep proxying during a flood of wrong passwords.
pub fn verification_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().div_ceil(2))
        .max(1)
}

static VERIFY_SLOTS: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(verification_slots()));

/// `Basic realm="...", charset="UTF-8"`; the realm must be printable ASCII.
fn challenge(realm: &str) -> Result<HeaderValue, String> {
    if !realm.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(format!(
            "realm {realm:?} must be printable ASCII (browsers show others inconsistently)"
        ));
    }
    let quoted = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("Basic realm=\"{quoted}\", charset=\"UTF-8\""))
        .map_err(|_| format!("realm {realm:?} cannot be sent in a header"))
}

/// The credentials of a request, if it carries exactly one well-formed `Authorization: Basic`
/// header: scheme (any case), one or more spaces, canonical padded base64 of UTF-8
/// `user:password` without control characters (RFC 7617).
fn basic_credentials(headers: &HeaderMap) -> Option<Credentials> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() || value.len() > MAX_AUTHORIZATION {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = rest.trim_start_matches(' ');
    if encoded.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    if decoded.chars().any(char::is_control) {
        return None;
    }
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        authorization(&format!("Basic {token}"))
    }

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    /// A cheap bcrypt hash (cost 4) with a fixed salt.
    fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash_with_salt(password, 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY)
    }

    /// A cheap Argon2id hash (8 KiB, one pass).
    fn argon2_hash(password: &str) -> String {
        use argon2::PasswordHasher as _;
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        hasher
            .hash_password_with_salt(password.as_bytes(), b"saltsaltsalt")
            .unwrap()
            .to_string()
    }

    fn htpasswd(lines: &str) -> BasicAuth {
        BasicAuth::from_htpasswd("test.htpasswd", lines, "Staff only").expect("valid htpasswd")
    }

    fn two_users() -> BasicAuth {
        htpasswd(&format!(
            "# staff\nalice:{}\n\nbob:{}:Bob Example\n",
            bcrypt_hash("wonderland"),
            argon2_hash("builder")
        ))
    }

    fn challenge_of(denial: Denial) -> HeaderValue {
        match denial {
            Denial::Unauthorized { challenge } => challenge,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn checks_run_deny_then_allow_then_methods_then_auth() {
        let policy = AccessPolicy::new(
            Some(IpList::parse_entries(["10.0.0.66"]).unwrap()),
            Some(IpList::parse_entries(["10.0.0.0/8"]).unwrap()),
            Some(vec![Method::GET]),
            Some(two_users()),
        );
        let none = HeaderMap::new();
        let good = basic("alice", "wonderland");
        // Denied beats allowed, the right method and the right password.
        assert_eq!(
            policy.check(ip("10.0.0.66"), &Method::GET, &good),
            Err(Denial::Forbidden)
        );
        // Not allowed beats a wrong method.
        assert_eq!(
            policy.check(ip("192.0.2.1"), &Method::POST, &none),
            Err(Denial::Forbidden)
        );
        // A wrong method beats missing credentials.
        let denial = policy
            .check(ip("10.1.1.1"), &Method::POST, &none)
            .unwrap_err();
        assert_eq!(denial.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            denial.header(),
            Some((header::ALLOW, HeaderValue::from_static("GET, HEAD")))
        );
        let denial = policy
            .check(ip("10.1.1.1"), &Method::HEAD, &none)
            .unwrap_err();
        assert_eq!(denial.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge_of(denial),
            "Basic realm=\"Staff only\", charset=\"UTF-8\""
        );
        assert_eq!(policy.check(ip("10.1.1.1"), &Method::GET, &good), Ok(()));
        assert!(policy.consumes_authorization());
        assert!(!policy.admits(ip("10.0.0.66")));
        assert!(policy.admits(ip("::ffff:10.0.0.67")));
    }

    #[test]
    fn an_empty_policy_lets_everything_through() {
        let policy = AccessPolicy::default();
        assert!(policy.is_empty());
        assert!(!policy.consumes_authorization());
        assert_eq!(
            policy.check(ip("203.0.113.1"), &Method::DELETE, &HeaderMap::new()),
            Ok(())
        );
        let only_deny = AccessPolicy::new(
            Some(IpList::parse_entries(["203.0.113.0/24"]).unwrap()),
            None,
            None,
            None,
        );
        assert!(only_deny.admits(ip("198.51.100.1")));
        assert!(!only_deny.admits(ip("203.0.113.1")));
    }

    #[test]
    fn method_lists_are_strict_and_deduplicated() {
        assert_eq!(
            parse_methods(["GET", "PURGE"]).unwrap(),
            [Method::GET, Method::from_bytes(b"PURGE").unwrap()]
        );
        assert!(
            parse_methods(["get"])
                .unwrap_err()
                .contains("did you mean \"GET\"")
        );
        assert!(
            parse_methods(["GE T"])
                .unwrap_err()
                .contains("not an HTTP method")
        );
        assert!(parse_methods(Vec::<String>::new()).is_err());
        let list = MethodList::new(vec![Method::POST, Method::GET, Method::HEAD, Method::POST]);
        assert_eq!(list.allow, "POST, GET, HEAD");
    }

    #[test]
    fn bcrypt_and_argon2_passwords_verify() {
        let auth = two_users();
        assert_eq!(auth.users(), 2);
        assert_eq!(auth.check(&basic("alice", "wonderland")), Ok(()));
        assert_eq!(auth.check(&basic("bob", "builder")), Ok(()));
        for (user, password) in [
            ("alice", "Wonderland"),
            ("alice", ""),
            ("bob", "wonderland"),
            ("carol", "wonderland"),
            ("", "wonderland"),
        ] {
            assert!(
                auth.check(&basic(user, password)).is_err(),
                "{user}:{password}"
            );
        }
        // A password with a colon: the user name ends at the first one.
        let colon = htpasswd(&format!("dave:{}\n", bcrypt_hash("a:b")));
        assert_eq!(colon.check(&basic("dave", "a:b")), Ok(()));
    }

    #[test]
    fn verified_passwords_are_cached_and_failures_are_not() {
        let auth = two_users();
        let good = basic("alice", "wonderland");
        assert_eq!(auth.check(&good), Ok(()));
        assert_eq!(auth.verifications(), 1);
        for _ in 0..5 {
            assert_eq!(auth.check(&good), Ok(()));
        }
        assert_eq!(auth.verifications(), 1, "the cache spared the hash");
        // A wrong password is verified each time (a cached right one does not vouch for it).
        for n in 2..=3 {
            assert!(auth.check(&basic("alice", "nope")).is_err());
            assert_eq!(auth.verifications(), n);
        }
        // An unknown user costs a verification too, and is never cached.
        assert!(auth.check(&basic("mallory", "wonderland")).is_err());
        assert!(auth.check(&basic("mallory", "wonderland")).is_err());
        assert_eq!(auth.verifications(), 5);
        // The right password still hits the cache.
        assert_eq!(auth.check(&good), Ok(()));
        assert_eq!(auth.verifications(), 5);
        // A clone shares the cache.
        assert_eq!(auth.clone().check(&good), Ok(()));
        assert_eq!(auth.verifications(), 5);
    }

    #[test]
    fn the_cache_is_bounded() {
        let hash = bcrypt_hash("pw");
        let mut file = String::new();
        for n in 0..CACHE_CAPACITY + 5 {
            file.push_str(&format!("user{n}:{hash}\n"));
        }
        let auth = htpasswd(&file);
        for n in 0..CACHE_CAPACITY + 5 {
            let credentials = Credentials {
                user: format!("user{n}"),
                password: "pw".to_owned(),
            };
            let hash = auth.inner.users[&credentials.user].clone();
            // Record a proof without paying for a hash per user.
            let tag = hmac::sign(&auth.inner.cache_key, &auth.cache_message(&credentials));
            let mut cache = auth.inner.cache.write().unwrap();
            if cache.len() >= CACHE_CAPACITY
                && let Some(k) = cache.keys().next().cloned()
            {
                cache.remove(&k);
            }
            cache.insert(credentials.user.clone(), Proof { tag, hash });
        }
        assert_eq!(auth.inner.cache.read().unwrap().len(), CACHE_CAPACITY);
        // And the real insertion path keeps the bound.
        assert_eq!(auth.check(&basic("user0", "pw")), Ok(()));
        assert!(auth.inner.cache.read().unwrap().len() <= CACHE_CAPACITY);
    }

    #[tokio::test]
    async fn async_checks_verify_off_the_runtime_and_use_the_cache() {
        let policy = AccessPolicy::new(None, None, None, Some(two_users()));
        let good = basic("bob", "builder");
        assert_eq!(
            policy
                .check_async(ip("192.0.2.1"), &Method::GET, &good)
                .await,
            Ok(())
        );
        assert_eq!(
            policy
                .check_async(ip("192.0.2.1"), &Method::GET, &good)
                .await,
            Ok(())
        );
        let auth = policy.basic_auth.as_ref().unwrap();
        assert_eq!(auth.verifications(), 1);
        assert!(
            policy
                .check_async(ip("192.0.2.1"), &Method::GET, &basic("bob", "x"))
                .await
                .is_err()
        );
        assert!(
            policy
                .check_async(ip("192.0.2.1"), &Method::GET, &HeaderMap::new())
                .await
                .is_err()
        );
        assert_eq!(auth.verifications(), 2);
    }

    #[tokio::test]
    async fn the_split_checks_agree_with_the_whole() {
        let policy = AccessPolicy::new(
            Some(IpList::parse_entries(["192.0.2.66"]).unwrap()),
            None,
            Some(vec![Method::GET]),
            Some(two_users()),
        );
        assert_eq!(
            policy.check_client(ip("192.0.2.66"), &Method::GET),
            Err(Denial::Forbidden)
        );
        assert!(policy.check_client(ip("192.0.2.1"), &Method::PUT).is_err());
        assert_eq!(policy.check_client(ip("192.0.2.1"), &Method::GET), Ok(()));
        assert!(policy.authenticate(&HeaderMap::new()).await.is_err());
        assert_eq!(
            policy.authenticate(&basic("alice", "wonderland")).await,
            Ok(())
        );
        assert_eq!(
            AccessPolicy::default()
                .authenticate(&HeaderMap::new())
                .await,
            Ok(())
        );
    }

    #[test]
    fn malformed_authorization_headers_are_refused_without_hashing() {
        let auth = two_users();
        let token = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
        assert_eq!(
            auth.check(&authorization(&format!("basic  {token}"))),
            Ok(())
        );
        let unpadded = token.trim_end_matches('=');
        let before = auth.verifications();
        for value in [
            "Basic".to_owned(),
            "Basic ".to_owned(),
            format!("Bearer {token}"),
            format!("Basic {token} extra"),
            format!("Basic {token}!"),
            format!("Basic\t{token}"),
            format!("Basic {unpadded}x"),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no colon")
            ),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:wonder\nland")
            ),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b"alice:\xff\xfe")
            ),
            format!("Basic {}", "A".repeat(MAX_AUTHORIZATION)),
        ] {
            let denial = auth.check(&authorization(&value)).unwrap_err();
            assert_eq!(denial.status(), StatusCode::UNAUTHORIZED, "{value}");
        }
        // Two Authorization headers are ambiguous.
        let mut two = basic("alice", "wonderland");
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert!(auth.check(&two).is_err());
        assert_eq!(auth.verifications(), before, "no hash for malformed input");
    }

    #[test]
    fn weak_and_unknown_schemes_are_refused_naming_the_line() {
        for (hash, words) in [
            ("$apr1$abc$0123456789abcdefghijkl", "MD5 ($apr1$)"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("$1$salt$hash", "MD5-crypt"),
            ("$6$salt$hash", "SHA-crypt"),
            ("secret", "plain-text"),
            ("", "plain-text"),
            (
                "$2x$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
                "buggy",
            ),
            ("$2y$04$short", "malformed bcrypt"),
            (
                "$2y$99$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
                "cost 04-31",
            ),
            (
                "$argon2d$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
                "argon2d",
            ),
            ("$argon2id$nonsense", "malformed Argon2"),
            ("$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA", "unknown hash scheme"),
        ] {
            let text = format!("# admins\nok:{}\nweak:{hash}\n", bcrypt_hash("x"));
            let error = BasicAuth::from_htpasswd("users.htpasswd", &text, "r").unwrap_err();
            assert!(
                error.starts_with("users.htpasswd:3: user \"weak\": "),
                "{error}"
            );
            assert!(error.contains(words), "{hash}: {error}");
        }
    }

    #[test]
    fn htpasswd_files_must_be_well_formed() {
        let hash = bcrypt_hash("x");
        for (text, words) in [
            ("", "no users"),
            ("# only a comment\n", "no users"),
            ("alice\n", ":1: expected user:hash"),
            (&format!(":{hash}\n") as &str, "user name is empty"),
            (
                &format!("a:{hash}\na:{hash}\n"),
                ":2: user \"a\" appears twice",
            ),
        ] {
            let error = BasicAuth::from_htpasswd("f", text, "r").unwrap_err();
            assert!(error.contains(words), "{text:?}: {error}");
        }
        assert!(BasicAuth::from_htpasswd("f", &format!("a:{hash}\n"), "caf\u{e9}").is_err());
        let quoted = BasicAuth::from_htpasswd("f", &format!("a:{hash}\r\n"), "say \"hi\"").unwrap();
        assert_eq!(
            challenge_of(quoted.check(&HeaderMap::new()).unwrap_err()),
            "Basic realm=\"say \\\"hi\\\"\", charset=\"UTF-8\""
        );
        let missing = BasicAuthSettings {
            realm: "r".to_owned(),
            htpasswd: "/nonexistent/htpasswd".to_owned(),
        };
        assert!(
            BasicAuth::load(&missing)
                .unwrap_err()
                .contains("cannot read htpasswd file /nonexistent/htpasswd")
        );
    }

    /// Random policies and requests against a model of the checks (deny and allow lists as
    /// address masks, methods with `GET` serving `HEAD`), and random `Authorization` values
    /// against what RFC 7617 allows: the credentials of a well-formed one read back, and
    /// nothing but the canonical encoding of some credentials is read at all.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        /// A list entry as the model sees it: network address and prefix length, in IPv4 or
        /// IPv6.
        #[derive(Debug, Clone, Copy)]
        enum Net {
            V4(u32, u8),
            V6(u128, u8),
        }

        fn mask32(prefix: u8) -> u32 {
            u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
        }

        fn mask128(prefix: u8) -> u128 {
            u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
        }

        /// Membership by masking; IPv4-mapped addresses count as the IPv4 address they map.
        fn model_contains(nets: &[Net], ip: IpAddr) -> bool {
            nets.iter().any(|&net| match (net, ip.to_canonical()) {
                (Net::V4(n, p), IpAddr::V4(a)) => u32::from(a) & mask32(p) == n,
                (Net::V6(n, p), IpAddr::V6(a)) => u128::from(a) & mask128(p) == n,
                _ => false,
            })
        }

        /// Addresses near a few bases, so that networks and clients meet often.
        fn near(bits: u32, base: u128, noise: u128) -> u128 {
            base ^ noise.checked_shr(128 - bits).unwrap_or(0)
        }

        fn net() -> impl Strategy<Value = Net> {
            let v4_bases = prop::sample::select(vec![0x0a00_0000u32, 0xc000_0200, 0xcb00_7100]);
            let v6_bases = prop::sample::select(vec![0x2001_0db8u128 << 96, 1]);
            prop_oneof![
                (v4_bases, any::<u32>(), 0..=32u8).prop_map(|(base, noise, p)| {
                    let address = base ^ (noise & !mask32(p.saturating_sub(4)));
                    Net::V4(address & mask32(p), p)
                }),
                (v6_bases, any::<u128>(), 0..=128u8).prop_map(|(base, noise, p)| {
                    let address = base ^ (noise & !mask128(p.saturating_sub(4)));
                    Net::V6(address & mask128(p), p)
                }),
            ]
        }

        fn client() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                (
                    prop::sample::select(vec![0x0a00_0000u32, 0xc000_0200, 0xcb00_7100]),
                    any::<u32>(),
                    0..=12u32
                )
                    .prop_map(|(base, noise, bits)| {
                        let address = base ^ noise.checked_shr(32 - bits).unwrap_or(0);
                        IpAddr::V4(address.into())
                    }),
                (
                    prop::sample::select(vec![0x0a00_0000u32, 0xc000_0200]),
                    any::<u8>()
                )
                    .prop_map(|(base, low)| {
                        IpAddr::V6(Ipv4Addr::from(base | u32::from(low)).to_ipv6_mapped())
                    }),
                (any::<u128>(), 0..=128u32).prop_map(|(noise, bits)| {
                    IpAddr::V6(Ipv6Addr::from(near(bits, 0x2001_0db8 << 96, noise)))
                }),
            ]
        }

        fn list(nets: &[Net]) -> IpList {
            IpList::parse_entries(nets.iter().map(|net| match *net {
                Net::V4(n, p) => format!("{}/{p}", Ipv4Addr::from(n)),
                Net::V6(n, p) => format!("{}/{p}", Ipv6Addr::from(n)),
            }))
            .expect("networks without stray bits")
        }

        fn method() -> impl Strategy<Value = Method> {
            prop::sample::select(vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
                Method::from_bytes(b"PURGE").expect("a token"),
            ])
        }

        /// Credentials text: a user without `:`, a password with anything; neither with
        /// control characters.
        fn user() -> impl Strategy<Value = String> {
            "[ !-9;-~é€日]{0,12}"
        }

        fn password() -> impl Strategy<Value = String> {
            "[ -~é€日]{0,16}"
        }

        fn scheme() -> impl Strategy<Value = String> {
            vec(any::<bool>(), 5).prop_map(|upper| {
                "basic"
                    .chars()
                    .zip(upper)
                    .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                    .collect()
            })
        }

        fn authorization(value: &[u8]) -> HeaderMap {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("a field value"),
            );
            headers
        }

        /// A byte a field value may hold: visible ASCII, space, tab and obs-text.
        fn field_byte() -> impl Strategy<Value = u8> {
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 2 => 0x80u8..=0xff]
        }

        /// The token of an `Authorization: Basic` value, correct or slightly off: random bytes
        /// (not always UTF-8, not always with a colon) encoded, then perhaps one change.
        fn token() -> impl Strategy<Value = String> {
            (vec(any::<u8>(), 0..24), 0..6u8, any::<usize>(), any::<u8>()).prop_map(
                |(bytes, change, at, byte)| {
                    let mut token = base64::engine::general_purpose::STANDARD.encode(bytes);
                    let at = if token.is_empty() {
                        0
                    } else {
                        at % token.len()
                    };
                    match change {
                        0 => {}
                        1 => token.push('='),
                        2 => {
                            token = token.trim_end_matches('=').to_owned();
                        }
                        3 if !token.is_empty() => {
                            token.remove(at);
                        }
                        4 => token.insert(at, char::from(0x20 + byte % 95)),
                        _ => token = token.to_ascii_lowercase(),
                    }
                    token
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Deny, then allow, then the method, as the model of each says.
            #[test]
            fn checks_decide_as_the_model_says(
                deny in proptest::option::of(vec(net(), 0..4)),
                allow in proptest::option::of(vec(net(), 0..4)),
                methods in proptest::option::of(vec(method(), 1..4)),
                client in client(),
                method in method(),
            ) {
                let policy = AccessPolicy::new(
                    deny.as_deref().map(list),
                    allow.as_deref().map(list),
                    methods.clone(),
                    None,
                );
                let admitted = !deny.as_deref().is_some_and(|d| model_contains(d, client))
                    && allow.as_deref().is_none_or(|a| model_contains(a, client));
                prop_assert_eq!(policy.admits(client), admitted);
                let served: Option<Vec<Method>> = methods.map(|mut ms| {
                    if ms.contains(&Method::GET) {
                        ms.push(Method::HEAD);
                    }
                    ms
                });
                let result = policy.check_client(client, &method);
                match result {
                    Err(Denial::Forbidden) => prop_assert!(!admitted),
                    Err(Denial::MethodNotAllowed { allow }) => {
                        prop_assert!(admitted);
                        let served = served.unwrap_or_default();
                        prop_assert!(!served.contains(&method));
                        // `Allow` lists every method served, once.
                        let listed: Vec<&str> = allow.to_str().unwrap_or("").split(", ").collect();
                        let mut unique = listed.clone();
                        unique.sort_unstable();
                        unique.dedup();
                        prop_assert_eq!(unique.len(), listed.len(), "{:?}", allow);
                        for m in &served {
                            prop_assert!(listed.contains(&m.as_str()), "{:?} {:?}", m, allow);
                        }
                        prop_assert!(listed.iter().all(|l| served.iter().any(|m| m.as_str() == *l)));
                    }
                    Err(Denial::Unauthorized { .. }) => prop_assert!(false, "no basic auth here"),
                    Ok(()) => {
                        prop_assert!(admitted);
                        prop_assert!(served.is_none_or(|s| s.contains(&method)));
                    }
                }
            }

            #[test]
            fn well_formed_credentials_read_back(
                user in user(),
                password in password(),
                scheme in scheme(),
                spaces in 1..4usize,
            ) {
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                let value = format!("{scheme}{}{token}", " ".repeat(spaces));
                let read = basic_credentials(&authorization(value.as_bytes()));
                prop_assert_eq!(
                    read.map(|c| (c.user, c.password)),
                    Some((user, password)),
                    "{}", value
                );
            }

            /// Only one spelling of any credentials is read: the canonical, padded encoding of
            /// `user:password` after `Basic` and spaces.
            #[test]
            fn only_canonical_credentials_are_read(
                scheme in prop_oneof![scheme(), Just("Bearer".to_owned()), Just("Basic\t".to_owned())],
                spaces in 0..3usize,
                token in token(),
            ) {
                let value = format!("{scheme}{}{token}", " ".repeat(spaces));
                if let Some(read) = basic_credentials(&authorization(value.as_bytes())) {
                    prop_assert!(scheme.eq_ignore_ascii_case("basic") && spaces > 0, "{}", value);
                    prop_assert!(!read.user.contains(':'));
                    let control = read.user.chars().chain(read.password.chars()).any(char::is_control);
                    prop_assert!(!control, "{}", value);
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", read.user, read.password));
                    prop_assert_eq!(encoded, token, "{}", value);
                }
            }

            #[test]
            fn any_authorization_value_gets_an_answer(
                prefix in prop_oneof![Just(&b""[..]), Just(&b"Basic "[..]), Just(&b"basic   "[..])],
                rest in vec(field_byte(), 0..64),
            ) {
                let mut value = prefix.to_vec();
                value.extend_from_slice(&rest);
                if let Some(read) = basic_credentials(&authorization(&value)) {
                    prop_assert!(!read.user.contains(':'));
                }
            }
        }
    }
}
