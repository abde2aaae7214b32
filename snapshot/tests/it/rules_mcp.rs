//! Compiling `MCPServer`s: each gets its own verdict; a route that attaches one carries it with the
//! route's tool prefix and filter; missing, unshared and broken servers and bad filters are reported
//! in the route's `MCPServersValid` condition while the route's other servers stay offered.

use serde_json::{Value, json};
use tollgate_crds::MCPServer;
use tollgate_crds::condition_type::{ACCEPTED, MCP_SERVERS_VALID, READY, RESOLVED_REFS};
use tollgate_snapshot::{Inputs, Kind, ToolFilter};

use crate::support::*;

fn server(ns: &str, name: &str, spec: Value) -> MCPServer {
    serde_json::from_value(json!({
        "apiVersion": "tollgate.dev/v1alpha1", "kind": "MCPServer",
        "metadata": { "namespace": ns, "name": name, "generation": 1 },
        "spec": spec,
    }))
    .unwrap()
}

/// Team A whose route attaches `servers` (its `spec.mcp.servers`).
fn attach(servers: Value, objects: Vec<MCPServer>) -> Inputs {
    let mut inputs = team_a();
    let mut spec = serde_json::to_value(&inputs.routes[0].spec).unwrap();
    spec["mcp"] = json!({ "servers": servers });
    inputs.routes[0].spec = serde_json::from_value(spec).unwrap();
    inputs.mcp_servers = objects;
    inputs
}

#[test]
fn an_attached_server_is_carried_with_its_credential_prefix_and_filter() {
    let mut inputs = attach(
        json!([{ "name": "search", "toolPrefix": "s_", "tools": { "include": ["query"] } }]),
        vec![server(
            "team-a",
            "search",
            json!({
                "url": "http://127.0.0.1:9/mcp/",
                "credentials": { "secretRef": { "name": "search-key" }, "header": "X-Token", "prefix": "t " },
                "forwardHeaders": ["X-Tenant", "x-tenant"],
                "timeouts": { "connect": "2s", "firstByte": "30s" },
            }),
        )],
    );
    inputs
        .secrets
        .push(secret("team-a", "search-key", &[("apiKey", "s3cret")]));
    let compiled = run(&inputs);
    let v = verdict(&compiled, Kind::MCPServer, "team-a", "search");
    for c in [ACCEPTED, RESOLVED_REFS, READY] {
        assert!(cond(v, c).0, "{c}: {:?}", cond(v, c));
    }
    let (ok, _, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        MCP_SERVERS_VALID,
    );
    assert!(ok, "{message}");
    let s = &compiled.snapshot.content.routes[0].mcp_servers;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].url, "http://127.0.0.1:9/mcp");
    let credential = s[0].credential.as_ref().unwrap();
    assert_eq!(credential.header, "x-token");
    assert_eq!(credential.value.0, "t s3cret");
    assert_eq!(s[0].forward_headers, ["x-tenant"]);
    assert_eq!(s[0].timeouts.connect_ms, 2000);
    assert_eq!(s[0].offered_name("query").as_deref(), Some("s_query"));
    assert_eq!(s[0].offered_name("delete"), None);
    // The status names no secret.
    let status = v.status_json(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-01T00:00:00Z".parse().unwrap(),
    ));
    assert!(!status.to_string().contains("s3cret"));
}

