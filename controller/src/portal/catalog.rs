//! The catalog: every Published and Deprecated route of the controller's snapshot, by team
//! (namespace), and Drafts for people who may `get` AIRoutes in the route's namespace; filtered by
//! team, stage, model and free text through GET parameters, so it works without JavaScript.

use std::{collections::BTreeSet, fmt::Write as _, sync::Arc};

use hyper::StatusCode;
use tollgate_snapshot::{Approval, Route, Stage};

use super::{
    Portal,
    html::{self, esc, url_part},
    http::{Fields, Reply, Who, html_reply},
    people::Access,
};
use crate::publish::Published;

/// The name a stage is shown and filtered by.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Draft => "Draft",
        Stage::Published => "Published",
        Stage::Deprecated => "Deprecated",
        Stage::Retired => "Retired",
    }
}

/// A Unix instant as a date (UTC), for sunsets.
pub fn date(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// `n` with its thousands separated by commas: `128,000`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The filters a catalog request asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this namespace.
    pub team: Option<String>,
    /// Only this stage.
    pub stage: Option<String>,
    /// Only routes serving a model whose name contains this.
    pub model: Option<String>,
    /// Only routes whose name or description contains this (case-insensitive).
    pub text: Option<String>,
}

impl Filter {
    /// The filters in `query` (empty values mean no filter).
    pub fn from_query(query: &Fields) -> Self {
        let get = |k: &str| {
            query
                .get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            team: get("team"),
            stage: get("stage"),
            model: get("model"),
            text: get("q"),
        }
    }

    /// Whether `route` passes (visibility is decided elsewhere).
    pub fn admits(&self, route: &Route) -> bool {
        self.team
            .as_deref()
            .is_none_or(|t| *route.id.namespace == *t)
            && self
                .stage
                .as_deref()
                .is_none_or(|s| stage_name(route.stage).eq_ignore_ascii_case(s))
            && self
                .model
                .as_deref()
                .is_none_or(|m| route.models.iter().any(|rm| rm.name.contains(m)))
            && self.text.as_deref().is_none_or(|q| {
                let q = q.to_lowercase();
                route.id.name.to_lowercase().contains(&q)
                    || route
                        .description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(&q))
            })
    }
}

/// Whether the person may see `route` at all: Published and Deprecated to everyone signed in,
/// Drafts to those who may `get` AIRoutes in its namespace, Retired to nobody.
pub async fn visible(who: &mut Who, route: &Route) -> bool {
    match route.stage {
        Stage::Published | Stage::Deprecated => true,
        Stage::Retired => false,
        Stage::Draft => {
            who.rights
                .may(Access::new("get", "airoutes", &route.id.namespace))
                .await
        }
    }
}

/// The current snapshot, if the controller has compiled one.
pub fn snapshot(portal: &Portal) -> Option<Arc<Published>> {
    portal.snapshots.borrow().clone()
}

/// `GET /`.
pub async fn page(portal: &Portal, who: &mut Who, query: &Fields) -> Reply {
    let filter = Filter::from_query(query);
    let Some(published) = snapshot(portal) else {
        return html_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            html::page(
                "Catalog",
                Some(who.viewer()),
                "<h1>Catalog</h1><p>The controller has not read the cluster yet; reload in a moment.</p>",
            ),
        );
    };
    let mut shown: Vec<&Route> = Vec::new();
    let mut teams = BTreeSet::new();
    for route in &published.snapshot.content.routes {
        if !visible(who, route).await {
            continue;
        }
        teams.insert(route.id.namespace.to_string());
        if filter.admits(route) {
            shown.push(route);
        }
    }
    shown.sort_by(|a, b| a.id.cmp(&b.id));

    let mut body = String::from("<h1>API catalog</h1>");
    body.push_str(&filters_form(&filter, &teams));
    if shown.is_empty() {
        body.push_str("<p>No API matches.</p>");
    }
    let mut team: Option<&str> = None;
    for route in shown {
        if team != Some(&*route.id.namespace) {
            team = Some(&route.id.namespace);
            let _ = write!(body, "<h2>Team {}</h2>", esc(&route.id.namespace));
        }
        body.push_str(&card(route));
    }
    html_reply(
        StatusCode::OK,
        html::page("Catalog", Some(who.viewer()), &body),
    )
}

