//! Who the user is and what they may do.
//!
//! - **Access.** In the sandbox ([`Access::Trusted`]) the in-memory API has no users: everyone
//!   acts through its one client. Everywhere else ([`Access::Tokens`]) a person signs in with
//!   their own bearer token (a ServiceAccount token or an OIDC token the API server accepts);
//!   the console keeps it server-side in their session and sends it with every request it makes
//!   for them, so Kubernetes RBAC decides. The operator's own credentials are never used.
//! - **Sessions.** A random id in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` under TLS);
//!   the id changes at sign-in; idle sessions expire after [`IDLE`].
//! - **CSRF.** Every POST carries the session's token (a form field or the `X-CSRF-Token`
//!   header), compared in constant time; cross-site requests (`Sec-Fetch-Site`, `Origin`) are
//!   refused as well.
//! - **Permissions.** [`Viewer::can`] asks the API server (SelfSubjectAccessReview) before a
//!   page shows a button, so a user who may only read sees none that would fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use super::ConsoleError;

/// How long an unused session lives.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// How long a permission answer is reused.
const DECISION_TTL: Duration = Duration::from_secs(30);
/// Most sessions kept at once; the oldest idle ones go first.
const MAX_SESSIONS: usize = 10_000;
/// Name of the session cookie.
pub const COOKIE: &str = "cellplane_console";

/// Whose credentials the console's Kubernetes requests carry.
#[derive(Clone)]
pub enum Access {
    /// Everyone acts through this client as `user` (the sandbox's in-memory API, which has no
    /// users and no RBAC).
    Trusted { client: Client, user: String },
    /// Each person signs in with a bearer token; this is the API server to send it to (its URL
    /// and CA; any credentials it held are dropped).
    Tokens { base: Box<kube::Config> },
}

impl Access {
    /// Users sign in with a token of their own, with no credentials of the console's kept.
    pub fn tokens(mut base: kube::Config) -> Self {
        base.auth_info = kube::config::AuthInfo::default();
        Access::Tokens { base: Box::new(base) }
    }
}

/// The cellplane kinds, as SelfSubjectAccessReview names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Cell,
    Namespace,
    Ring,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Cell => "cells",
            Kind::Namespace => "namespaces",
            Kind::Ring => "deploymentrings",
        }
    }
}

/// The person behind a session: their name, a client that carries their credentials, and the
/// permission answers of the last half minute.
pub struct Viewer {
    pub user: String,
    pub client: Client,
    trusted: bool,
    decisions: Mutex<HashMap<String, (bool, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Viewer {
    pub fn trusted(client: Client, user: String) -> Self {
        Viewer { user, client, trusted: true, decisions: Mutex::default() }
    }

    /// Signs a person in with their token: the API server must accept it.
    pub async fn sign_in(base: &kube::Config, token: &str) -> Result<Self, ConsoleError> {
        let token = token.trim();
        if token.is_empty() || token.len() > 16 * 1024 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConsoleError::BadRequest("paste a bearer token (one line, no spaces)".into()));
        }
        let mut config = base.clone();
        config.auth_info = kube::config::AuthInfo { token: Some(token.to_string().into()), ..Default::default() };
        let client = Client::try_from(config)?;
        let viewer = Viewer { user: String::new(), client, trusted: false, decisions: Mutex::default() };
        // Any authenticated user may review their own access; a refused token fails here.
        match viewer.review(None, "get", Kind::Cell, None).await {
            Ok(_) => {}
            Err(ConsoleError::Kube(e)) if crate::kube_error::code(&e) == Some(401) => {
                return Err(ConsoleError::Forbidden("the API server did not accept this token".into()));
            }
            Err(e) => return Err(e),
        }
        let user = who_am_i(&viewer.client, token).await;
        Ok(Viewer { user, ..viewer })
    }

    /// Whether the user may `verb` objects of `kind` (in `namespace`, named `name` when given).
    /// A failed review counts as "no": a button too few beats one that fails.
    pub async fn can(&self, verb: &str, kind: Kind, namespace: Option<&str>) -> bool {
        self.can_named(verb, kind, namespace, None).await
    }

    /// [`Viewer::can`] for one object.
    pub async fn can_named(&self, verb: &str, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> bool {
        if self.trusted {
            return true;
        }
        let key = format!("{verb} {} {} {}", kind.plural(), namespace.unwrap_or("*"), name.unwrap_or("*"));
        if let Some((allowed, at)) = lock(&self.decisions).get(&key)
            && at.elapsed() < DECISION_TTL
        {
            return *allowed;
        }
        let allowed = match self.review(name, verb, kind, namespace).await {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::warn!(error = %e, %key, "access review failed; not offering the action");
                false
            }
        };
        lock(&self.decisions).insert(key, (allowed, Instant::now()));
        allowed
    }

