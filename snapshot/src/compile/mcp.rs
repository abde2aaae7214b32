//! `MCPServer` → [`McpServer`]: the endpoint checked, the credential read from its Secret, the
//! forwarded headers and timeouts checked, once per server; then attached to every route that names
//! it in `spec.mcp.servers` and may use it, with the route's tool prefix and filter.
//!
//! A server gets its own verdict (Accepted, ResolvedRefs, Ready); what keeps a route from using one
//! (it does not exist, is not shared with the route's namespace, is broken, or the route's filter
//! does not compile) is reported in the route's `MCPServersValid` condition.

use tollgate_crds::{MCPServer, McpServerRef, condition_type};

use super::sharing::Sharing;

use super::objects::{Item, sentences};
use super::provider::timeouts_from;
use super::rest::{Problem, header_credential, is_token_byte, normalize_url};
use super::secrets::Secrets;
use crate::fx::{FxHashMap, map_with_capacity};
use crate::model::{McpServer, Pattern, ToolFilter};
use crate::verdict::{Detail, Kind, McpServerDetail, Verdict, VerdictCondition};

/// Headers that are never passed on, whatever a server's spec says: the caller's key and the
/// gateway's own session with the server. The CRD refuses them too; this is for standalone files.
const NEVER_FORWARDED: [&str; 17] = [
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "proxy-authorization",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

struct Entry<'a> {
    /// The server, or why it cannot be used.
    compiled: Result<McpServer, String>,
    sharing: Sharing<'a>,
}

/// Every `MCPServer` by namespace/name.
#[derive(Default)]
pub(crate) struct McpServerTable<'a> {
    by_id: FxHashMap<(&'a str, &'a str), Entry<'a>>,
}

/// What a route's `spec.mcp.servers` resolved to.
pub(crate) struct Attached {
    /// The servers the route can use, in its order.
    pub servers: Vec<McpServer>,
    /// Every server named, as `namespace/name`, for the condition's message.
    pub named: Vec<String>,
    /// One clause per server that cannot be used.
    pub problems: Vec<String>,
}

/// Compiles the servers (sorted by namespace/name), one verdict each.
pub(crate) fn compile_servers<'a>(
    items: &[Item<'a, MCPServer>],
    secrets: &Secrets<'_>,
    verdicts: &mut Vec<Verdict>,
) -> McpServerTable<'a> {
    let mut by_id = map_with_capacity(items.len());
    for item in items {
        let spec = &item.obj.spec;
        let (compiled, verdict) = compile_one(item, secrets);
        verdicts.push(verdict);
        by_id.insert(
            (item.id.namespace, item.id.name),
            Entry {
                compiled,
                sharing: Sharing::of(item.id.namespace, &spec.allowed_namespaces),
            },
        );
    }
    McpServerTable { by_id }
}

fn compile_one(
    item: &Item<'_, MCPServer>,
    secrets: &Secrets<'_>,
) -> (Result<McpServer, String>, Verdict) {
    let spec = &item.obj.spec;
    let namespace = item.id.namespace;
    let mut invalid: Vec<String> = Vec::new();
    let url = normalize_url(&spec.url)
        .map_err(|_| {
            invalid.push(format!(
                "set spec.url to an http:// or https:// URL without query or fragment (got {:?})",
                spec.url
            ))
        })
        .unwrap_or_default();
    let timeouts = timeouts_from(spec.timeouts.as_ref(), "spec.timeouts", &mut invalid);
    let mut forward_headers = Vec::with_capacity(spec.forward_headers.len());
    for h in &spec.forward_headers {
        let name = h.0.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            invalid.push(format!(
                "spec.forwardHeaders: {:?} is not a header name",
                h.0
            ));
        } else if NEVER_FORWARDED.contains(&name.as_str()) {
            invalid.push(format!(
                "spec.forwardHeaders: {name} carries the caller's key or the gateway's MCP session and is never passed on"
            ));
        } else if !forward_headers.contains(&name) {
            forward_headers.push(name);
        }
    }
    let (credential, unresolved): (_, Option<Problem>) = match &spec.credentials {
        None => (None, None),
        Some(c) => match header_credential(c, "spec.credentials", namespace, secrets) {
            Ok(credential) => (Some(credential), None),
            Err(problem) => (None, Some(problem)),
        },
    };
    let mut conditions = Vec::with_capacity(3);
    if invalid.is_empty() {
        conditions.push(VerdictCondition::new(
            condition_type::ACCEPTED,
            true,
            "Accepted",
            format!("Routes can offer the tools of {url}."),
        ));
    } else {
        conditions.push(VerdictCondition::new(
            condition_type::ACCEPTED,
            false,
            "InvalidSpec",
            format!(
                "No route can use this server until its spec is fixed: {}.",
                invalid.join("; ")
            ),
        ));
    }
    match &unresolved {
        None => conditions.push(VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            true,
            "ResolvedRefs",
            if spec.credentials.is_some() {
                "The credential's Secret resolved."
            } else {
                "The server is called without a credential."
            },
        )),
        Some((reason, clause)) => conditions.push(VerdictCondition::new(
            condition_type::RESOLVED_REFS,
            false,
            reason,
            sentences(std::slice::from_ref(clause)),
        )),
    }
    let usable = invalid.is_empty() && unresolved.is_none();
    conditions.push(if usable {
        VerdictCondition::new(
            condition_type::READY,
            true,
            "Ready",
            "Routes that attach this server offer its tools.",
        )
    } else {
        VerdictCondition::new(
            condition_type::READY,
            false,
            "NotUsable",
            "Routes that attach this server do not offer its tools: fix the problems above.",
        )
    });
    let verdict = Verdict {
        kind: Kind::MCPServer,
        id: item.reference.clone(),
        generation: item.generation,
        conditions,
        detail: Detail::McpServer(McpServerDetail { url: url.clone() }),
    };
    let compiled = if usable {
        Ok(McpServer {
            id: item.reference.clone(),
            url,
            credential,
            forward_headers,
            timeouts,
            tool_prefix: String::new(),
            filter: ToolFilter::All,
        })
    } else {
        Err("it is not usable (see its status)".to_string())
    };
    (compiled, verdict)
}