fn filters_form(filter: &Filter, teams: &BTreeSet<String>) -> String {
    let option = |value: &str, label: &str, selected: bool| {
        format!(
            "<option value=\"{}\"{}>{}</option>",
            esc(value),
            if selected { " selected" } else { "" },
            esc(label)
        )
    };
    let mut team_options = option("", "all teams", filter.team.is_none());
    for t in teams {
        team_options.push_str(&option(t, t, filter.team.as_deref() == Some(t)));
    }
    let mut stage_options = option("", "any stage", filter.stage.is_none());
    for s in ["Published", "Deprecated", "Draft"] {
        stage_options.push_str(&option(s, s, filter.stage.as_deref() == Some(s)));
    }
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/\">\
         <label>Search<br><input name=\"q\" value=\"{}\"></label>\
         <label>Team<br><select name=\"team\">{team_options}</select></label>\
         <label>Stage<br><select name=\"stage\">{stage_options}</select></label>\
         <label>Model<br><input name=\"model\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        esc(filter.text.as_deref().unwrap_or("")),
        esc(filter.model.as_deref().unwrap_or("")),
    )
}

/// One route's summary.
pub fn card(route: &Route) -> String {
    let mut out = String::new();
    let stage = stage_name(route.stage);
    let _ = write!(
        out,
        "<section class=\"card route\"><h3><a href=\"/apis/{}/{}\">{}</a> \
         <span class=\"stage stage-{stage}\">{stage}</span>",
        url_part(&route.id.namespace),
        url_part(&route.id.name),
        esc(&route.id.name),
    );
    // A Deprecated route without a date of its own has one from its creation (or 0): not worth showing.
    if let Some(d) = route.deprecation_unix.filter(|&d| d > 0) {
        let _ = write!(
            out,
            " <span class=\"muted\">deprecated {}</span>",
            esc(&date(d))
        );
    }
    if let Some(s) = route.sunset_unix {
        let _ = write!(
            out,
            " <span class=\"muted\">sunset {}</span>",
            esc(&date(s))
        );
    }
    out.push_str("</h3>");
    if let Some(d) = &route.description {
        let _ = write!(out, "<p class=\"description\">{}</p>", esc(d));
    }
    out.push_str("<table><tbody>");
    let _ = write!(
        out,
        "<tr><th>Approval</th><td>{}</td></tr>",
        match route.approval {
            Approval::Manual => "Manual: the owning team approves each request",
            Approval::Automatic => "Automatic",
        }
    );
    let models: Vec<String> = route
        .models
        .iter()
        .map(|m| {
            let price = m
                .backends
                .first()
                .map(|b| {
                    format!(
                        " <span class=\"muted\">(${} in / ${} out per million tokens)</span>",
                        b.price.input_per_million, b.price.output_per_million
                    )
                })
                .unwrap_or_default();
            let window = m
                .context_window
                .map(|w| {
                    format!(
                        " <span class=\"context\">{} tokens of context</span>",
                        grouped(w)
                    )
                })
                .unwrap_or_default();
            format!("<code>{}</code>{price}{window}", esc(&m.name))
        })
        .collect();
    if !models.is_empty() {
        let _ = write!(
            out,
            "<tr><th>Models</th><td>{}</td></tr>",
            models.join("<br>")
        );
    }
    if !route.prompts.is_empty() {
        let prompts: Vec<String> = route
            .prompts
            .iter()
            .map(|p| format!("<code>{}</code>", esc(&p.name)))
            .collect();
        let _ = write!(
            out,
            "<tr><th>Prompt APIs</th><td>{}</td></tr>",
            prompts.join(", ")
        );
    }
    if let Some(rest) = &route.rest {
        let ops: Vec<String> = rest
            .operations
            .iter()
            .map(|o| format!("<code>{} /api{}</code>", esc(&o.method), esc(&o.path)))
            .collect();
        let _ = write!(
            out,
            "<tr><th>REST operations</th><td>{}</td></tr>",
            ops.join("<br>")
        );
    }
    let own_tools = tollgate_snapshot::mcp_tools::route_tools(route).len();
    if own_tools > 0 || !route.mcp_servers.is_empty() {
        let mut tools = format!(
            "{own_tools} tool{} at <code>{}/mcp</code>",
            if own_tools == 1 { "" } else { "s" },
            esc(&route.prefix)
        );
        match route.mcp_servers.len() {
            0 => {}
            1 => tools.push_str(", and those of 1 upstream MCP server"),
            n => {
                let _ = write!(tools, ", and those of {n} upstream MCP servers");
            }
        }
        let _ = write!(out, "<tr><th>MCP tools</th><td>{tools}</td></tr>");
    }
    let mut limits = Vec::new();
    if let Some(r) = route.limits.requests_per_minute {
        limits.push(format!("{r} requests/min"));
    }
    if let Some(t) = route.limits.tokens_per_minute {
        limits.push(format!("{t} tokens/min"));
    }
    if let Some(m) = route.budget.monthly_micro_usd {
        limits.push(format!("${:.2}/month", m as f64 / 1e6));
    }
    if let Some(d) = route.budget.daily_micro_usd {
        limits.push(format!("${:.2}/day", d as f64 / 1e6));
    }
    if !limits.is_empty() {
        let _ = write!(
            out,
            "<tr><th>Default limits</th><td>{}</td></tr>",
            esc(&limits.join(", "))
        );
    }
    let mut total = Vec::new();
    if let Some(r) = route.total_limits.requests_per_minute {
        total.push(format!("{r} requests/min"));
    }
    if let Some(t) = route.total_limits.tokens_per_minute {
        total.push(format!("{t} tokens/min"));
    }
    if !total.is_empty() {
        let _ = write!(
            out,
            "<tr><th>All callers together</th><td>{}</td></tr>",
            esc(&total.join(", "))
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::http::fields;

    fn route(ns: &str, name: &str, stage: Stage, description: &str) -> Route {
        serde_json::from_value(serde_json::json!({
            "id": {"namespace": ns, "name": name},
            "prefix": format!("/{name}"),
            "hostnames": [],
            "stage": stage,
            "sunset_unix": null,
            "models": [{"name": "fake-chat", "backends": [], "fallbacks": []}],
            "limits": {"requests_per_minute": null, "tokens_per_minute": null},
            "approval": "Manual",
            "description": description,
        }))
        .expect("a route row")
    }

    #[test]
    fn filters_combine() {
        let r = route("team-a", "chat", Stage::Published, "Talk to a model");
        let f = |q: &str| Filter::from_query(&fields(q.as_bytes()));
        assert!(f("").admits(&r));
        assert!(f("team=team-a&stage=published&model=chat&q=TALK").admits(&r));
        assert!(!f("team=team-b").admits(&r));
        assert!(!f("stage=Deprecated").admits(&r));
        assert!(!f("model=gpt").admits(&r));
        assert!(!f("q=weather").admits(&r));
        assert!(f("team=&q=").admits(&r), "empty values filter nothing");
    }

    #[test]
    fn a_card_shows_markup_as_text() {
        let r = route(
            "team-a",
            "chat",
            Stage::Published,
            "<script>alert(1)</script>",
        );
        let html = card(&r);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("href=\"/apis/team-a/chat\""));
    }

    #[test]
    fn a_card_shows_context_windows_where_known() {
        let mut r = route("team-a", "chat", Stage::Published, "chat");
        r.models.push(r.models[0].clone());
        r.models[0].context_window = Some(128_000);
        let html = card(&r);
        assert!(
            html.contains(
                "<code>fake-chat</code> <span class=\"context\">128,000 tokens of context</span><br><code>fake-chat</code></td>"
            ),
            "{html}"
        );
    }

    #[test]
    fn a_card_shows_the_routes_total_beside_its_default_limits() {
        let mut r = route("team-a", "chat", Stage::Published, "chat");
        assert!(!card(&r).contains("All callers together"));
        r.limits.requests_per_minute = Some(60);
        r.total_limits.requests_per_minute = Some(600);
        r.total_limits.tokens_per_minute = Some(100_000);
        let html = card(&r);
        assert!(
            html.contains("<tr><th>Default limits</th><td>60 requests/min</td></tr><tr><th>All callers together</th><td>600 requests/min, 100000 tokens/min</td></tr>"),
            "{html}"
        );
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(8_192), "8,192");
        assert_eq!(grouped(1_050_000), "1,050,000");
    }

    #[test]
    fn a_card_shows_the_deprecation_and_sunset_dates() {
        let mut r = route("team-a", "chat", Stage::Deprecated, "chat");
        r.deprecation_unix = Some(1_782_864_000);
        r.sunset_unix = Some(1_798_761_599);
        let html = card(&r);
        assert!(
            html.contains(
                "<span class=\"muted\">deprecated 2026-07-01</span> <span class=\"muted\">sunset 2026-12-31</span>"
            ),
            "{html}"
        );
    }

    #[test]
    fn sunsets_are_dates() {
        assert_eq!(date(1_798_761_599), "2026-12-31");
    }
}
