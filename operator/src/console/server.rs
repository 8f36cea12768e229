//! The console's HTTP server: listener and TLS, routing, the checks every request passes
//! (session, sign-in, CSRF), and how replies become responses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use cellplane_workflows::journal::Journal;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auth::{self, Access, Session, Sessions, Viewer};
use super::html::{self, Chrome};
use super::{ConsoleError, StartError, assets, live, pages};

/// Largest request body read (a form with a CA bundle of 64 KiB fits).
const MAX_BODY: usize = 256 * 1024;

pub type Body = BoxBody<Bytes, Infallible>;

/// Where the console's certificate comes from.
#[derive(Clone, Debug)]
pub enum Tls {
    /// Plain HTTP: only allowed on loopback; elsewhere a self-signed certificate is made.
    Off,
    /// A certificate chain and its key, PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate made at start (rcgen), flagged on every page.
    SelfSigned,
}

/// The console: how it reaches the API server, the journal, and its sessions.
pub struct Console {
    pub access: Access,
    pub journal: Option<Arc<dyn Journal>>,
    pub sessions: Sessions,
    addr: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    self_signed: bool,
}

impl Console {
    pub fn new(
        addr: SocketAddr,
        access: Access,
        journal: Option<Arc<dyn Journal>>,
        tls: Tls,
    ) -> Result<Self, StartError> {
        let tls = match tls {
            Tls::Off if !addr.ip().is_loopback() => {
                tracing::warn!(%addr, "the console is not on loopback and has no certificate: serving a self-signed one");
                Tls::SelfSigned
            }
            tls => tls,
        };
        let self_signed = matches!(tls, Tls::SelfSigned);
        let acceptor = acceptor(&tls, addr)?;
        Ok(Console { access, journal, sessions: Sessions::default(), addr, acceptor, self_signed })
    }

    /// The URL a person opens.
    pub fn url(&self) -> String {
        let scheme = if self.acceptor.is_some() { "https" } else { "http" };
        let host = if self.addr.ip().is_unspecified() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        format!("{scheme}://{host}/")
    }

    fn secure(&self) -> bool {
        self.acceptor.is_some()
    }
}

fn acceptor(tls: &Tls, addr: SocketAddr) -> Result<Option<TlsAcceptor>, StartError> {
    let (chain, key) = match tls {
        Tls::Off => return Ok(None),
        Tls::Files { cert, key } => (read(cert)?, read(key)?),
        Tls::SelfSigned => {
            let names = vec!["localhost".to_string(), addr.ip().to_string()];
            let certified = rcgen::generate_simple_self_signed(names).map_err(|e| StartError::Tls(e.to_string()))?;
            (certified.cert.pem().into_bytes(), certified.signing_key.serialize_pem().into_bytes())
        }
    };
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Tls(format!("certificate: {e}")))?;
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).map_err(|e| StartError::Tls(format!("key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn read(path: &PathBuf) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::ReadTls { path: path.clone(), source })
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, console: Arc<Console>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "console: accept failed");
                    continue;
                }
            },
        };
        let acceptor = console.acceptor.clone();
        let console = console.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let console = console.clone();
                let span = tracing::info_span!("console", method = %request.method(), path = %request.uri().path());
                async move { Ok::<_, Infallible>(handle(&console, request).await) }.instrument(span)
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                    Err(e) => {
                        tracing::debug!(error = %e, %peer, "console: TLS handshake failed");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "console connection ended with an error");
            }
        });
    }
}

/// A parsed request, as the pages see it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
    /// The browser asks only for the live region (after a server-sent event).
    pub fragment: bool,
}

impl Request {
    /// A query parameter, "" when absent.
    pub fn query(&self, name: &str) -> &str {
        self.query.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    /// A form field, "" when absent.
    pub fn field(&self, name: &str) -> &str {
        self.form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    /// The path's segments after `prefix` (`/namespaces/a/b` after `/namespaces` is `[a, b]`).
    pub fn segments(&self, prefix: &str) -> Vec<String> {
        self.path
            .strip_prefix(prefix)
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect()
    }
}

fn percent_decode(segment: &str) -> String {
    form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// What a page hands back.
pub enum Reply {
    Page(Page),
    Redirect(String),
    Events(Body),
}

/// A rendered page: a static part, an optional live region (refreshed on server-sent events
/// from `source`) and what follows it.
pub struct Page {
    pub title: String,
    /// The nav entry this page belongs to.
    pub area: &'static str,
    pub status: StatusCode,
    pub before: String,
    pub live: Option<(String, String)>,
    pub after: String,
}

impl Page {
    pub fn new(title: impl Into<String>, area: &'static str) -> Self {
        Page {
            title: title.into(),
            area,
            status: StatusCode::OK,
            before: String::new(),
            live: None,
            after: String::new(),
        }
    }
}

/// What every page is rendered with.
pub struct Ctx<'a> {
    pub console: &'a Console,
    pub session: &'a Session,
    pub viewer: &'a Arc<Viewer>,
    pub request: &'a Request,
}

impl Ctx<'_> {
    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }

