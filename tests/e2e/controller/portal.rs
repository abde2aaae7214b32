//! The portal (issue 19) against the real API server: the real controller serving it, people signing
//! in with ServiceAccount tokens, RBAC and the approval admission policy deciding what they see and do.
//! `alice` is in the team (may create subscriptions, read routes), `bob` holds `approve` on its routes
//! and the deciders' role, `carol` has no rights in the namespace at all.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use tollgate_controller::portal::{
    seal::Sealer,
    session::{COOKIE, Session},
};
use tollgate_e2e::{eventually, free_port};

use crate::{
    SERIAL,
    fixtures::{KEY, MODEL, base_yaml, secret_data, sha256_hex, status_of, wait_served},
    support::{Controller, Setup},
};

const PROXY_BASE_URL: &str = "https://ai.example.test";
const SESSION_KEY: &[u8] = b"portal-test-session-key-0123456789abcdef";

/// A Published route whose description holds markup, a Draft, and the people with their rights.
fn portal_yaml(ns: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: chat
spec:
  prefix: /chat
  description: "<script>alert('owned')</script> Chat with the team's models"
  approval: Manual
  models:
    - name: fake-chat
      contextWindow: 8192
      backends: [{{provider: fake}}]
  prompts:
    - name: summarise
      model: fake-chat
      messages: [{{role: user, content: "Summarise: {{{{text}}}}"}}]
      variables: [{{name: text}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: secret-plans
spec:
  prefix: /secret-plans
  stage: Draft
  description: "not for other teams yet"
  models:
    - name: fake-chat
      backends: [{{provider: fake}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: alice}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: bob}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: carol}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: team-member}}
rules:
  - apiGroups: [tollgate.dev]
    resources: [airoutes]
    verbs: [get, list, watch]
  - apiGroups: [tollgate.dev]
    resources: [consumers]
    verbs: [get, list, watch, update]
  - apiGroups: [tollgate.dev]
    resources: [apisubscriptions]
    verbs: [get, list, watch, create, patch]
  # To generate and rotate keys in the portal; never get or list (values stay unreadable).
  - apiGroups: [""]
    resources: [secrets]
    verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-member}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: team-member}}
subjects: [{{kind: ServiceAccount, name: alice, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: bob-approves}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "tollgate:approver"}}
subjects: [{{kind: ServiceAccount, name: bob, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: bob-decides}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "tollgate:decider"}}
subjects: [{{kind: ServiceAccount, name: bob, namespace: {ns}}}]
"#
    )
}

/// One browser's worth of state: the session cookie, if any. Redirects are not followed, so the
/// tests see them.
#[derive(Clone)]
struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    port: u16,
    cookie: Option<String>,
    /// The `Origin` header a browser would send with a form from that page, if any.
    origin: Option<String>,
}

/// An answer: status, headers, body.
struct Page {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + "name=\"csrf\" value=\"".len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

impl Browser {
    fn new(port: u16) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            port,
            cookie: None,
            origin: None,
        }
    }

    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(c) = &self.cookie {
            request = request.header(header::COOKIE, format!("{COOKIE}={c}"));
        }
        if let Some(o) = &self.origin {
            request = request.header(header::ORIGIN, o);
        }
        let body = match form {
            Some(fields) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                form_body(fields)
            }
            None => String::new(),
        };
        let response = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .request(request.body(Full::new(Bytes::from(body))).unwrap()),
        )
        .await
        .expect("the portal answers in time")
        .expect("the portal answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form)).await
    }

    /// Signs in with `token`; keeps the session cookie and returns its `Set-Cookie` header.
    async fn sign_in(&mut self, token: &str) -> String {
        let page = self.post("/signin", &[("token", token)]).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location(), "/");
        let set = page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        let value = set
            .strip_prefix(&format!("{COOKIE}="))
            .and_then(|r| r.split(';').next())
            .expect("the session cookie");
        self.cookie = Some(value.to_owned());
        set
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The namespace with the resources and people, and a controller serving the portal.
async fn portal_setup(prefix: &str) -> (Setup, Controller, u16) {
    let setup = Setup::new(prefix);
    setup.apply(&base_yaml());
    setup.apply(&portal_yaml(setup.ns.name()));
    let (port, args) = portal_args(&setup);
    let controller = setup.controller_with_args("controller", &args).await;
    (setup, controller, port)
}

/// The portal's port and the controller flags that serve it there.
fn portal_args(setup: &Setup) -> (u16, Vec<String>) {
    let key = setup.dir.path().join("portal.key");
    std::fs::write(&key, SESSION_KEY).unwrap();
    let port = free_port();
    let args = vec![
        format!("--portal-listen=127.0.0.1:{port}"),
        format!("--portal-session-key-file={}", key.display()),
        format!("--portal-proxy-base-url={PROXY_BASE_URL}"),
    ];
    (port, args)
}

