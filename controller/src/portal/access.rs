//! Asking for access and deciding on it, each made as the signed-in person with their own token:
//! the request form's consumers, `POST .../subscribe` (creates an ApiSubscription), "My
//! subscriptions", the approvals inbox and `POST /approvals/<ns>/<name>` (sets the decision). The
//! API server's answer — an RBAC refusal, the approval policy's denial — is shown as it is.

use std::{collections::BTreeSet, fmt::Write as _};

use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tollgate_crds::{ApiSubscription, Phase};

use super::{
    Portal,
    html::{csrf_field, esc, page, url_part},
    http::{Fields, Reply, Who, html_reply, outcome},
    people::Access,
};

/// The annotation that keeps the reason a person gave when asking for access.
pub const REASON_ANNOTATION: &str = "tollgate.dev/request-reason";
/// The annotation that names who asked, as TokenReview named them.
pub const REQUESTER_ANNOTATION: &str = "tollgate.dev/requested-by";
/// Longest reason kept.
const MAX_REASON_CHARS: usize = 1024;

/// A consumer, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumerRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Consumers (from the controller's view) in namespaces where the person may create ApiSubscriptions.
pub async fn my_consumers(portal: &Portal, who: &mut Who) -> Vec<ConsumerRef> {
    let all: Vec<ConsumerRef> = portal
        .store
        .lock()
        .consumers
        .objects
        .keys()
        .map(|id| ConsumerRef {
            namespace: id.namespace.to_string(),
            name: id.name.to_string(),
        })
        .collect();
    let mut mine = Vec::new();
    for c in all {
        if who
            .rights
            .may(Access::new("create", "apisubscriptions", &c.namespace))
            .await
        {
            mine.push(c);
        }
    }
    mine
}

/// Whether `text` is a Kubernetes namespace name (a DNS label), so it can go into an API path.
pub(super) fn is_namespace(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Whether `text` is a Kubernetes object name (a DNS subdomain).
pub(super) fn is_object_name(text: &str) -> bool {
    (1..=253).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The name a new subscription gets: consumer, route namespace and route, cut to a valid length.
fn subscription_name(consumer: &str, route_ns: &str, route: &str) -> String {
    let mut name = format!("{consumer}-{route_ns}-{route}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// `POST /apis/<ns>/<name>/subscribe`: creates the ApiSubscription as the person.
pub async fn subscribe(
    _portal: &Portal,
    who: &mut Who,
    route_ns: &str,
    route: &str,
    form: &Fields,
) -> Reply {
    let back = format!("/apis/{}/{}", url_part(route_ns), url_part(route));
    let Some((ns, consumer)) = form
        .get("consumer")
        .and_then(|c| c.split_once('/'))
        .filter(|(ns, name)| is_namespace(ns) && is_object_name(name))
    else {
        return outcome(who, "Request not sent", false, "Choose a consumer.", &back);
    };
    if !is_namespace(route_ns) || !is_object_name(route) {
        return outcome(who, "Request not sent", false, "No such API.", "/");
    }
    let reason: String = form
        .get("reason")
        .map(|r| r.trim().chars().take(MAX_REASON_CHARS).collect())
        .unwrap_or_default();
    let name = subscription_name(consumer, route_ns, route);
    let object = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "ApiSubscription",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {REASON_ANNOTATION: reason, REQUESTER_ANNOTATION: who.session.user},
        },
        "spec": {"consumer": consumer, "route": {"name": route, "namespace": route_ns}},
    });
    let object: ApiSubscription = match serde_json::from_value(object) {
        Ok(o) => o,
        Err(e) => {
            return outcome(who, "Request not sent", false, &e.to_string(), &back);
        }
    };
    let api = Api::<ApiSubscription>::namespaced(who.client.clone(), ns);
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => outcome(
            who,
            "Access requested",
            true,
            &format!(
                "Created ApiSubscription {ns}/{name}. It is Pending until the route's owners decide; \
                 follow it under My subscriptions."
            ),
            "/subscriptions",
        ),
        Err(e) => outcome(who, "Request refused", false, &api_message(&e), &back),
    }
}

/// The API server's own words for a failed call.
pub(super) fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn phase_of(s: &ApiSubscription) -> &'static str {
    s.status
        .as_ref()
        .and_then(|st| st.phase)
        .map(Phase::as_str)
        .unwrap_or("Pending")
}