    pub fn client(&self) -> kube::Client {
        self.viewer.client.clone()
    }

    /// Redirects to `to` with a message on the next page.
    pub fn done(&self, to: impl Into<String>, message: impl Into<String>) -> Reply {
        self.session.flash(false, message);
        Reply::Redirect(to.into())
    }

    /// Redirects to `to` with an error on the next page (the API's own message for API errors).
    pub fn failed(&self, to: impl Into<String>, error: &ConsoleError) -> Reply {
        self.session.flash(true, error.to_string());
        Reply::Redirect(to.into())
    }
}

async fn handle(console: &Console, request: http::Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let session = session_of(console, &parts.headers);
    let form = match read_form(&parts, body).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let request = Request {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(parse_pairs).unwrap_or_default(),
        fragment: parts.headers.get("x-console-fragment").is_some(),
        form,
    };
    // A first visit to the sandbox gets a session at once (there is nobody to sign in).
    let fresh = match (&session, &console.access) {
        (None, Access::Trusted { client, user }) if request.method == Method::GET && is_page(&request.path) => {
            let viewer = Arc::new(Viewer::trusted(client.clone(), user.clone()));
            Some(console.sessions.create(Some(viewer), None))
        }
        _ => None,
    };
    let mut response = match session.as_ref().or(fresh.as_ref()) {
        Some(session) => respond(console, session, &request, &parts.headers).await,
        None if request.method == Method::GET => public(console, &request),
        None => plain(StatusCode::FORBIDDEN, "refused: no session (reload the page and try again)"),
    };
    if let Some(fresh) = &fresh {
        set_cookie(&mut response, fresh, console.secure());
    }
    secure_headers(&mut response);
    response
}

fn session_of(console: &Console, headers: &http::HeaderMap) -> Option<Arc<Session>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(auth::cookie_value)
        .and_then(|id| console.sessions.find(id))
}

/// A request for a page (not an asset, the favicon, health or an event stream): only these
/// start a session, so a browser's parallel requests for the rest never replace its cookie.
fn is_page(path: &str) -> bool {
    !(path.starts_with("/assets/") || matches!(path, "/favicon.ico" | "/healthz" | "/live"))
}

/// Answers for a browser without a session: assets and health, else a session is made.
fn public(console: &Console, request: &Request) -> Response<Body> {
    match request.path.as_str() {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/favicon.ico" => plain(StatusCode::NO_CONTENT, ""),
        path if path.starts_with("/assets/") => assets::serve(path),
        "/login" => {
            let session = console.sessions.create(None, None);
            let mut response = html_response(StatusCode::OK, login_page(console, &session, None));
            set_cookie(&mut response, &session, console.secure());
            response
        }
        _ => redirect("/login"),
    }
}

async fn respond(
    console: &Console,
    session: &Arc<Session>,
    request: &Request,
    headers: &http::HeaderMap,
) -> Response<Body> {
    if request.method == Method::POST {
        let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let presented = token.or_else(|| request.form.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str()));
        if cross_site(headers) || !session.csrf_matches(presented) {
            tracing::warn!(
                path = %request.path,
                cross_site = cross_site(headers),
                token = presented.is_some(),
                "refused a POST without this session's CSRF token"
            );
            return plain(StatusCode::FORBIDDEN, "refused: the request did not carry this session's CSRF token");
        }
    }
    match (&request.method, request.path.as_str()) {
        (_, "/healthz") => return plain(StatusCode::OK, "ok\n"),
        (_, "/favicon.ico") => return plain(StatusCode::NO_CONTENT, ""),
        (&Method::GET, path) if path.starts_with("/assets/") => return assets::serve(path),
        (&Method::GET, "/login") => return html_response(StatusCode::OK, login_page(console, session, None)),
        (&Method::POST, "/login") => return sign_in(console, session, request).await,
        (&Method::POST, "/logout") => {
            console.sessions.end(&session.id);
            let mut response = redirect("/login");
            let expired = format!("{}; Max-Age=0", auth::cookie("", console.secure()));
            if let Ok(value) = HeaderValue::from_str(&expired) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            return response;
        }
        _ => {}
    }
    let Some(viewer) = session.viewer() else { return redirect("/login") };
    let ctx = Ctx { console, session, viewer, request };
    let reply = match route(&ctx).await {
        Ok(reply) => reply,
        Err(e) => Reply::Page(error_page(&e)),
    };
    match reply {
        Reply::Redirect(to) => redirect(&to),
        Reply::Events(body) => events_response(body),
        Reply::Page(page) if request.fragment => {
            html_response(page.status, page.live.map(|(_, body)| body).unwrap_or_default())
        }
        Reply::Page(page) => {
            let chrome = Chrome {
                title: &page.title,
                user: matches!(console.access, Access::Tokens { .. }).then_some(viewer.user.as_str()),
                csrf: &session.csrf,
                current: page.area,
                self_signed: console.self_signed,
                flash: session.take_flash(),
            };
            let live = page.live.as_ref().map(|(source, body)| html::live_region(source, body)).unwrap_or_default();
            let body = format!("{}{live}{}", page.before, page.after);
            html_response(page.status, html::layout(&chrome, &body))
        }
    }
}