#[test]
fn missing_unshared_and_broken_servers_are_reported_on_the_route_and_the_others_kept() {
    let shared = server(
        "tools",
        "shared",
        json!({ "url": "http://a/mcp", "allowedNamespaces": ["team-a"] }),
    );
    let private = server("tools", "private", json!({ "url": "http://b/mcp" }));
    let no_secret = server(
        "team-a",
        "keyless",
        json!({ "url": "http://c/mcp", "credentials": { "secretRef": { "name": "gone" } } }),
    );
    let compiled = run(&attach(
        json!([
            { "name": "shared", "namespace": "tools", "tools": { "includeRegex": "get_.*" } },
            { "name": "private", "namespace": "tools" },
            { "name": "nowhere" },
            { "name": "keyless" },
            { "name": "shared", "namespace": "tools", "toolPrefix": "x_", "tools": { "includeRegex": "(" } },
        ]),
        vec![shared, private, no_secret],
    ));
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        MCP_SERVERS_VALID,
    );
    assert!(!ok);
    assert_eq!(reason, "InvalidMCPServers");
    for part in [
        "MCPServer tools/private does not list namespace team-a in spec.allowedNamespaces",
        "MCPServer team-a/nowhere does not exist",
        "MCPServer team-a/keyless: it is not usable",
        "The tool filter of MCPServer tools/shared: includeRegex does not compile",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
    // The route itself is still served, with the one server that works.
    assert!(cond(verdict(&compiled, Kind::AIRoute, "team-a", "chat"), READY).0);
    let s = &compiled.snapshot.content.routes[0].mcp_servers;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].id.to_string(), "tools/shared");
    assert!(matches!(s[0].filter, ToolFilter::Matching(_)));
    // Anchored at both ends.
    assert!(s[0].filter.offers("get_item"));
    assert!(!s[0].filter.offers("forget_item"));
    let keyless = verdict(&compiled, Kind::MCPServer, "team-a", "keyless");
    let (resolved, reason, _) = cond(keyless, RESOLVED_REFS);
    assert!(!resolved);
    assert_eq!(reason, "SecretNotFound");
    assert!(!cond(keyless, READY).0);
}

/// The whole name must match the whole expression: an alternation is anchored as one, and a source
/// that only compiles once wrapped is still refused.
#[test]
fn a_regex_filter_matches_whole_names_across_alternatives() {
    let filter = |regex: &str| {
        let compiled = run(&attach(
            json!([{ "name": "s", "tools": { "includeRegex": regex } }]),
            vec![server("team-a", "s", json!({ "url": "http://a/mcp" }))],
        ));
        let servers = &compiled.snapshot.content.routes[0].mcp_servers;
        servers.first().map(|s| s.filter.clone())
    };
    let f = filter("a|ab").unwrap();
    assert!(f.offers("a"));
    assert!(f.offers("ab"));
    assert!(!f.offers("abc"));
    assert!(!f.offers("xab"));
    assert!(filter("a)|(b").is_none());
}

#[test]
fn a_server_that_would_forward_the_callers_key_is_not_accepted() {
    let compiled = run(&attach(
        json!([{ "name": "leaky" }]),
        vec![server(
            "team-a",
            "leaky",
            json!({ "url": "http://a/mcp", "forwardHeaders": ["Authorization"] }),
        )],
    ));
    let v = verdict(&compiled, Kind::MCPServer, "team-a", "leaky");
    let (ok, _, message) = cond(v, ACCEPTED);
    assert!(!ok);
    assert!(message.contains("authorization"), "{message}");
    assert!(compiled.snapshot.content.routes[0].mcp_servers.is_empty());
}

#[test]
fn routes_without_servers_hash_as_before_and_servers_survive_encoding() {
    let plain = run(&team_a());
    let with_unused = run(&Inputs {
        mcp_servers: vec![server("team-a", "idle", json!({ "url": "http://a/mcp" }))],
        ..team_a()
    });
    assert_eq!(
        plain.snapshot.content.routes[0],
        with_unused.snapshot.content.routes[0]
    );
    assert_eq!(plain.snapshot.encode(), with_unused.snapshot.encode());
    let compiled = run(&attach(
        json!([{ "name": "idle", "tools": { "includeRegex": "a|b" } }]),
        vec![server("team-a", "idle", json!({ "url": "http://a/mcp" }))],
    ));
    let back = tollgate_snapshot::Snapshot::decode(&compiled.snapshot.encode()).unwrap();
    assert_eq!(
        back.content.routes[0].mcp_servers,
        compiled.snapshot.content.routes[0].mcp_servers
    );
}