fn token(setup: &Setup, who: &str) -> String {
    setup.cp.create_token(setup.ns.name(), who, None)
}

// Sign-in, sessions that must be refused, CSRF, escaping, the headers, Drafts hidden from someone
// without rights, the API page and the Backstage export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_csrf_escaping_and_draft_visibility() {
    let _serial = SERIAL.lock().await;
    let (setup, _controller, port) = portal_setup("ctl-portal-sec").await;
    let ns = setup.ns.name().to_owned();

    // No session: every page sends the browser to sign in; the sign-in page is served.
    let mut carol = Browser::new(port);
    let page = carol.get("/").await;
    assert_eq!((page.status, page.location()), (303, "/signin"));
    let page = carol.get("/signin").await;
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // `same-origin`, not `no-referrer`: under the latter browsers send `Origin: null` with forms
    // and the portal would refuse its own (the browser test caught that).
    assert_eq!(page.headers["referrer-policy"], "same-origin");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert!(!page.body.contains("<script"), "no script at all");
    let css = carol.get("/portal.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");

    // A form sent from another site is refused, the sign-in form included; from the portal's own
    // pages it is taken.
    let mut elsewhere = Browser::new(port);
    elsewhere.origin = Some("https://evil.example".into());
    let page = elsewhere
        .post("/signin", &[("token", &token(&setup, "carol"))])
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.headers.get(header::SET_COOKIE).is_none());
    carol.origin = Some(format!("http://127.0.0.1:{port}"));

    // A token the API server does not accept is refused.
    let page = carol.post("/signin", &[("token", "not-a-token")]).await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("does not accept that token"));

    // carol signs in: the cookie is HttpOnly, SameSite=Strict, with an expiry, and her token is not
    // readable in it.
    let carol_token = token(&setup, "carol");
    let set_cookie = carol.sign_in(&carol_token).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(&carol_token[..40]));

    // The catalog (once the controller has compiled the routes): the Published route with its
    // description as text, not the Draft.
    let catalog = eventually("the catalog lists chat", Duration::from_secs(20), || {
        let mut b = carol.clone();
        async move {
            let page = b.get("/").await;
            if page.status == 200 && page.body.contains("href=\"/apis/") {
                Ok(page)
            } else {
                Err(format!("{} {}", page.status, page.body))
            }
        }
    })
    .await;
    assert!(catalog.body.contains(&format!("href=\"/apis/{ns}/chat\"")));
    assert!(
        catalog
            .body
            .contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"),
        "{}",
        catalog.body
    );
    assert!(!catalog.body.contains("<script"), "{}", catalog.body);
    assert!(!catalog.body.contains("secret-plans"), "{}", catalog.body);
    // The model's context window (from the route's spec) and the route's MCP tools are in its card.
    assert!(
        catalog
            .body
            .contains("<span class=\"context\">8,192 tokens of context</span>"),
        "{}",
        catalog.body
    );
    assert!(
        catalog
            .body
            .contains("<tr><th>MCP tools</th><td>1 tool at <code>/chat/mcp</code></td></tr>"),
        "{}",
        catalog.body
    );
    assert!(catalog.body.contains("system:serviceaccount:"));
    assert!(
        !catalog.body.contains(&carol_token),
        "no credential in a page"
    );
    // The Draft's page answers as a route that does not exist would.
    assert_eq!(
        carol.get(&format!("/apis/{ns}/secret-plans")).await.status,
        404
    );
    assert_eq!(carol.get(&format!("/apis/{ns}/nothing")).await.status, 404);
    // Filters narrow the catalog.
    let filtered = carol.get("/?stage=Deprecated").await;
    assert!(!filtered.body.contains(&format!("href=\"/apis/{ns}/chat\"")));
    let filtered = carol.get(&format!("/?team={ns}&model=fake")).await;
    assert!(filtered.body.contains(&format!("href=\"/apis/{ns}/chat\"")));

    // The API page: operations rendered from the OpenAPI document, samples with the real base URL.
    let api = carol.get(&format!("/apis/{ns}/chat")).await;
    assert_eq!(api.status, 200);
    for expected in [
        "<span class=\"method\">POST</span> <code>/v1/chat/completions</code>",
        "<span class=\"method\">GET</span> <code>/v1/models</code>",
        "https://ai.example.test/chat/v1/chat/completions",
        "base_url=&quot;https://ai.example.test/chat/v1&quot;",
        "Anthropic(base_url=&quot;https://ai.example.test/chat&quot;",
        "<td><code>messages</code></td>",
        "<code id=\"mcp-url\">https://ai.example.test/chat/mcp</code>",
        "&quot;url&quot;: &quot;https://ai.example.test/chat/mcp&quot;",
        "&quot;tollgate-chat&quot;",
    ] {
        assert!(
            api.body.contains(expected),
            "{expected:?} not in {}",
            api.body
        );
    }
    assert!(api.body.contains("You have no consumer"), "carol has none");

    // alice may get AIRoutes in the namespace: she sees the Draft.
    let mut alice = Browser::new(port);
    alice.sign_in(&token(&setup, "alice")).await;
    let page = alice.get("/").await;
    assert!(page.body.contains("secret-plans"), "{}", page.body);
    assert_eq!(
        alice.get(&format!("/apis/{ns}/secret-plans")).await.status,
        200
    );

    // A form without this session's CSRF token is refused, and nothing is created.
    let consumer = format!("{ns}/app");
    let path = format!("/apis/{ns}/chat/subscribe");
    let page = alice.post(&path, &[("consumer", &consumer)]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    let other_session_csrf = carol.get("/").await.csrf();
    let page = alice
        .post(
            &path,
            &[("consumer", &consumer), ("csrf", &other_session_csrf)],
        )
        .await;
    assert_eq!(page.status, 403, "another session's token does not do");
    assert_eq!(
        setup
            .kubectl(&["get", "apisubscriptions", "-o", "name"])
            .unwrap(),
        "",
        "nothing was created"
    );

    // Forged and expired sessions go back to sign-in.
    let mut mallory = Browser::new(port);
    mallory.cookie = Some("AQ-not-a-sealed-session".into());
    let page = mallory.get("/").await;
    assert_eq!((page.status, page.location()), (303, "/signin?why=invalid"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let other_key = Sealer::from_secret(b"some other key, 32 bytes or more!!");
    let forged = Session::new(
        &other_key,
        "system:admin".into(),
        carol_token.clone(),
        now,
        3600,
    );
    mallory.cookie = Some(forged.seal(&other_key));
    let page = mallory.get("/").await;
    assert_eq!((page.status, page.location()), (303, "/signin?why=invalid"));
    let real_key = Sealer::from_secret(SESSION_KEY);
    let expired = Session::new(
        &real_key,
        "carol".into(),
        carol_token.clone(),
        now - 7200,
        3600,
    );
    mallory.cookie = Some(expired.seal(&real_key));
    let page = mallory.get("/").await;
    assert_eq!((page.status, page.location()), (303, "/signin?why=expired"));
    assert!(
        mallory
            .get("/signin?why=expired")
            .await
            .body
            .contains("Your session has expired")
    );
    let page = mallory.post("/signout", &[("csrf", &expired.csrf)]).await;
    assert_eq!(page.location(), "/signin?why=expired", "nor may it post");

    // The Backstage export: for a session or a bearer token; Published routes only.
    let mut catalog_processor = Browser::new(port);
    let page = catalog_processor.get("/backstage/entities").await;
    assert_eq!(page.status, 401);
    let page = carol.get("/backstage/entities").await;
    assert_eq!(page.status, 200);
    let export: Value = serde_json::from_str(&page.body).unwrap();
    let items = export["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chat"], "no Draft");
    assert_eq!(items[0]["kind"], "API");
    assert_eq!(items[0]["spec"]["lifecycle"], "production");
    let definition: Value =
        serde_json::from_str(items[0]["spec"]["definition"].as_str().unwrap()).unwrap();
    assert_eq!(definition["openapi"], "3.1.0");

    // Signing out ends the session in the browser.
    let csrf = carol.get("/").await.csrf();
    let page = carol.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(page.location(), "/signin");
    assert!(
        page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

// alice asks for access for her consumer; she cannot approve it herself (the admission policy's
// denial is shown); bob approves it from his inbox; her key then works through a proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_request_access_self_approval_denied_approver_approves() {
    let _serial = SERIAL.lock().await;
    let (setup, controller, port) = portal_setup("ctl-portal-flow").await;
    let ns = setup.ns.name().to_owned();
    let subscription = format!("app-{ns}-chat");

    let mut alice = Browser::new(port);
    alice.sign_in(&token(&setup, "alice")).await;
    let api = eventually("chat's page", Duration::from_secs(20), || {
        let mut b = alice.clone();
        let ns = ns.clone();
        async move {
            let page = b.get(&format!("/apis/{ns}/chat")).await;
            if page.status == 200 && page.body.contains("<option") {
                Ok(page)
            } else {
                Err(format!("{} {}", page.status, page.body))
            }
        }
    })
    .await;
    let consumer = format!("{ns}/app");
    assert!(api.body.contains(&format!("<option value=\"{consumer}\">")));
    let page = alice
        .post(
            &format!("/apis/{ns}/chat/subscribe"),
            &[
                ("csrf", &api.csrf()),
                ("consumer", &consumer),
                ("reason", "Our <b>support</b> bot needs it"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Access requested"), "{}", page.body);
    // Created as alice, with her reason.
    let object: Value = serde_json::from_str(
        &setup
            .kubectl(&["get", "apisubscription", &subscription, "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let annotations = &object["metadata"]["annotations"];
    assert_eq!(
        annotations["tollgate.dev/request-reason"],
        "Our <b>support</b> bot needs it"
    );
    assert_eq!(
        annotations["tollgate.dev/requested-by"],
        format!("system:serviceaccount:{ns}:alice")
    );
    let mine = eventually(
        "alice's request shows Pending",
        Duration::from_secs(20),
        || {
            let mut b = alice.clone();
            async move {
                let page = b.get("/subscriptions").await;
                if page.body.contains("class=\"phase-Pending\">Pending") {
                    Ok(page)
                } else {
                    Err(page.body)
                }
            }
        },
    )
    .await;
    assert!(
        mine.body
            .contains("Our &lt;b&gt;support&lt;/b&gt; bot needs it")
    );

    // alice tries to approve her own request: the API server's denial, as it is.
    let inbox = eventually("alice's approvals page", Duration::from_secs(10), || {
        let mut b = alice.clone();
        let subscription = subscription.clone();
        async move {
            let page = b.get("/approvals").await;
            if page.body.contains(&subscription) {
                Ok(page)
            } else {
                Err(page.body)
            }
        }
    })
    .await;
    let decide = format!("/approvals/{ns}/{subscription}");
    let page = alice
        .post(
            &decide,
            &[
                ("csrf", &inbox.csrf()),
                ("decision", "Approved"),
                ("reason", "me"),
            ],
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    let denial = format!(
        "user &quot;system:serviceaccount:{ns}:alice&quot; may not set spec.decision or spec.decisionReason"
    );
    assert!(page.body.contains(&denial), "{}", page.body);
    println!(
        "alice's self-approval, as the portal shows it: {}",
        page.body
    );

    // carol, without rights, sees nothing to decide and cannot decide either.
    let mut carol = Browser::new(port);
    carol.sign_in(&token(&setup, "carol")).await;
    let page = carol.get("/approvals").await;
    assert!(
        page.body.contains("Nothing for you to decide"),
        "{}",
        page.body
    );
    let page = carol.get("/subscriptions").await;
    assert!(!page.body.contains(&subscription), "{}", page.body);
    let page = carol
        .post(&decide, &[("csrf", &page.csrf()), ("decision", "Approved")])
        .await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("forbidden"), "{}", page.body);

    // bob approves from his inbox, pending first.
    let mut bob = Browser::new(port);
    bob.sign_in(&token(&setup, "bob")).await;
    let inbox = bob.get("/approvals").await;
    assert!(inbox.body.contains(&subscription), "{}", inbox.body);
    assert!(inbox.body.contains("class=\"phase-Pending\">Pending"));
    let page = bob
        .post(
            &decide,
            &[
                ("csrf", &inbox.csrf()),
                ("decision", "Approved"),
                ("reason", "welcome"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Approved"), "{}", page.body);
    eventually("alice sees Approved", Duration::from_secs(20), || {
        let mut b = alice.clone();
        async move {
            let page = b.get("/subscriptions").await;
            if page.body.contains("class=\"phase-Approved\">Approved")
                && page.body.contains("welcome")
            {
                Ok(())
            } else {
                Err(page.body)
            }
        }
    })
    .await;

    // Her consumer's key now works through a proxy.
    let mut proxy = setup
        .proxy("proxy", controller.port, &setup.proxy_token)
        .await;
    proxy.wait_ready().await;
    wait_served(&[&proxy], "/chat", KEY, Duration::from_secs(20)).await;

    // The document the portal renders and exports is the one the proxy serves for the route.
    let request = Request::get(format!("http://127.0.0.1:{}/chat/openapi.json", proxy.port))
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = bob
        .client
        .request(request)
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let served: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let export: Value = serde_json::from_str(&bob.get("/backstage/entities").await.body).unwrap();
    let exported: Value = serde_json::from_str(
        export["items"][0]["spec"]["definition"]
            .as_str()
            .expect("a definition"),
    )
    .unwrap();
    assert_eq!(exported, served, "the portal's document is the proxy's");

    // Usage: alice's calls through the proxy reach her usage pages once the proxy has reported them
    // and the controller has rolled them up (each every second here). Five requests: the chat call
    // above, the `openapi.json` fetch (answered for her subscription too, with no tokens) and three
    // chat calls here; each chat call reads 10 input tokens.
    for _ in 0..3 {
        assert_eq!(proxy.chat("/chat", KEY, MODEL).await.0, 200);
    }
    let today = eventually(
        "the roll-up holds the 5 calls",
        Duration::from_secs(30),
        || {
            let status = status_of(&setup, &format!("apisubscription/{subscription}"));
            async move {
                let usage = &status["status"]["usage"];
                if usage["requests"] == 5 {
                    Ok(usage.clone())
                } else {
                    Err(usage.to_string())
                }
            }
        },
    )
    .await;
    let days = today["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{today}");
    assert_eq!(days[0]["requests"], 5);
    assert_eq!(days[0]["inputTokens"], 40, "{today}");
    assert_eq!(today["months"][0]["requests"], 5);
    assert_eq!(today["writes"][0]["writer"], "controller");
    let day = days[0]["period"].as_str().unwrap().to_owned();
    for (what, path) in [
        (
            "subscription",
            format!("/usage/subscriptions/{ns}/{subscription}"),
        ),
        ("route", format!("/usage/routes/{ns}/chat")),
        ("consumer", format!("/usage/consumers/{ns}/app")),
    ] {
        let page = eventually(
            &format!("alice's {what} usage page shows the 5 calls"),
            Duration::from_secs(20),
            || {
                let mut b = alice.clone();
                let path = path.clone();
                let day = day.clone();
                async move {
                    let page = b.get(&path).await;
                    if page.status == 200 && page.body.contains(&format!("<title>{day}: 5</title>"))
                    {
                        Ok(page)
                    } else {
                        Err(format!("{} {}", page.status, page.body))
                    }
                }
            },
        )
        .await;
        // The chart and the numbers beside it, in the day table and the month table.
        assert!(page.body.contains("<svg class=\"chart chart-requests\""));
        assert_eq!(page.body.matches("<svg").count(), 6, "{}", page.body);
        assert!(
            page.body
                .contains(&format!("<tr><td>{day}</td><td>5</td><td>40</td>")),
            "{}",
            page.body
        );
        assert!(
            page.body
                .contains(&format!("<tr><td>{}</td><td>5</td><td>40</td>", &day[..7])),
            "{}",
            page.body
        );
        assert!(!page.body.contains("<script"));
    }
    let index = alice.get("/usage").await;
    for link in [
        format!("href=\"/usage/subscriptions/{ns}/{subscription}\""),
        format!("href=\"/usage/routes/{ns}/chat\""),
        format!("href=\"/usage/consumers/{ns}/app\""),
    ] {
        assert!(index.body.contains(&link), "{link} not in {}", index.body);
    }
    let route_usage = status_of(&setup, "airoute/chat");
    assert_eq!(
        route_usage["status"]["usage"]["requests"], 5,
        "{route_usage}"
    );

    // The MCP endpoint the API page's client sample names answers alice's key (the stateless
    // revision, as the sample's clients speak it).
    let api = alice.get(&format!("/apis/{ns}/chat")).await;
    assert!(
        api.body
            .contains("<code id=\"mcp-url\">https://ai.example.test/chat/mcp</code>")
    );
    let request = Request::post(format!("http://127.0.0.1:{}/chat/mcp", proxy.port))
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/list")
        .body(Full::new(Bytes::from(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )))
        .unwrap();
    let response = alice
        .client
        .request(request)
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let answer: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The API page lists, as its MCP tools, exactly the names tools/list through the proxy returns.
    let served: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {answer}"))
        .iter()
        .map(|t| t["name"].as_str().expect("a tool has a name"))
        .collect();
    assert_eq!(served, ["summarise"], "{answer}");
    let shown: Vec<&str> = api
        .body
        .split("<code class=\"mcp-tool\">")
        .skip(1)
        .map(|rest| &rest[..rest.find("</code>").expect("closed")])
        .collect();
    assert_eq!(shown, served, "the API page's MCP tools are the proxy's");
    assert!(
        api.body
            .contains("<tr><th>MCP tools</th><td>1 tool at <code>/chat/mcp</code></td></tr>"),
        "{}",
        api.body
    );

    // carol, without rights in the namespace, sees none of its usage: not listed, and each page the
    // same 404 as a missing object.
    let index = carol.get("/usage").await;
    assert_eq!(index.status, 200);
    assert!(!index.body.contains(&format!("/{ns}/")), "{}", index.body);
    assert_eq!(index.body.matches("None you may read").count(), 3);
    for path in [
        format!("/usage/subscriptions/{ns}/{subscription}"),
        format!("/usage/routes/{ns}/chat"),
        format!("/usage/consumers/{ns}/app"),
        format!("/usage/consumers/{ns}/nothing"),
    ] {
        let page = carol.get(&path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert!(!page.body.contains("<svg"));
    }
}

// Consumers and keys: alice sees her team's consumers with each key's name, where it is kept and its
// expiry, never a value; she rotates a generated key and adds one, each value shown once (in the
// answer to her form) and written as her into a Secret the controller then serves; carol sees
// nothing of the namespace's consumers and may change none of its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_consumers_and_keys_shown_once_and_hidden_from_others() {
    let _serial = SERIAL.lock().await;
    let (setup, _controller, port) = portal_setup("ctl-portal-keys").await;
    let ns = setup.ns.name().to_owned();
    setup.apply(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: bot
spec:
  description: "The <i>support</i> bot"
  keys:
    - name: main
      generate: true
      expiresAt: "2099-01-01T00:00:00Z"
"#,
    );
    let secret_value = |name: &str| secret_data(&setup, name, "apiKey");
    // The controller generates bot's key.
    let generated = eventually("bot's key is generated", Duration::from_secs(20), || {
        let value = secret_value("bot-main-apikey");
        async move {
            if value.starts_with("tg_") {
                Ok(value)
            } else {
                Err(value)
            }
        }
    })
    .await;

    let mut alice = Browser::new(port);
    alice.origin = Some(format!("http://127.0.0.1:{port}"));
    alice.sign_in(&token(&setup, "alice")).await;
    let page = alice.get("/consumers").await;
    assert_eq!(page.status, 200);
    for expected in [
        format!("<h2>{ns}/app</h2>"),
        format!("<h2>{ns}/bot</h2>"),
        "The &lt;i&gt;support&lt;/i&gt; bot".to_owned(),
        "<td>primary</td><td>Secret <code>app-key</code>, key <code>apiKey</code></td><td>never</td>"
            .to_owned(),
        "<td>main</td><td>generated, Secret <code>bot-main-apikey</code></td><td>2099-01-01T00:00:00Z</td>"
            .to_owned(),
        format!("action=\"/consumers/{ns}/bot/keys/main/rotate\""),
        format!("action=\"/consumers/{ns}/bot/keys\""),
    ] {
        assert!(page.body.contains(&expected), "{expected} not in {}", page.body);
    }
    assert!(!page.body.contains(KEY), "no key value in the page");
    assert!(!page.body.contains(&generated), "no key value in the page");
    assert!(
        !page
            .body
            .contains(&format!("/consumers/{ns}/app/keys/primary/rotate")),
        "a key in a team's own Secret is not rotated by the portal"
    );

    // Without the CSRF token nothing happens.
    let rotate = format!("/consumers/{ns}/bot/keys/main/rotate");
    assert_eq!(alice.post(&rotate, &[]).await.status, 403);
    assert_eq!(secret_value("bot-main-apikey"), generated);

    // carol sees no consumer of the namespace, and may rotate none of its keys.
    let mut carol = Browser::new(port);
    carol.sign_in(&token(&setup, "carol")).await;
    let page = carol.get("/consumers").await;
    assert!(
        page.body.contains("No consumers you may read"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&format!("/consumers/{ns}/")),
        "{}",
        page.body
    );
    let page = carol.post(&rotate, &[("csrf", &page.csrf())]).await;
    assert_eq!(page.status, 404, "{}", page.body);
    let csrf = carol.get("/consumers").await.csrf();
    let page = carol
        .post(
            &format!("/consumers/{ns}/bot/keys"),
            &[("csrf", &csrf), ("name", "mine")],
        )
        .await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert_eq!(secret_value("bot-main-apikey"), generated);

    // alice rotates: the new value is shown once and is what the Secret now holds.
    let csrf = alice.get("/consumers").await.csrf();
    let page = alice.post(&rotate, &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let shown = shown_key(&page.body);
    assert!(shown.starts_with("tg_") && shown != generated, "{shown}");
    assert_eq!(secret_value("bot-main-apikey"), shown);
    // The previous key stays valid for the key's grace (a day by default), kept only as its digest.
    assert_eq!(
        secret_data(&setup, "bot-main-apikey", "previousApiKeySha256"),
        sha256_hex(&generated)
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    let again = alice.get("/consumers").await;
    assert!(!again.body.contains(&shown), "shown once only");

    // alice adds a key: its Secret (labelled for the controller, owned by the Consumer) holds the value
    // shown, and the Consumer lists it.
    let page = alice
        .post(
            &format!("/consumers/{ns}/bot/keys"),
            &[
                ("csrf", &csrf),
                ("name", "second"),
                ("expiresAt", "2098-06-01T00:00:00Z"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let added = shown_key(&page.body);
    assert_eq!(secret_value("bot-second-apikey"), added);
    assert_eq!(
        setup.jsonpath(
            "secret/bot-second-apikey",
            "{.metadata.labels.tollgate\\.dev/secret} {.metadata.ownerReferences[0].kind}"
        ),
        "true Consumer"
    );
    assert_eq!(
        setup.jsonpath(
            "consumer/bot",
            "{.spec.keys[1].name} {.spec.keys[1].expiresAt}"
        ),
        "second 2098-06-01T00:00:00Z"
    );
    // The controller counts both keys as active (it read them from the Secrets alice wrote).
    eventually("bot has 2 active keys", Duration::from_secs(20), || {
        let active = setup.jsonpath("consumer/bot", "{.status.activeKeys}");
        async move { if active == "2" { Ok(()) } else { Err(active) } }
    })
    .await;
    let page = alice.get("/consumers").await;
    assert!(!page.body.contains(&added) && !page.body.contains(&shown));
    assert!(page.body.contains("<td>second</td>"), "{}", page.body);
    // A second key of the same name is refused.
    let page = alice
        .post(
            &format!("/consumers/{ns}/bot/keys"),
            &[("csrf", &csrf), ("name", "second")],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("already has a key named second"));
}

/// The key value a "Key rotated/generated" page shows.
fn shown_key(body: &str) -> String {
    let start = body
        .find("<code id=\"new-key\">")
        .unwrap_or_else(|| panic!("no key shown in {body}"))
        + "<code id=\"new-key\">".len();
    body[start..].split('<').next().unwrap().to_owned()
}

// The try-it form: the portal sends a chat call to the proxy's in-cluster address with the key alice
// pastes, and shows the proxy's answer as it came; the key appears in no page. A wrong key gets the
// proxy's own refusal; without the CSRF token nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_try_it_sends_the_call_through_the_proxy() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-portal-try");
    setup.apply(&base_yaml());
    setup.apply(&portal_yaml(setup.ns.name()));
    setup.apply(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: app-chat
spec:
  consumer: app
  route: {name: chat}
  decision: Approved
"#,
    );
    let ns = setup.ns.name().to_owned();
    // The proxy first, so the portal can be told its address; it connects once the controller is up.
    let controller_port = free_port();
    let mut proxy = setup
        .proxy("proxy", controller_port, &setup.proxy_token)
        .await;
    let (port, mut args) = portal_args(&setup);
    args.push(format!(
        "--portal-try-it-url=http://127.0.0.1:{}",
        proxy.port
    ));
    let _controller = setup
        .controller_on_with_args("controller", controller_port, &args)
        .await;
    proxy.wait_ready().await;
    wait_served(&[&proxy], "/chat", KEY, Duration::from_secs(20)).await;

    let mut alice = Browser::new(port);
    alice.origin = Some(format!("http://127.0.0.1:{port}"));
    alice.sign_in(&token(&setup, "alice")).await;
    let api = alice.get(&format!("/apis/{ns}/chat")).await;
    assert!(
        api.body
            .contains(&format!("action=\"/apis/{ns}/chat/try\"")),
        "{}",
        api.body
    );
    assert!(api.body.contains("type=\"password\""));
    let path = format!("/apis/{ns}/chat/try");
    let csrf = api.csrf();
    let page = alice
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("key", KEY),
                ("model", MODEL),
                ("message", "Hello <b>there</b>"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("<strong id=\"try-status\">200</strong>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("&quot;choices&quot;"), "{}", page.body);
    assert!(!page.body.contains(KEY), "the key is in no page");

    // A wrong key: the proxy's refusal, as it came.
    let page = alice
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("key", "tg_not-a-key-of-anyone-0123456789"),
                ("model", MODEL),
                ("message", "Hello"),
            ],
        )
        .await;
    assert!(
        page.body.contains("<strong id=\"try-status\">401</strong>"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("tg_not-a-key-of-anyone"),
        "{}",
        page.body
    );
    // A model the route does not serve is refused before anything is sent.
    let page = alice
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("key", KEY),
                ("model", "other"),
                ("message", "x"),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    // Without the session's CSRF token: refused.
    let page = alice
        .post(&path, &[("key", KEY), ("model", MODEL), ("message", "x")])
        .await;
    assert_eq!(page.status, 403);
}

// Issue 19's acceptance in a real browser: Debian's chromium driven by selenium
// (tests/browser/portal_flow.py) — A requests access, sees Pending, is refused her own approval by the
// API server, B approves from his inbox, A's key then works through the proxy, and after A's calls her
// usage page's chart and table show them. Screenshots are kept
// under <target>/portal-screenshots; the browser's network log shows no request to another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_in_a_real_browser() {
    let _serial = SERIAL.lock().await;
    let python = ensure_browser();
    let (setup, controller, port) = portal_setup("ctl-portal-browser").await;
    let ns = setup.ns.name().to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tollgate_e2e::repo_root().join("target"));
    let shots = target.join("portal-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    // The catalog must hold the route before the browser looks for it.
    let mut probe = Browser::new(port);
    probe.sign_in(&token(&setup, "carol")).await;
    eventually("the catalog lists chat", Duration::from_secs(20), || {
        let mut b = probe.clone();
        let ns = ns.clone();
        async move {
            let page = b.get("/").await;
            if page.body.contains(&format!("href=\"/apis/{ns}/chat\"")) {
                Ok(())
            } else {
                Err(page.body)
            }
        }
    })
    .await;

    let seen = run_browser(
        &python,
        &[
            ("PORTAL_URL", format!("http://127.0.0.1:{port}")),
            ("NS", ns.clone()),
            ("SCREENSHOTS", shots.display().to_string()),
            ("TOKEN_A", token(&setup, "alice")),
            ("TOKEN_B", token(&setup, "bob")),
        ],
    )
    .await;
    assert!(seen["denial"].as_str().unwrap().contains(&format!(
        "user \"system:serviceaccount:{ns}:alice\" may not set spec.decision"
    )));
    let portal_host = format!("127.0.0.1:{port}");
    for who in ["hosts_a", "hosts_b"] {
        assert_eq!(seen[who], serde_json::json!([portal_host]), "{who}");
    }
    for name in [
        "1-catalog",
        "2-api-page",
        "3-pending",
        "4-self-approval-denied",
        "5-inbox",
        "6-approved",
    ] {
        let file = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&file).is_ok_and(|m| m.len() > 1000),
            "{} kept",
            file.display()
        );
    }
    println!("screenshots in {}", shots.display());

    // The approval reached the cluster, and A's consumer key works through the proxy.
    eventually(
        "the subscription is Approved",
        Duration::from_secs(20),
        || {
            let phase =
                setup.jsonpath(&format!("apisubscription/app-{ns}-chat"), "{.status.phase}");
            async move {
                if phase == "Approved" {
                    Ok(())
                } else {
                    Err(phase)
                }
            }
        },
    )
    .await;
    let mut proxy = setup
        .proxy("proxy", controller.port, &setup.proxy_token)
        .await;
    proxy.wait_ready().await;
    wait_served(&[&proxy], "/chat", KEY, Duration::from_secs(20)).await;

    // After A's calls (the one above and two more), her usage chart shows them, in the browser.
    for _ in 0..2 {
        assert_eq!(proxy.chat("/chat", KEY, MODEL).await.0, 200);
    }
    let seen = run_browser(
        &python,
        &[
            ("PHASE", "usage".into()),
            ("EXPECT_REQUESTS", "3".into()),
            ("PORTAL_URL", format!("http://127.0.0.1:{port}")),
            ("NS", ns.clone()),
            ("SCREENSHOTS", shots.display().to_string()),
            ("TOKEN_A", token(&setup, "alice")),
        ],
    )
    .await;
    assert_eq!(seen["usage_row"][1], "3", "{seen}");
    assert_eq!(seen["hosts_a"], serde_json::json!([portal_host]));
    let file = shots.join("7-usage.png");
    assert!(
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 1000),
        "{} kept",
        file.display()
    );
}

/// Runs tests/browser/portal_flow.py with `env` (bounded to two minutes); the JSON line it printed.
async fn run_browser(python: &str, env: &[(&str, String)]) -> Value {
    let script = tollgate_e2e::repo_root().join("tests/browser/portal_flow.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&script);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the browser run ends in time")
        .expect("running the browser script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed:\n{stdout}\n{stderr}"
    );
    println!("browser run: {stdout}");
    serde_json::from_str(stdout.trim()).expect("the script's JSON line")
}

/// Runs tests/browser/ensure.sh (installs chromium and the selenium venv on first use); its python.
fn ensure_browser() -> String {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(tollgate_e2e::repo_root().join("tests/browser/ensure.sh"));
    let out = cmd.output().expect("running tests/browser/ensure.sh");
    assert!(
        out.status.success(),
        "tests/browser/ensure.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