fn annotation<'a>(s: &'a ApiSubscription, key: &str) -> &'a str {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .unwrap_or("")
}

fn route_of(s: &ApiSubscription) -> (String, String) {
    let ns = s
        .spec
        .route
        .namespace
        .clone()
        .or_else(|| s.metadata.namespace.clone())
        .unwrap_or_default();
    (ns, s.spec.route.name.clone())
}

/// `GET /subscriptions`: subscriptions in the namespaces where the person may list them, read with
/// their token.
pub async fn mine(portal: &Portal, who: &mut Who) -> Reply {
    let namespaces: BTreeSet<String> = {
        let t = portal.store.lock();
        t.consumers
            .objects
            .keys()
            .chain(t.subscriptions.objects.keys())
            .map(|id| id.namespace.to_string())
            .collect()
    };
    let mut rows = Vec::new();
    let mut errors = String::new();
    for ns in namespaces {
        if !who
            .rights
            .may(Access::new("list", "apisubscriptions", &ns))
            .await
        {
            continue;
        }
        match Api::<ApiSubscription>::namespaced(who.client.clone(), &ns)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => rows.extend(list.items),
            Err(e) => {
                let _ = write!(
                    errors,
                    "<p class=\"notice error\">{}</p>",
                    esc(&api_message(&e))
                );
            }
        }
    }
    let mut body = String::from("<h1>My subscriptions</h1>");
    body.push_str(&errors);
    if rows.is_empty() {
        body.push_str(
            "<p>You have no subscriptions yet. Find an API in the catalog and request access.</p>",
        );
    } else {
        body.push_str(
            "<table><thead><tr><th>Subscription</th><th>Consumer</th><th>API</th><th>Phase</th>\
             <th>Your reason</th><th>Decision reason</th><th>Usage this month</th></tr></thead><tbody>",
        );
        let today = crate::usage::history::today(k8s_openapi::jiff::Timestamp::now());
        for s in &rows {
            let (rns, rname) = route_of(s);
            // This month's bucket, not the window totals: those stay at last month's until the
            // first call of a new month is written.
            let usage = s
                .status
                .as_ref()
                .and_then(|st| st.usage.as_ref())
                .map(|u| {
                    let month = &super::chart::last_months(Some(u), today, 1)[0].amount;
                    format!(
                        "{} requests, {} tokens, ${}",
                        month.requests,
                        month.input_tokens.saturating_add(month.output_tokens),
                        crate::usage::history::dollars(month.cost_micros)
                    )
                })
                .unwrap_or_default();
            let phase = phase_of(s);
            let _ = write!(
                body,
                "<tr><td>{}/{}</td><td>{}</td><td><a href=\"/apis/{}/{}\">{}/{}</a></td>\
                 <td class=\"phase-{phase}\">{phase}</td><td>{}</td><td>{}</td>\
                 <td><a href=\"/usage/subscriptions/{}/{}\">{}</a></td></tr>",
                esc(s.metadata.namespace.as_deref().unwrap_or("")),
                esc(s.metadata.name.as_deref().unwrap_or("")),
                esc(&s.spec.consumer),
                url_part(&rns),
                url_part(&rname),
                esc(&rns),
                esc(&rname),
                esc(annotation(s, REASON_ANNOTATION)),
                esc(s.spec.decision_reason.as_deref().unwrap_or("")),
                url_part(s.metadata.namespace.as_deref().unwrap_or("")),
                url_part(s.metadata.name.as_deref().unwrap_or("")),
                esc(if usage.is_empty() { "history" } else { &usage }),
            );
        }
        body.push_str("</tbody></table>");
    }
    html_reply(
        hyper::StatusCode::OK,
        page("My subscriptions", Some(who.viewer()), &body),
    )
}

