//! The API page's try-it form: a chat call to the route with a key the person pastes.
//!
//! **Why the portal sends it.** The pages run no script and the CSP allows forms to post only to the
//! portal itself (`form-action 'self'`); a plain HTML form could not send JSON to the proxy anyway. So
//! the form posts to the portal, and the portal sends the call to the proxy's in-cluster address
//! (`--portal-try-it-url`, plain HTTP) and shows the answer as it came. The key goes to the proxy and
//! nowhere else: it is not stored, logged, or written back into any page (an answer that echoes it has
//! it masked). The URL is fixed by the flag and the route's prefix, never taken from the form.

use std::{fmt::Write as _, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tollgate_snapshot::Route;

use super::{
    Portal, catalog,
    html::{self, csrf_field, esc, url_part},
    http::{Fields, Reply, Who, html_reply, not_found},
};

/// The longest key accepted.
const MAX_KEY_BYTES: usize = 512;
/// The longest message accepted.
const MAX_MESSAGE_CHARS: usize = 4000;
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 256 << 10;
/// How long the whole call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the proxy answers inside the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// Reads `http://host[:port]`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.trim_end_matches('/').parse()?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "{url}: the try-it URL is the proxy's plain-HTTP address inside the cluster, http://host:port"
        );
        anyhow::ensure!(
            uri.path_and_query().is_none_or(|p| p.as_str() == "/"),
            "{url}: give the address only, without a path"
        );
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("{url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(80),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The form on an API page (or why there is none).
pub fn form(portal: &Portal, who: &Who, route: &Route) -> String {
    let mut out = String::from("<h2>Try it</h2>");
    if portal.try_it.is_none() {
        out.push_str(
            "<p class=\"muted\">Not enabled here: the portal's pages may not call another origin, \
             so the portal sends the call itself, to the proxy's in-cluster address \
             (<code>--portal-try-it-url</code>, chart <code>portal.tryItUrl</code>).</p>",
        );
        return out;
    }
    let options: String = route
        .models
        .iter()
        .map(|m| format!("<option>{}</option>", esc(&m.name)))
        .collect();
    let _ = write!(
        out,
        "<form class=\"card\" method=\"post\" action=\"/apis/{}/{}/try\">{}\
         <label for=\"try-key\">Your key (sent to the proxy for this one call; not kept)</label>\
         <input id=\"try-key\" name=\"key\" type=\"password\" autocomplete=\"off\" required maxlength=\"{MAX_KEY_BYTES}\">\
         <label for=\"try-model\">Model</label><select id=\"try-model\" name=\"model\">{options}</select>\
         <label for=\"try-message\">Message</label>\
         <textarea id=\"try-message\" name=\"message\" maxlength=\"{MAX_MESSAGE_CHARS}\">Hello!</textarea>\
         <p><button type=\"submit\">Send</button></p></form>",
        url_part(&route.id.namespace),
        url_part(&route.id.name),
        csrf_field(&who.session.csrf),
    );
    out
}

/// `POST /apis/<ns>/<name>/try`.
pub async fn send(portal: &Portal, who: &mut Who, ns: &str, name: &str, form: &Fields) -> Reply {
    let Some(target) = portal.try_it.clone() else {
        return not_found(who);
    };
    let Some(route) = catalog::snapshot(portal).and_then(|p| {
        p.snapshot
            .content
            .routes
            .iter()
            .find(|r| *r.id.namespace == *ns && *r.id.name == *name)
            .cloned()
    }) else {
        return not_found(who);
    };
    if !catalog::visible(who, &route).await {
        return not_found(who);
    }
    let key = form.get("key").map(|k| k.trim()).unwrap_or("");
    let model = form.get("model").map(String::as_str).unwrap_or("");
    let message: String = form
        .get("message")
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_default();
    let refuse = |why: &str| answer_page(who, &route, None, why, "");
    if key.is_empty() || key.len() > MAX_KEY_BYTES || header::HeaderValue::from_str(key).is_err() {
        return refuse("Paste a key: one line of at most 512 printable characters.");
    }
    if !route.models.iter().any(|m| *m.name == *model) {
        return refuse("Choose one of the API's models.");
    }
    let body = json!({"model": model, "messages": [{"role": "user", "content": message}]});
    let path = format!("{}/v1/chat/completions", route.prefix.trim_end_matches('/'));
    match tokio::time::timeout(TIMEOUT, call(&target, &path, key, body.to_string())).await {
        Ok(Ok((status, text))) => {
            let mut shown = readable(&text);
            // Masking a very short "key" would mangle the answer; a real key is far longer.
            if key.len() >= 8 {
                shown = shown.replace(key, "[your key]");
            }
            answer_page(who, &route, Some(status), "", &shown)
        }
        Ok(Err(why)) => refuse(&format!("The proxy could not be reached: {why}")),
        Err(_) => refuse("The proxy did not answer within 30 seconds."),
    }
}

/// One plain-HTTP/1.1 POST to the proxy: its status and body (at most [`MAX_ANSWER_BYTES`]).
async fn call(
    target: &Target,
    path: &str,
    key: &str,
    body: String,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::post(path)
        .header(header::HOST, target.authority())
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| "the answer is larger than 256 KiB".to_owned())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// JSON pretty-printed; anything else as it came.
fn readable(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

fn answer_page(who: &Who, route: &Route, status: Option<u16>, error: &str, answer: &str) -> Reply {
    let back = format!(
        "/apis/{}/{}",
        url_part(&route.id.namespace),
        url_part(&route.id.name)
    );
    let mut body = format!("<h1>Try {}</h1>", esc(&route.id.name));
    if !error.is_empty() {
        let _ = write!(body, "<p class=\"notice error\">{}</p>", esc(error));
    }
    if let Some(status) = status {
        let _ = write!(
            body,
            "<p class=\"notice {}\">The proxy answered <strong id=\"try-status\">{status}</strong>.</p>\
             <pre><code id=\"try-answer\">{}</code></pre>",
            if (200..300).contains(&status) {
                "ok"
            } else {
                "error"
            },
            esc(answer)
        );
    }
    let _ = write!(body, "<p><a href=\"{}\">Back</a></p>", esc(&back));
    html_reply(
        if status.is_some() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        html::page(&format!("Try {}", route.id.name), Some(who.viewer()), &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_http_address_is_a_target() {
        let t = Target::parse("http://tollgate-proxy.tollgate.svc:8080/").unwrap();
        assert_eq!(t.authority(), "tollgate-proxy.tollgate.svc:8080");
        assert_eq!(
            Target::parse("http://[::1]").unwrap().authority(),
            "[::1]:80"
        );
        assert!(Target::parse("https://ai.example.com").is_err());
        assert!(Target::parse("http://proxy:8080/chat").is_err());
        assert!(Target::parse("proxy:8080").is_err());
    }

    #[test]
    fn answers_are_pretty_printed_when_json() {
        assert_eq!(readable("{\"a\":1}"), "{\n  \"a\": 1\n}");
        assert_eq!(readable("not json"), "not json");
    }
}
