//! Each route's tools, named and described once per snapshot rather than on every request: a
//! `tools/list` of 200 tools copies 200 prepared entries instead of building 200 JSON Schemas, and a
//! `tools/call` finds its tool in a map instead of naming every tool of the route first.
//!
//! The catalog of a snapshot is made lazily, a route at a time, by the first MCP request that needs
//! the route, and kept for as long as the snapshot is served. It is held beside the snapshot (keyed
//! by its `Arc`), not in it: it is the gateway's view of the route, not part of what the controller
//! sends.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tollgate_snapshot::{Route, RouteIdx, Snapshot};

use super::tools::{self, Target};
use crate::control::PerSnapshot;

/// One tool of a route, named and described.
#[derive(Debug)]
pub struct Tool {
    /// Its name in the route scope.
    pub name: String,
    /// What it calls.
    pub target: Target,
    /// Its `tools/list` entry after the name: `,"description":…,"inputSchema":…}` (see [`Tool::entry`]).
    described: String,
}

impl Tool {
    /// Its `tools/list` entry, serialised, under `name` (the route scope's or the consumer scope's).
    pub fn entry(&self, name: &str, out: &mut String) {
        out.push_str("{\"name\":");
        out.push_str(&serde_json::to_string(name).expect("strings serialise"));
        out.push_str(&self.described);
    }
}

/// A route's tools, in order (prompt APIs, then REST operations), with an index by name.
#[derive(Debug)]
pub struct RouteTools {
    /// The tools.
    pub tools: Vec<Tool>,
    by_name: HashMap<String, usize>,
}

impl RouteTools {
    fn build(route: &Route) -> Self {
        let tools: Vec<Tool> = tools::list(route)
            .into_iter()
            .map(|(name, target)| {
                let mut doc = tools::describe(route, &name, target);
                doc.as_object_mut()
                    .expect("a tool is described as an object")
                    .remove("name");
                let whole = serde_json::to_string(&doc).expect("JSON values serialise");
                // `{…}` without its opening brace, behind a comma (an empty object has no members).
                let described = if whole.len() > 2 {
                    format!(",{}", &whole[1..])
                } else {
                    "}".to_string()
                };
                Tool {
                    name,
                    target,
                    described,
                }
            })
            .collect();
        let by_name = tools
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Self { tools, by_name }
    }

    /// The tool named `name` in the route scope.
    pub fn find(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name).map(|i| &self.tools[*i])
    }
}

/// The tools of one snapshot's routes, each route's made when first asked for.
#[derive(Debug)]
pub struct Catalog {
    routes: Box<[OnceLock<RouteTools>]>,
}

impl Catalog {
    fn new(snapshot: &Snapshot) -> Self {
        Self {
            routes: (0..snapshot.content.routes.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The tools of `snapshot`'s route `at` (`snapshot` is the one this catalog was made for).
    pub fn route(&self, snapshot: &Snapshot, at: RouteIdx) -> &RouteTools {
        self.routes[at as usize]
            .get_or_init(|| RouteTools::build(&snapshot.content.routes[at as usize]))
    }
}

/// The catalogs of the last few snapshots, found by the snapshot's `Arc`.
#[derive(Default)]
pub struct Catalogs {
    kept: PerSnapshot<Catalog>,
}

impl Catalogs {
    /// The catalog of `snapshot`, made (empty, filled lazily) when it is the first request to it.
    pub fn of(&self, snapshot: &Arc<Snapshot>) -> Arc<Catalog> {
        self.kept.of(snapshot, Catalog::new)
    }
}

/// The catalogs of every snapshot this process serves MCP from.
pub fn catalogs() -> &'static Catalogs {
    static CATALOGS: OnceLock<Catalogs> = OnceLock::new();
    CATALOGS.get_or_init(Catalogs::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::{Inputs, compile};

    #[test]
    fn a_snapshot_keeps_one_catalog_and_a_new_snapshot_gets_its_own() {
        let catalogs = Catalogs::default();
        let first = Arc::new(compile(&Inputs::default(), 1).snapshot);
        let a = catalogs.of(&first);
        assert!(Arc::ptr_eq(&a, &catalogs.of(&first)));
        let second = Arc::new(compile(&Inputs::default(), 2).snapshot);
        let b = catalogs.of(&second);
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(
            Arc::ptr_eq(&a, &catalogs.of(&first)),
            "the older one is still kept"
        );
    }
}
