//! The portal's HTTP side: the listener, the routing table, sign-in and sign-out, sessions and CSRF
//! checks, and the headers every answer carries.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};

use super::{
    Portal, access, api_page, backstage, catalog, consumers,
    html::{self, CSP, CSS, CSS_PATH, esc, page},
    now, people,
    session::{self, NoSession, Session},
    try_it,
    usage::{self, Owner},
};

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 64 << 10;

/// An answer.
pub type Reply = Response<Full<Bytes>>;

/// A request's decoded form fields or query parameters (the first value of each name).
pub type Fields = HashMap<String, String>;

/// Serves the portal until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    portal: Arc<Portal>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopping(&mut shutdown) => return,
        };
        let portal = portal.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let portal = portal.clone();
                async move { Ok::<_, Infallible>(secure(handle(&portal, req).await)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// The headers every answer carries.
fn secure(mut reply: Reply) -> Reply {
    let h = reply.headers_mut();
    let mut set = |name: &'static str, value: &'static str| {
        h.insert(name, header::HeaderValue::from_static(value));
    };
    set("content-security-policy", CSP);
    set("x-content-type-options", "nosniff");
    // Not `no-referrer`: under it browsers send `Origin: null` with forms, and the origin check
    // below could not tell the portal's own forms from anyone's. Nothing leaves for another site.
    set("referrer-policy", "same-origin");
    set("x-frame-options", "DENY");
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    reply
}

async fn handle(portal: &Portal, req: Request<Incoming>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = fields(req.uri().query().unwrap_or("").as_bytes());
    let secure_cookie = portal.secure_cookie
        || req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if method == Method::POST && !same_origin(req.headers()) {
        // Browsers name the page a form was sent from; one from another site is refused, which
        // covers the sign-in form too (it has no session, so no CSRF token, yet).
        return text(
            StatusCode::FORBIDDEN,
            "refused: the form was sent from another site\n",
        );
    }
    match (&method, path.as_str()) {
        (&Method::GET, CSS_PATH) => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
                .header(header::CACHE_CONTROL, "max-age=300")
                .body(Full::new(Bytes::from_static(CSS.as_bytes())))
                .expect("valid response");
        }
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/signin") => {
            let why = match query.get("why").map(String::as_str) {
                Some("expired") => Some("Your session has expired: sign in again."),
                Some("invalid") => Some("Your session was not valid: sign in again."),
                _ => None,
            };
            return signin_page(why, StatusCode::OK);
        }
        (&Method::POST, "/signin") => {
            let form = match read_form(req).await {
                Ok(f) => f,
                Err(reply) => return reply,
            };
            return signin(portal, &form, secure_cookie).await;
        }
        _ => {}
    }
    let cookies = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let session = match Session::from_cookies(&portal.sealer, cookies.as_deref(), now()) {
        Ok(s) => s,
        Err(why) => {
            // The Backstage export may also be fetched with a bearer token (a catalog processor).
            if method == Method::GET && path == backstage::PATH {
                return backstage::serve_with_bearer(portal, &req).await;
            }
            return to_signin(why, secure_cookie);
        }
    };
    let client = match people::client_as(&portal.config, &session.token) {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "building a client for a person failed");
            return text(
                StatusCode::BAD_GATEWAY,
                "the portal cannot reach the API server\n",
            );
        }
    };
    let mut who = Who {
        session,
        rights: people::Rights::new(client.clone()),
        client,
    };
    if method == Method::POST {
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        if !who
            .session
            .csrf_matches(form.get("csrf").map(String::as_str))
        {
            return html_reply(
                StatusCode::FORBIDDEN,
                page(
                    "Refused",
                    Some(who.viewer()),
                    "<h1>Refused</h1><p class=\"notice error\">The form did not carry this session's \
                     CSRF token. Go back, reload the page and send it again.</p>",
                ),
            );
        }
        return match path.as_str() {
            "/signout" => Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, "/signin")
                .header(header::SET_COOKIE, session::clear_cookie(secure_cookie))
                .body(Full::new(Bytes::new()))
                .expect("valid response"),
            _ => match segments(&path)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["apis", ns, name, "subscribe"] => {
                    access::subscribe(portal, &mut who, ns, name, &form).await
                }
                ["apis", ns, name, "try"] => try_it::send(portal, &mut who, ns, name, &form).await,
                ["approvals", ns, name] => access::decide(portal, &mut who, ns, name, &form).await,
                ["consumers", ns, name, "keys"] => consumers::add(&mut who, ns, name, &form).await,
                ["consumers", ns, name, "keys", key, "rotate"] => {
                    consumers::rotate(portal, &mut who, ns, name, key).await
                }
                _ => not_found(&who),
            },
        };
    }
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path.as_str() {
        "/" => catalog::page(portal, &mut who, &query).await,
        "/subscriptions" => access::mine(portal, &mut who).await,
        "/approvals" => access::approvals(portal, &mut who).await,
        "/usage" => usage::index(portal, &mut who).await,
        "/consumers" => consumers::page_of(portal, &mut who).await,
        backstage::PATH => backstage::serve(portal),
        _ => match segments(&path)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["apis", ns, name] => api_page::page(portal, &mut who, ns, name).await,
            ["usage", kind, ns, name] => match Owner::from_segment(kind) {
                Some(owner) if access::is_namespace(ns) && access::is_object_name(name) => {
                    usage::detail(&mut who, owner, ns, name).await
                }
                _ => not_found(&who),
            },
            _ => not_found(&who),
        },
    }
}