    async fn review(
        &self,
        name: Option<&str>,
        verb: &str,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<bool, ConsoleError> {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(crate::api::GROUP.into()),
                    resource: Some(kind.plural().into()),
                    verb: Some(verb.into()),
                    namespace: namespace.map(str::to_string),
                    name: name.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer =
            Api::<SelfSubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

/// The user's name as the API server knows it: SelfSubjectReview (Kubernetes 1.28 and later),
/// else the subject of a JWT token (ServiceAccount and OIDC tokens), else "token user".
async fn who_am_i(client: &Client, token: &str) -> String {
    let api = Api::<SelfSubjectReview>::all(client.clone());
    if let Ok(review) = api.create(&PostParams::default(), &SelfSubjectReview::default()).await
        && let Some(name) = review.status.and_then(|s| s.user_info).and_then(|u| u.username)
    {
        return name;
    }
    jwt_subject(token).unwrap_or_else(|| "token user".into())
}

/// The `sub` claim of a JWT, unverified: only for display and the audit trail, since the API
/// server verifies the token on every request anyway.
pub fn jwt_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_string)
}

/// One browser's session.
pub struct Session {
    pub id: String,
    pub csrf: String,
    viewer: Option<Arc<Viewer>>,
    last_seen: Mutex<Instant>,
    flash: Mutex<Option<(bool, String)>>,
}

impl Session {
    fn new(viewer: Option<Arc<Viewer>>) -> Self {
        Session {
            id: random_token(),
            csrf: random_token(),
            viewer,
            last_seen: Mutex::new(Instant::now()),
            flash: Mutex::default(),
        }
    }

    pub fn viewer(&self) -> Option<&Arc<Viewer>> {
        self.viewer.as_ref()
    }

    /// Whether `presented` is this session's CSRF token (constant-time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else { return false };
        let (a, b) = (presented.as_bytes(), self.csrf.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Keeps a message for the next page this session sees.
    pub fn flash(&self, error: bool, text: impl Into<String>) {
        *lock(&self.flash) = Some((error, text.into()));
    }

    pub fn take_flash(&self) -> Option<(bool, String)> {
        lock(&self.flash).take()
    }
}

/// 32 random bytes, hex: session ids and CSRF tokens.
fn random_token() -> String {
    rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every session of this console process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// The session a cookie names, if it is alive.
    pub fn find(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = lock(&self.map);
        let session = map.get(id)?.clone();
        let mut seen = lock(&session.last_seen);
        if seen.elapsed() > IDLE {
            drop(seen);
            map.remove(id);
            return None;
        }
        *seen = Instant::now();
        drop(seen);
        Some(session)
    }

    /// A new session (signed in when `viewer` is given); `replaces` is ended.
    pub fn create(&self, viewer: Option<Arc<Viewer>>, replaces: Option<&str>) -> Arc<Session> {
        let session = Arc::new(Session::new(viewer));
        let mut map = lock(&self.map);
        if let Some(old) = replaces {
            map.remove(old);
        }
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| lock(&s.last_seen).elapsed() < IDLE);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| *lock(&s.last_seen)).map(|(id, _)| id.clone())
        {
            map.remove(&oldest);
        }
        map.insert(session.id.clone(), session.clone());
        session
    }

    pub fn end(&self, id: &str) {
        lock(&self.map).remove(id);
    }
}

/// The `Set-Cookie` value for a session (`secure` under TLS).
pub fn cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// The session id a `Cookie` header carries.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').map(str::trim).find_map(|pair| pair.strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let session = Session::new(None);
        assert!(session.csrf_matches(Some(&session.csrf.clone())));
        assert!(!session.csrf_matches(Some("x")));
        assert!(!session.csrf_matches(None));
        assert!(!session.csrf_matches(Some(&session.csrf[1..])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(cookie_value("a=1; cellplane_console=abc; b=2"), Some("abc"));
        assert_eq!(cookie_value("cellplane_consolex=abc"), None);
        assert!(cookie("id", true).contains("HttpOnly; SameSite=Strict; Secure"));
    }

    #[test]
    fn a_service_account_token_names_its_subject() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"system:serviceaccount:a:b"}"#);
        assert_eq!(jwt_subject(&format!("h.{claims}.s")).as_deref(), Some("system:serviceaccount:a:b"));
        assert_eq!(jwt_subject("static-token"), None);
    }
}
