//! Consumers and their keys: `GET /consumers` lists the person's consumers (where they may list them)
//! with each key's name, where it is kept and its expiry, never its value. `POST
//! /consumers/<ns>/<name>/keys/<key>/rotate` writes a fresh value into a generated key's Secret (the
//! previous value stays valid for the key's rotation grace, see [`crate::keys`]), and
//! `POST /consumers/<ns>/<name>/keys` adds a generated key; both as the person, with their token, and
//! the fresh value is shown once, in the answer to that form, and never again.
//!
//! The Secret carries what the controller's own generated keys carry (the `tollgate.dev/secret` label
//! its Secret watch selects, the Consumer as owner), built by [`crate::keys::key_secret`]. A new key's
//! Secret is written before the key joins the Consumer, so the controller never races to generate one
//! of its own.

use std::fmt::Write as _;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use tollgate_crds::{Consumer, ConsumerKey, DEFAULT_SECRET_KEY};

use super::{
    Portal,
    access::{api_message, is_namespace, is_object_name},
    html::{csrf_field, esc, page, url_part},
    http::{Fields, Reply, Who, html_reply, not_found, outcome},
    people::Access,
};
use crate::keys;

/// Most keys a consumer may have (the CRD's limit).
const MAX_KEYS: usize = 16;

/// `GET /consumers`.
pub async fn page_of(portal: &Portal, who: &mut Who) -> Reply {
    let namespaces: std::collections::BTreeSet<String> = portal
        .store
        .lock()
        .consumers
        .objects
        .keys()
        .map(|id| id.namespace.to_string())
        .collect();
    let now = Timestamp::now();
    let mut body = String::from(
        "<h1>Consumers and keys</h1><p class=\"muted\">Your teams' applications and their API keys. \
         A key's value is never shown here; a key you generate or rotate is shown once, right after.</p>",
    );
    let mut shown = 0;
    for ns in &namespaces {
        if !who.rights.may(Access::new("list", "consumers", ns)).await {
            continue;
        }
        let consumers = match Api::<Consumer>::namespaced(who.client.clone(), ns)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"notice error\">{}</p>",
                    esc(&api_message(&e))
                );
                continue;
            }
        };
        let may_patch = who.rights.may(Access::core("patch", "secrets", ns)).await;
        let may_add = who.rights.may(Access::core("create", "secrets", ns)).await
            && who.rights.may(Access::new("update", "consumers", ns)).await;
        for consumer in consumers {
            shown += 1;
            let name = consumer.metadata.name.clone().unwrap_or_default();
            body.push_str(&card(who, ns, &name, &consumer, now, may_patch, may_add));
        }
    }
    if shown == 0 {
        body.push_str("<p>No consumers you may read.</p>");
    }
    html_reply(
        hyper::StatusCode::OK,
        page("Consumers and keys", Some(who.viewer()), &body),
    )
}