async fn route(ctx: &Ctx<'_>) -> Result<Reply, ConsoleError> {
    let path = ctx.request.path.as_str();
    let get = ctx.request.method == Method::GET;
    match path {
        "/" => Ok(Reply::Redirect("/namespaces".into())),
        "/live" if get => live::events(ctx),
        p if p == "/namespaces" || p.starts_with("/namespaces/") => pages::namespaces::route(ctx).await,
        p if p == "/cells" || p.starts_with("/cells/") => pages::cells::route(ctx).await,
        p if p == "/rings" || p.starts_with("/rings/") => pages::rings::route(ctx).await,
        p if p == "/workflows" || p.starts_with("/workflows/") => pages::workflows::route(ctx).await,
        _ => Err(ConsoleError::NotFound(format!("no page at {path}"))),
    }
}

/// A request another site made the browser send.
fn cross_site(headers: &http::HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, rest)| rest) != Some(host),
        _ => false,
    }
}

async fn sign_in(console: &Console, session: &Arc<Session>, request: &Request) -> Response<Body> {
    let Access::Tokens { base } = &console.access else { return redirect("/") };
    match Viewer::sign_in(base, request.field("token")).await {
        Ok(viewer) => {
            tracing::info!(user = %viewer.user, "signed in");
            let fresh = console.sessions.create(Some(Arc::new(viewer)), Some(&session.id));
            let mut response = redirect("/namespaces");
            set_cookie(&mut response, &fresh, console.secure());
            response
        }
        Err(e) => html_response(e.status(), login_page(console, session, Some(&e.to_string()))),
    }
}

fn login_page(console: &Console, session: &Session, error: Option<&str>) -> String {
    let error =
        error.map(|e| format!(r#"<p class="banner error" role="alert">{}</p>"#, html::esc(e))).unwrap_or_default();
    let chrome = Chrome {
        title: "Sign in",
        user: None,
        csrf: &session.csrf,
        current: "",
        self_signed: console.self_signed,
        flash: None,
    };
    let body = format!(
        r#"{error}<form method="post" action="/login" class="card narrow">{csrf}
<p>The console acts as you: paste a Kubernetes bearer token the API server accepts (a ServiceAccount token, <code>kubectl create token NAME</code>, or an OIDC ID token). Kubernetes RBAC decides what you may see and do.</p>
<label for="token">Bearer token</label><input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button></form>"#,
        csrf = html::csrf_field(&session.csrf)
    );
    html::layout(&chrome, &body)
}

fn error_page(error: &ConsoleError) -> Page {
    let mut page = Page::new(error_title(error.status()), "");
    page.status = error.status();
    page.before = format!(r#"<p class="banner error" role="alert">{}</p>"#, html::esc(&error.to_string()));
    page
}

fn error_title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        _ => "Something went wrong",
    }
}

async fn read_form(parts: &http::request::Parts, body: Incoming) -> Result<Vec<(String, String)>, Response<Body>> {
    if parts.method != Method::POST {
        return Ok(Vec::new());
    }
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(plain(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")),
    };
    let form = std::str::from_utf8(&bytes).map(parse_pairs).unwrap_or_default();
    Ok(form)
}

fn parse_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn set_cookie(response: &mut Response<Body>, session: &Session, secure: bool) {
    if let Ok(value) = HeaderValue::from_str(&auth::cookie(&session.id, secure)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Headers on every response: no framing, no sniffing, scripts and styles only from here.
fn secure_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not no-referrer: under it Chrome sends `Origin: null` with same-origin form posts.
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", full(text.to_string()))
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", full(html))
}

fn events_response(body: Body) -> Response<Body> {
    with_type(StatusCode::OK, "text/event-stream", body)
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = with_type(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", full(Bytes::new()));
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn requests_from_other_sites_are_cross_site() {
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("origin", "https://evil.example"), ("host", "console:8443")])));
        assert!(!cross_site(&headers(&[("origin", "https://console:8443"), ("host", "console:8443")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
    }

    #[test]
    fn path_segments_are_decoded() {
        let request = Request {
            method: Method::GET,
            path: "/workflows/ns%2Fa".into(),
            query: vec![],
            form: vec![],
            fragment: false,
        };
        assert_eq!(request.segments("/workflows"), ["ns/a"]);
    }
}