/// A signed-in person, for one request.
pub struct Who {
    /// Their session.
    pub session: Session,
    /// A client holding their token.
    pub client: kube::Client,
    /// Their rights, asked as needed.
    pub rights: people::Rights,
}

impl Who {
    /// For the page header.
    pub fn viewer(&self) -> html::Viewer<'_> {
        html::Viewer {
            user: &self.session.user,
            csrf: &self.session.csrf,
        }
    }
}

/// Whether a request's `Origin` (when the browser sent one) is the portal's own: scheme aside, its
/// host and port are those of the `Host` header.
fn same_origin(headers: &header::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The path's segments, percent-decoded.
fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Decodes `a=1&b=2` form or query text.
pub fn fields(bytes: &[u8]) -> Fields {
    let mut out = Fields::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

async fn read_form(req: Request<Incoming>) -> Result<Fields, Reply> {
    match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(body) => Ok(fields(&body.to_bytes())),
        Err(_) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is larger than 64 KiB\n",
        )),
    }
}

/// Back to the sign-in page; a cookie that failed is cleared.
fn to_signin(why: NoSession, secure_cookie: bool) -> Reply {
    let mut reply = Response::builder().status(StatusCode::SEE_OTHER).header(
        header::LOCATION,
        match why {
            NoSession::Absent => "/signin",
            NoSession::Expired => "/signin?why=expired",
            NoSession::Forged => "/signin?why=invalid",
        },
    );
    if why != NoSession::Absent {
        reply = reply.header(header::SET_COOKIE, session::clear_cookie(secure_cookie));
    }
    reply.body(Full::new(Bytes::new())).expect("valid response")
}

fn signin_page(error: Option<&str>, status: StatusCode) -> Reply {
    let notice = error
        .map(|e| format!("<p class=\"notice error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{notice}<div class=\"card\"><form method=\"post\" action=\"/signin\">\
         <label for=\"token\">Your Kubernetes bearer token (a ServiceAccount token, or the OIDC id \
         token your cluster accepts)</label>\
         <textarea id=\"token\" name=\"token\" autocomplete=\"off\" required></textarea>\
         <p><button type=\"submit\">Sign in</button></p></form>\
         <p class=\"muted\">The portal checks the token with the API server and then acts with it: \
         you see and do exactly what your Kubernetes rights allow.</p></div>"
    );
    html_reply(status, page("Sign in", None, &body))
}

async fn signin(portal: &Portal, form: &Fields, secure_cookie: bool) -> Reply {
    let token = form.get("token").map(|t| t.trim()).unwrap_or("");
    if token.is_empty() {
        return signin_page(Some("Paste a token to sign in."), StatusCode::BAD_REQUEST);
    }
    if token.len() > session::MAX_TOKEN_BYTES {
        return signin_page(
            Some("That token is too long to keep in a session cookie."),
            StatusCode::BAD_REQUEST,
        );
    }
    let user = match people::review(&portal.client, token).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return signin_page(
                Some("The API server does not accept that token."),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(error) => {
            tracing::warn!(%error, "TokenReview for a portal sign-in failed");
            return signin_page(
                Some("The API server could not check the token; try again."),
                StatusCode::BAD_GATEWAY,
            );
        }
    };
    let ttl = portal.session_ttl.as_secs().max(60);
    let session = Session::new(&portal.sealer, user, token.to_owned(), now(), ttl);
    tracing::info!(user = %session.user, "portal sign-in");
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/")
        .header(
            header::SET_COOKIE,
            session::set_cookie(&session.seal(&portal.sealer), ttl, secure_cookie),
        )
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// An HTML answer.
pub fn html_reply(status: StatusCode, body: String) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}

/// A JSON answer.
pub fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("valid response")
}

/// The page for anything not found (also for routes a person may not see, which must look the same).
pub fn not_found(who: &Who) -> Reply {
    html_reply(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            Some(who.viewer()),
            "<h1>Not found</h1><p>There is no such page, or you may not see it.</p>",
        ),
    )
}

/// A page answering a form: the API server's answer shown as it is.
pub fn outcome(who: &Who, title: &str, ok: bool, message: &str, back: &str) -> Reply {
    let body = format!(
        "<h1>{}</h1><p class=\"notice {}\">{}</p><p><a href=\"{}\">Back</a></p>",
        esc(title),
        if ok { "ok" } else { "error" },
        esc(message),
        esc(back)
    );
    html_reply(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        },
        page(title, Some(who.viewer()), &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_decoded_segments() {
        assert_eq!(segments("/apis/team-a/chat"), ["apis", "team-a", "chat"]);
        assert_eq!(segments("/apis/a%2Fb/c/"), ["apis", "a/b", "c"]);
    }

    #[test]
    fn only_forms_from_the_portal_itself_are_taken() {
        let headers = |origin: Option<&str>| {
            let mut h = header::HeaderMap::new();
            h.insert(header::HOST, "portal.example.com:8088".parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        assert!(same_origin(&headers(None)));
        assert!(same_origin(&headers(Some(
            "https://portal.example.com:8088"
        ))));
        assert!(!same_origin(&headers(Some("https://evil.example.com"))));
        assert!(!same_origin(&headers(Some("null"))));
        assert!(!same_origin(&headers(Some(
            "https://portal.example.com:8088.evil.example"
        ))));
    }

    #[test]
    fn the_first_value_of_a_field_wins() {
        let f = fields(b"a=1&b=x+y&a=2&c=%3Cs%3E");
        assert_eq!(f["a"], "1");
        assert_eq!(f["b"], "x y");
        assert_eq!(f["c"], "<s>");
    }
}