fn card(
    who: &Who,
    ns: &str,
    name: &str,
    consumer: &Consumer,
    now: Timestamp,
    may_patch: bool,
    may_add: bool,
) -> String {
    let base = format!("/consumers/{}/{}", url_part(ns), url_part(name));
    let mut out = format!(
        "<section class=\"card consumer\"><h2>{}/{}</h2><p>{}</p>\
         <p><a href=\"/usage/consumers/{}/{}\">Usage</a></p>\
         <table class=\"keys\"><thead><tr><th>Key</th><th>Kept in</th><th>Expires</th><th></th></tr>\
         </thead><tbody>",
        esc(ns),
        esc(name),
        esc(consumer.spec.description.as_deref().unwrap_or("")),
        url_part(ns),
        url_part(name),
    );
    for key in &consumer.spec.keys {
        let kept = if key.generate {
            format!(
                "generated, Secret <code>{}</code>",
                esc(&key.generated_secret_name(name))
            )
        } else {
            let r = key.secret(name);
            format!(
                "Secret <code>{}</code>, key <code>{}</code>",
                esc(&r.name),
                esc(&r.key)
            )
        };
        let expires = match &key.expires_at {
            Some(t) if t.0 <= now => format!("{} (expired)", t.0),
            Some(t) => t.0.to_string(),
            None => "never".to_owned(),
        };
        let action = if key.generate && may_patch {
            format!(
                "<form method=\"post\" action=\"{base}/keys/{}/rotate\">{}<button>Rotate</button></form>",
                url_part(&key.name),
                csrf_field(&who.session.csrf)
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{kept}</td><td>{}</td><td>{action}</td></tr>",
            esc(&key.name),
            esc(&expires)
        );
    }
    out.push_str("</tbody></table>");
    if may_add && consumer.spec.keys.len() < MAX_KEYS {
        let id = esc(&format!("{ns}-{name}"));
        let _ = write!(
            out,
            "<form class=\"filters\" method=\"post\" action=\"{base}/keys\">{}\
             <div><label for=\"key-{id}\">New key's name</label>\
             <input id=\"key-{id}\" name=\"name\" required maxlength=\"63\" pattern=\"[a-z0-9]([-a-z0-9]*[a-z0-9])?\"></div>\
             <div><label for=\"expires-{id}\">Expires (RFC 3339, optional)</label>\
             <input id=\"expires-{id}\" name=\"expiresAt\" placeholder=\"2027-01-01T00:00:00Z\"></div>\
             <div><button>Generate a key</button></div></form>",
            csrf_field(&who.session.csrf)
        );
    }
    out.push_str("</section>");
    out
}

/// The consumer, read as the person; `None` when it is missing or they may not read it (the same
/// answer for both).
async fn consumer_as(who: &Who, ns: &str, name: &str) -> Result<Option<Consumer>, String> {
    match Api::<Consumer>::namespaced(who.client.clone(), ns)
        .get(name)
        .await
    {
        Ok(c) => Ok(Some(c)),
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404) => Ok(None),
        Err(e) => Err(api_message(&e)),
    }
}

/// The key value in a Secret built by [`keys::key_secret`].
fn value_of(secret: &Secret) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(DEFAULT_SECRET_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// `POST /consumers/<ns>/<name>/keys/<key>/rotate`.
pub async fn rotate(portal: &Portal, who: &mut Who, ns: &str, name: &str, key_name: &str) -> Reply {
    let back = "/consumers";
    if !is_namespace(ns) || !is_object_name(name) || !is_namespace(key_name) {
        return not_found(who);
    }
    let consumer = match consumer_as(who, ns, name).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(who),
        Err(message) => return outcome(who, "Not rotated", false, &message, back),
    };
    let Some(key) = consumer.spec.keys.iter().find(|k| k.name == key_name) else {
        return not_found(who);
    };
    if !key.generate {
        return outcome(
            who,
            "Not rotated",
            false,
            &format!(
                "Key {key_name} is kept in Secret {} that your team manages: change the value there.",
                key.secret(name).name
            ),
            back,
        );
    }
    let secret_name = key.generated_secret_name(name);
    let api = Api::<Secret>::namespaced(who.client.clone(), ns);
    let fresh = keys::new_key();
    // The previous value stays valid for the key's grace, kept as its digest. The person may not
    // read Secrets (values stay unreadable), so the digest comes from the controller's own copy; the
    // patch names that copy's resourceVersion, so a stale copy fails (409) instead of losing a key.
    let held = portal
        .store
        .lock()
        .secrets
        .objects
        .get(&tollgate_snapshot::ObjectRef::new(
            ns.to_owned(),
            secret_name.clone(),
        ))
        .cloned();
    let value = match held {
        Some(secret) => {
            let grace = key.rotation_grace();
            let patch = keys::rotation_patch(&secret, &fresh, Timestamp::now(), grace);
            match api
                .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => fresh,
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let message = "The key changed a moment ago; reload the page and try again.";
                    return outcome(who, "Not rotated", false, message, back);
                }
                Err(e) => return outcome(who, "Not rotated", false, &api_message(&e), back),
            }
        }
        // Not generated yet: the person creates it.
        None => {
            let secret = keys::key_secret(&consumer, &secret_name);
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => value_of(&secret),
                // It exists but the controller does not see it (no label): rotated with no previous
                // value, and labelled so that it is seen from now on.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let patch =
                        keys::rotation_patch(&Secret::default(), &fresh, Timestamp::now(), 0);
                    match api
                        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => fresh,
                        Err(e) => {
                            return outcome(who, "Not rotated", false, &api_message(&e), back);
                        }
                    }
                }
                Err(e) => return outcome(who, "Not rotated", false, &api_message(&e), back),
            }
        }
    };
    shown_once(who, ns, name, key_name, &value, "rotated")
}