/// `GET /approvals`: subscriptions to routes the person may approve, and their own team's requests
/// (whose decision the API server will refuse them unless they hold `approve`), pending first.
pub async fn approvals(portal: &Portal, who: &mut Who) -> Reply {
    let all: Vec<ApiSubscription> = portal
        .store
        .lock()
        .subscriptions
        .objects
        .values()
        .map(|s| ApiSubscription::clone(s))
        .collect();
    let mut shown = Vec::new();
    for s in all {
        let (rns, rname) = route_of(&s);
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let approver = who
            .rights
            .may(Access::new("approve", "airoutes", &rns).named(&rname))
            .await;
        if approver
            || who
                .rights
                .may(Access::new("create", "apisubscriptions", &ns))
                .await
        {
            shown.push(s);
        }
    }
    // Pending first, then by namespace and name.
    shown.sort_by_key(|s| {
        (
            phase_of(s) != "Pending",
            s.metadata.namespace.clone(),
            s.metadata.name.clone(),
        )
    });
    let mut body = String::from("<h1>Approvals</h1>");
    if shown.is_empty() {
        body.push_str("<p>Nothing for you to decide.</p>");
    }
    for s in &shown {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        let name = s.metadata.name.as_deref().unwrap_or("");
        let (rns, rname) = route_of(s);
        let phase = phase_of(s);
        let _ = write!(
            body,
            "<section class=\"card approval\"><h3>{}/{} <span class=\"phase-{phase}\">{phase}</span></h3>\
             <p>Consumer <code>{}</code> asks for <a href=\"/apis/{}/{}\">{}/{}</a>.</p>\
             <p>Requested by {}: “{}”</p>",
            esc(ns),
            esc(name),
            esc(&s.spec.consumer),
            url_part(&rns),
            url_part(&rname),
            esc(&rns),
            esc(&rname),
            esc(annotation(s, REQUESTER_ANNOTATION)),
            esc(annotation(s, REASON_ANNOTATION)),
        );
        if let Some(r) = &s.spec.decision_reason {
            let _ = write!(body, "<p>Decision reason: {}</p>", esc(r));
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/approvals/{}/{}\">{}\
             <label for=\"reason-{i}\">Reason</label><textarea id=\"reason-{i}\" name=\"reason\" maxlength=\"1024\"></textarea>\
             <button name=\"decision\" value=\"Approved\">Approve</button> \
             <button name=\"decision\" value=\"Rejected\">Reject</button> \
             <button name=\"decision\" value=\"Revoked\">Revoke</button></form></section>",
            url_part(ns),
            url_part(name),
            csrf_field(&who.session.csrf),
            i = esc(&format!("{ns}-{name}")),
        );
    }
    html_reply(
        hyper::StatusCode::OK,
        page("Approvals", Some(who.viewer()), &body),
    )
}

/// `POST /approvals/<ns>/<name>`: sets the decision as the person.
pub async fn decide(_portal: &Portal, who: &mut Who, ns: &str, name: &str, form: &Fields) -> Reply {
    if !is_namespace(ns) || !is_object_name(name) {
        return outcome(
            who,
            "Not decided",
            false,
            "No such subscription.",
            "/approvals",
        );
    }
    let decision = match form.get("decision").map(String::as_str) {
        Some(d @ ("Approved" | "Rejected" | "Revoked")) => d.to_owned(),
        _ => {
            return outcome(
                who,
                "Not decided",
                false,
                "Choose Approve, Reject or Revoke.",
                "/approvals",
            );
        }
    };
    let reason: String = form
        .get("reason")
        .map(|r| r.trim().chars().take(MAX_REASON_CHARS).collect())
        .unwrap_or_default();
    let mut spec = json!({"decision": decision});
    if !reason.is_empty() {
        spec["decisionReason"] = json!(reason);
    }
    let patch = json!({"spec": spec});
    match Api::<ApiSubscription>::namespaced(who.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => outcome(
            who,
            "Decided",
            true,
            &format!("ApiSubscription {ns}/{name}: {decision}."),
            "/approvals",
        ),
        Err(e) => outcome(who, "Refused", false, &api_message(&e), "/approvals"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_names_reach_an_api_path() {
        assert!(is_namespace("team-a"));
        assert!(!is_namespace("team/../kube-system"));
        assert!(!is_namespace("Team"));
        assert!(!is_namespace(""));
        assert!(is_object_name("app.v2-x"));
        assert!(!is_object_name("../secrets"));
        assert!(!is_object_name("a/b"));
        assert!(!is_object_name("-a"));
    }

    #[test]
    fn subscription_names_stay_valid() {
        assert_eq!(
            subscription_name("app", "team-a", "chat"),
            "app-team-a-chat"
        );
        let long = "a".repeat(200);
        let name = subscription_name(&long, "team-a", &long);
        assert!(name.len() <= 253);
    }
}
