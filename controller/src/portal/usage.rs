//! Usage pages: `GET /usage` (the person's subscriptions, consumers and routes with this month's
//! numbers) and `GET /usage/<kind>/<ns>/<name>` (31 days and 12 months as charts, numbers beside).
//! Every object is read with the person's own token, so they see the usage of exactly what RBAC lets
//! them read; one they may not read answers the same 404 as one that does not exist.

use std::{collections::BTreeSet, fmt::Write as _};

use k8s_openapi::{NamespaceResourceScope, jiff::Timestamp};
use kube::{Api, api::ListParams};
use tollgate_crds::{AIRoute, ApiSubscription, Consumer, Usage};

use super::{
    Portal,
    access::api_message,
    chart,
    html::{esc, page, url_part},
    http::{Reply, Who, html_reply, not_found},
    people::Access,
};
use crate::usage::{WithUsage, history};
use serde::de::DeserializeOwned;

/// Whose usage a page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// One subscription.
    Subscription,
    /// A consumer: all its subscriptions.
    Consumer,
    /// A route: all subscriptions to it.
    Route,
}

impl Owner {
    const ALL: [Owner; 3] = [Owner::Subscription, Owner::Consumer, Owner::Route];

    /// From the path segment.
    pub fn from_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.segment() == segment)
    }

    fn segment(self) -> &'static str {
        match self {
            Self::Subscription => "subscriptions",
            Self::Consumer => "consumers",
            Self::Route => "routes",
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Self::Subscription => "apisubscriptions",
            Self::Consumer => "consumers",
            Self::Route => "airoutes",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Subscription => "Subscription",
            Self::Consumer => "Consumer",
            Self::Route => "API",
        }
    }

    /// `(name, usage)` of every object of this kind in `ns`, listed with the person's token.
    async fn list(self, who: &Who, ns: &str) -> kube::Result<Vec<(String, Option<Usage>)>> {
        match self {
            Self::Subscription => list_of::<ApiSubscription>(who, ns).await,
            Self::Consumer => list_of::<Consumer>(who, ns).await,
            Self::Route => list_of::<AIRoute>(who, ns).await,
        }
    }

    /// One object's usage, read with the person's token.
    async fn get(self, who: &Who, ns: &str, name: &str) -> kube::Result<Option<Usage>> {
        match self {
            Self::Subscription => get_of::<ApiSubscription>(who, ns, name).await,
            Self::Consumer => get_of::<Consumer>(who, ns, name).await,
            Self::Route => get_of::<AIRoute>(who, ns, name).await,
        }
    }
}

/// What the typed reads below need of a kind.
trait Kind:
    kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + WithUsage
{
}

impl<K> Kind for K where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + WithUsage
{
}

async fn list_of<K: Kind>(who: &Who, ns: &str) -> kube::Result<Vec<(String, Option<Usage>)>> {
    Ok(Api::<K>::namespaced(who.client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|o| {
            (
                o.meta().name.clone().unwrap_or_default(),
                o.usage().cloned(),
            )
        })
        .collect())
}

async fn get_of<K: Kind>(who: &Who, ns: &str, name: &str) -> kube::Result<Option<Usage>> {
    Ok(Api::<K>::namespaced(who.client.clone(), ns)
        .get(name)
        .await?
        .usage()
        .cloned())
}

/// `GET /usage`.
pub async fn index(portal: &Portal, who: &mut Who) -> Reply {
    let namespaces: BTreeSet<String> = {
        let t = portal.store.lock();
        t.consumers
            .objects
            .keys()
            .chain(t.subscriptions.objects.keys())
            .chain(t.routes.objects.keys())
            .map(|id| id.namespace.to_string())
            .collect()
    };
    let today = history::today(Timestamp::now());
    let mut body = String::from(
        "<h1>Usage</h1><p class=\"muted\">Requests, tokens and cost of what you may read, counted \
         by the proxies and rolled up by the controller every few seconds. This month is the UTC \
         calendar month.</p>",
    );
    for owner in Owner::ALL {
        let mut rows = String::new();
        for ns in &namespaces {
            if !who
                .rights
                .may(Access::new("list", owner.resource(), ns))
                .await
            {
                continue;
            }
            match owner.list(who, ns).await {
                Ok(items) => {
                    for (name, usage) in items {
                        let month = &chart::last_months(usage.as_ref(), today, 1)[0].amount;
                        let _ = write!(
                            rows,
                            "<tr><td><a href=\"/usage/{}/{}/{}\">{}/{}</a></td><td>{}</td><td>{}</td>\
                             <td>{}</td></tr>",
                            owner.segment(),
                            url_part(ns),
                            url_part(&name),
                            esc(ns),
                            esc(&name),
                            month.requests,
                            month.input_tokens.saturating_add(month.output_tokens),
                            history::dollars(month.cost_micros),
                        );
                    }
                }
                Err(e) => {
                    let _ = write!(
                        body,
                        "<p class=\"notice error\">{}</p>",
                        esc(&api_message(&e))
                    );
                }
            }
        }
        let _ = write!(body, "<h2>{}s</h2>", owner.noun());
        if rows.is_empty() {
            body.push_str("<p>None you may read.</p>");
        } else {
            let _ = write!(
                body,
                "<table class=\"usage-{}\"><thead><tr><th>{}</th><th>Requests this month</th>\
                 <th>Tokens this month</th><th>Cost this month (USD)</th></tr></thead><tbody>{rows}\
                 </tbody></table>",
                owner.segment(),
                owner.noun()
            );
        }
    }
    html_reply(
        hyper::StatusCode::OK,
        page("Usage", Some(who.viewer()), &body),
    )
}

/// `GET /usage/<kind>/<ns>/<name>`.
pub async fn detail(who: &mut Who, owner: Owner, ns: &str, name: &str) -> Reply {
    let usage = match owner.get(who, ns, name).await {
        Ok(usage) => usage,
        // Forbidden and missing look the same.
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404) => return not_found(who),
        Err(e) => {
            let body = format!(
                "<h1>Usage</h1><p class=\"notice error\">{}</p>",
                esc(&api_message(&e))
            );
            return html_reply(
                hyper::StatusCode::BAD_GATEWAY,
                page("Usage", Some(who.viewer()), &body),
            );
        }
    };
    let today = history::today(Timestamp::now());
    let title = format!("{} {ns}/{name}", owner.noun());
    let scope = match owner {
        Owner::Subscription => "This subscription's calls.",
        Owner::Consumer => "All calls of this consumer's subscriptions.",
        Owner::Route => "All calls to this API, from every subscription.",
    };
    let body = format!(
        "<h1>Usage: {}</h1><p class=\"muted\">{scope} <a href=\"/usage\">All usage</a></p>{}",
        esc(&title),
        chart::section(usage.as_ref(), today)
    );
    html_reply(
        hyper::StatusCode::OK,
        page(&format!("Usage of {title}"), Some(who.viewer()), &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_name_the_three_kinds() {
        for owner in Owner::ALL {
            assert_eq!(Owner::from_segment(owner.segment()), Some(owner));
        }
        assert_eq!(Owner::from_segment("secrets"), None);
    }
}