/// `POST /consumers/<ns>/<name>/keys`: a new generated key.
pub async fn add(who: &mut Who, ns: &str, name: &str, form: &Fields) -> Reply {
    let back = "/consumers";
    if !is_namespace(ns) || !is_object_name(name) {
        return not_found(who);
    }
    let key_name = form.get("name").map(|n| n.trim()).unwrap_or("");
    if !is_namespace(key_name) {
        return outcome(
            who,
            "No key generated",
            false,
            "A key's name is 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit.",
            back,
        );
    }
    let expires_at = match form.get("expiresAt").map(|e| e.trim()).unwrap_or("") {
        "" => None,
        text => match text.parse::<Timestamp>() {
            Ok(t) => Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)),
            Err(_) => {
                return outcome(
                    who,
                    "No key generated",
                    false,
                    "The expiry is not an RFC 3339 instant such as 2027-01-01T00:00:00Z.",
                    back,
                );
            }
        },
    };
    let mut consumer = match consumer_as(who, ns, name).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(who),
        Err(message) => return outcome(who, "No key generated", false, &message, back),
    };
    if consumer.spec.keys.iter().any(|k| k.name == key_name) {
        return outcome(
            who,
            "No key generated",
            false,
            &format!("{ns}/{name} already has a key named {key_name}; rotate it instead."),
            back,
        );
    }
    if consumer.spec.keys.len() >= MAX_KEYS {
        return outcome(
            who,
            "No key generated",
            false,
            "A consumer holds at most 16 keys.",
            back,
        );
    }
    let key = ConsumerKey {
        name: key_name.to_owned(),
        secret_ref: None,
        generate: true,
        rotation_grace_seconds: None,
        expires_at,
    };
    // The Secret first, so the controller finds it and generates none of its own.
    let secret_name = key.generated_secret_name(name);
    let secret = keys::key_secret(&consumer, &secret_name);
    let secrets = Api::<Secret>::namespaced(who.client.clone(), ns);
    if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
        return outcome(who, "No key generated", false, &api_message(&e), back);
    }
    consumer.spec.keys.push(key);
    // `replace` carries the resourceVersion read above: a concurrent change makes it fail, not vanish.
    if let Err(e) = Api::<Consumer>::namespaced(who.client.clone(), ns)
        .replace(name, &PostParams::default(), &consumer)
        .await
    {
        let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
        return outcome(who, "No key generated", false, &api_message(&e), back);
    }
    shown_once(who, ns, name, key_name, &value_of(&secret), "generated")
}

/// The one page that shows a key's value: the answer to the form that made it.
fn shown_once(who: &Who, ns: &str, name: &str, key: &str, value: &str, what: &str) -> Reply {
    let body = format!(
        "<h1>Key {what}</h1><p class=\"notice ok\">Key <code>{}</code> of {}/{} was {what}. Copy it \
         now: it is shown this once and never again (the portal keeps no copy). {}</p>\
         <pre class=\"key\"><code id=\"new-key\">{}</code></pre><p><a href=\"/consumers\">Back</a></p>",
        esc(key),
        esc(ns),
        esc(name),
        if what == "rotated" {
            "The old value stops working, and the new one starts, once the proxies hold the next snapshot."
        } else {
            "It works once the proxies hold the next snapshot."
        },
        esc(value),
    );
    html_reply(
        hyper::StatusCode::OK,
        page(&format!("Key {what}"), Some(who.viewer()), &body),
    )
}