impl McpServerTable<'_> {
    /// The servers a route in `namespace` names, with its prefixes and filters.
    pub fn attach(&self, refs: &[McpServerRef], namespace: &str) -> Attached {
        let mut attached = Attached {
            servers: Vec::with_capacity(refs.len()),
            named: Vec::with_capacity(refs.len()),
            problems: Vec::new(),
        };
        for r in refs {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            attached.named.push(format!("{ns}/{}", r.name));
            let problem = match self.by_id.get(&(ns, r.name.as_str())) {
                None => format!("MCPServer {ns}/{} does not exist", r.name),
                Some(entry) if !entry.sharing.admits(namespace) => {
                    format!(
                        "MCPServer {ns}/{} does not list namespace {namespace} in spec.allowedNamespaces",
                        r.name
                    )
                }
                Some(Entry {
                    compiled: Err(why), ..
                }) => {
                    format!("MCPServer {ns}/{}: {why}", r.name)
                }
                Some(Entry {
                    compiled: Ok(server),
                    ..
                }) => match filter_of(r) {
                    Ok(filter) => {
                        attached.servers.push(McpServer {
                            tool_prefix: r.tool_prefix.clone().unwrap_or_default(),
                            filter,
                            ..server.clone()
                        });
                        continue;
                    }
                    Err(why) => format!("the tool filter of MCPServer {ns}/{}: {why}", r.name),
                },
            };
            attached.problems.push(problem);
        }
        attached
    }
}

fn filter_of(r: &McpServerRef) -> Result<ToolFilter, String> {
    let Some(f) = &r.tools else {
        return Ok(ToolFilter::All);
    };
    match (&f.include, &f.include_regex) {
        (Some(names), None) => Ok(ToolFilter::Include(
            names.iter().map(|n| n.0.clone()).collect(),
        )),
        // Checked alone first: wrapped, a source such as `a)|(b` would compile into something else.
        // The wrapping anchors the whole alternation, so that `a|ab` offers `ab`.
        (None, Some(source)) => Pattern::new(source)
            .and_then(|_| Pattern::new(&format!(r"\A(?:{source})\z")))
            .map(ToolFilter::Matching)
            .map_err(|why| {
                let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                format!("includeRegex does not compile: {why}")
            }),
        _ => Err("give exactly one of include and includeRegex".into()),
    }
}

/// `MCPServersValid` for a route that attaches servers.
pub(crate) fn servers_condition(attached: &Attached) -> VerdictCondition {
    if attached.problems.is_empty() {
        VerdictCondition::new(
            condition_type::MCP_SERVERS_VALID,
            true,
            "Valid",
            format!(
                "Offering the tools of MCP servers {}.",
                attached.named.join(", ")
            ),
        )
    } else {
        VerdictCondition::new(
            condition_type::MCP_SERVERS_VALID,
            false,
            "InvalidMCPServers",
            format!(
                "{} The tools of the other servers are offered.",
                sentences(&attached.problems)
            ),
        )
    }
}
