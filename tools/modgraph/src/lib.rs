//! A crate's module graph, read from its source text: one node per file, one edge per `crate::…`,
//! `super::…` or `self::…` path that names an item of another file.
//!
//! It answers two questions the compiler does not: does any set of files import each other in a
//! circle ([`Graph::cycles`]), and does any file reach a layer above its own ([`Graph::check_layers`]).
//! The reading is lexical (comments and string literals are blanked first), which is enough for
//! paths: macros that build paths from pieces are the only thing it cannot see.

mod lex;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use lex::{Token, tokens};

/// A module: its path from the crate root (`[]` is the root itself).
pub type ModPath = Vec<String>;

/// One source file of the crate.
#[derive(Debug)]
pub struct File {
    /// The module this file defines.
    pub module: ModPath,
    /// Where it is, as given to [`Graph::read`] joined with its place under it.
    pub path: PathBuf,
}

/// A path in one file that names something in another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Index of the importing file in [`Graph::files`].
    pub from: usize,
    /// Index of the file that defines what is named.
    pub to: usize,
    /// Line of the path (1-based).
    pub line: usize,
    /// The path as written, groups expanded (`crate::a::b`).
    pub text: String,
}

/// A use of an outside crate's item in a file (`tokio::spawn`, `use hyper::…`).
#[derive(Clone, Debug)]
pub struct ExternalUse {
    /// Index of the file in [`Graph::files`].
    pub file: usize,
    /// Line (1-based).
    pub line: usize,
    /// The crate named.
    pub krate: String,
}

/// The files of one crate and the paths between them.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every file, in path order.
    pub files: Vec<File>,
    /// Every path from one file to another (self-references left out).
    pub edges: Vec<Edge>,
    /// First segments of paths that are neither `crate`, `super`, `self` nor a module of the crate.
    pub external: Vec<ExternalUse>,
}

/// Why the graph could not be read.
#[derive(Debug)]
pub struct ReadError(pub String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

/// A module's place in a layered design.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Top-level module name (`call` covers `call::*`), or a root file such as `error`.
    pub module: &'static str,
    /// Height: a module may import only modules of a lower height.
    pub height: u32,
    /// Outside crates this layer must not use (e.g. `tokio` in a pure layer).
    pub forbidden_crates: &'static [&'static str],
}

/// A broken layer rule, worded for the person who broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// File and line.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

fn module_of(relative: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match (parts.is_empty(), stem) {
        // A binary's root is another crate: its `crate::` is not the library's.
        (true, "main") => None,
        (true, "lib") => Some(parts),
        (_, "mod") => Some(parts),
        _ => {
            if parts.first().is_some_and(|p| p == "bin") {
                return None;
            }
            parts.push(stem.to_string());
            Some(parts)
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ReadError(format!("reading {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ReadError(format!("reading {}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

impl Graph {
    /// Reads every `.rs` file under `src` (a crate's source root).
    pub fn read(src: &Path) -> Result<Self, ReadError> {
        let mut paths = Vec::new();
        rust_files(src, &mut paths)?;
        paths.sort();
        let mut sources = Vec::new();
        let mut graph = Graph::default();
        for path in paths {
            let relative = path.strip_prefix(src).expect("found under src");
            let Some(module) = module_of(relative) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ReadError(format!("reading {}: {e}", path.display())))?;
            graph.files.push(File { module, path });
            sources.push(text);
        }
        let index: BTreeMap<ModPath, usize> = graph
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        for (from, text) in sources.iter().enumerate() {
            let here = graph.files[from].module.clone();
            for found in lex::paths(text) {
                graph.add(&index, from, &here, found);
            }
        }
        Ok(graph)
    }

    fn add(
        &mut self,
        index: &BTreeMap<ModPath, usize>,
        from: usize,
        here: &ModPath,
        p: lex::Found,
    ) {
        let mut target: ModPath = match p.segments.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("super") | Some("self") => {
                // Inside an inline module (`mod tests { … }`), the first `super` is the file's module.
                let mut at = here.clone();
                at.extend(p.inline.iter().cloned());
                at
            }
            Some(first) => {
                let mut child = here.clone();
                child.push(first.to_string());
                if p.inline.is_empty() && !p.after_colons && index.contains_key(&child) {
                    // `mod x; use x::Y;`: a path into a child module of this file.
                    here.clone()
                } else {
                    if !p.after_colons {
                        self.external.push(ExternalUse {
                            file: from,
                            line: p.line,
                            krate: first.to_string(),
                        });
                    }
                    return;
                }
            }
            None => return,
        };
        let mut rest = &p.segments[..];
        if rest.first().is_some_and(|s| s == "crate") {
            rest = &rest[1..];
        }
        while let Some(first) = rest.first() {
            match first.as_str() {
                "super" => {
                    if target.pop().is_none() {
                        return;
                    }
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
        // The longest prefix that is a file of the crate defines what the path names.
        let mut best = index.get(&target).copied();
        let mut probe = target.clone();
        for segment in rest {
            probe.push(segment.clone());
            if let Some(&i) = index.get(&probe) {
                best = Some(i);
            } else {
                break;
            }
        }
        let Some(to) = best else { return };
        if to != from {
            self.edges.push(Edge {
                from,
                to,
                line: p.line,
                text: p.segments.join("::"),
            });
        }
    }

    /// The file of `module`, if the crate has one.
    pub fn file(&self, module: &[&str]) -> Option<usize> {
        self.files.iter().position(|f| f.module == module)
    }

    fn name(&self, file: usize) -> String {
        let m = &self.files[file].module;
        if m.is_empty() {
            "crate".into()
        } else {
            m.join("::")
        }
    }

    fn at(&self, file: usize, line: usize) -> String {
        format!("{}:{line}", self.files[file].path.display())
    }

    /// Every set of two or more files that import each other in a circle, each told as one circle
    /// through it with the line of every step (empty when there is none).
    pub fn cycles(&self) -> Vec<String> {
        let n = self.files.len();
        let mut out_edges: Vec<Vec<&Edge>> = vec![Vec::new(); n];
        for e in &self.edges {
            out_edges[e.from].push(e);
        }
        let components = strongly_connected(n, &out_edges);
        let mut reports = Vec::new();
        for component in components.into_iter().filter(|c| c.len() > 1) {
            let members: BTreeSet<usize> = component.iter().copied().collect();
            let start = *members.first().expect("non-empty");
            let circle = circle_through(start, &members, &out_edges);
            let mut text = format!(
                "import circle among {} files ({}):",
                members.len(),
                members
                    .iter()
                    .map(|&m| self.name(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for e in circle {
                text.push_str(&format!(
                    "\n  {} `{}` uses `{}` ({})",
                    self.at(e.from, e.line),
                    self.name(e.from),
                    e.text,
                    self.name(e.to)
                ));
            }
            reports.push(text);
        }
        reports
    }

    /// Every import that reaches a layer at or above the importer's own (other than within one
    /// top-level module), every file that belongs to no layer, and every forbidden outside crate.
    /// The crate root (`lib.rs`) wires the layers together and may import any of them.
    pub fn check_layers(&self, layers: &[Layer]) -> Vec<Violation> {
        let layer_of = |file: usize| {
            let top = self.files[file].module.first()?;
            layers.iter().find(|l| l.module == top)
        };
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if !f.module.is_empty() && layer_of(i).is_none() {
                out.push(Violation {
                    at: f.path.display().to_string(),
                    message: format!(
                        "`{}` belongs to no layer: add it to the layer table or move it into a layer",
                        self.name(i)
                    ),
                });
            }
        }
        for e in &self.edges {
            let (Some(from), Some(to)) = (layer_of(e.from), layer_of(e.to)) else {
                continue;
            };
            if from.module == to.module || to.height < from.height {
                continue;
            }
            let how = if to.height == from.height {
                "a layer beside its own"
            } else {
                "a layer above its own"
            };
            out.push(Violation {
                at: self.at(e.from, e.line),
                message: format!(
                    "`{}` (layer `{}`, height {}) imports `{}` from {how}, `{}` (height {}); \
                     a module may import only layers below it",
                    self.name(e.from),
                    from.module,
                    from.height,
                    e.text,
                    to.module,
                    to.height
                ),
            });
        }
        for u in &self.external {
            if let Some(layer) = layer_of(u.file)
                && layer.forbidden_crates.contains(&u.krate.as_str())
            {
                out.push(Violation {
                    at: self.at(u.file, u.line),
                    message: format!(
                        "`{}` uses the crate `{}`, which layer `{}` must not use",
                        self.name(u.file),
                        u.krate,
                        layer.module
                    ),
                });
            }
        }
        out.sort_by(|a, b| a.at.cmp(&b.at));
        out.dedup();
        out
    }
}

/// Tarjan's algorithm, iteratively: the strongly connected components of the graph.
fn strongly_connected(n: usize, out_edges: &[Vec<&Edge>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = work.last_mut() {
            if let Some(e) = out_edges[v].get(*pos) {
                *pos += 1;
                let w = e.to;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                loop {
                    let w = stack.pop().expect("v is on the stack");
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// The shortest circle from `start` back to itself inside `members` (breadth first).
fn circle_through<'e>(
    start: usize,
    members: &BTreeSet<usize>,
    out_edges: &[Vec<&'e Edge>],
) -> Vec<&'e Edge> {
    let mut came_by: BTreeMap<usize, &Edge> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &e in &out_edges[v] {
            if !members.contains(&e.to) {
                continue;
            }
            if e.to == start {
                let mut path = vec![e];
                let mut at = v;
                while at != start {
                    let back = came_by[&at];
                    path.push(back);
                    at = back.from;
                }
                path.reverse();
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = came_by.entry(e.to) {
                slot.insert(e);
                queue.push_back(e.to);
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> (PathBuf, Graph) {
        let dir = std::env::temp_dir().join(format!(
            "modgraph-{}-{}",
            std::process::id(),
            files.iter().map(|f| f.0.len() + f.1.len()).sum::<usize>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let g = Graph::read(&dir).unwrap();
        (dir, g)
    }

    #[test]
    fn finds_a_circle_and_names_its_lines() {
        let (dir, g) = crate_of(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::b::B;\n"),
            ("b/mod.rs", "mod inner;\npub use inner::B;\n"),
            ("b/inner.rs", "\n\nfn f() { super::super::a::g() }\n"),
            (
                "c.rs",
                "use crate::a;\n#[cfg(test)]\nmod tests { use super::*; }\n",
            ),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(
            cycles[0].contains("3 files (a, b::inner, b)"),
            "{}",
            cycles[0]
        );
        assert!(cycles[0].contains("inner.rs:3"), "{}", cycles[0]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reports_an_import_from_above_with_file_line_and_layers() {
        let (dir, g) = crate_of(&[
            ("lib.rs", "mod low;\nmod high;\nmod side;\nuse high::H;\n"),
            (
                "low.rs",
                "fn f() {}\n\nfn g() { crate::high::h(); tokio::spawn(); }\n",
            ),
            ("high.rs", "use crate::low;\n"),
            ("side.rs", "use crate::low;\n"),
        ]);
        let layers = [
            Layer {
                module: "high",
                height: 2,
                forbidden_crates: &[],
            },
            Layer {
                module: "low",
                height: 1,
                forbidden_crates: &["tokio"],
            },
        ];
        let v = g.check_layers(&layers);
        let text: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(v.len(), 3, "{text:#?}");
        assert!(
            text.iter().any(|t| t.contains("low.rs:3")
                && t.contains("imports `crate::high::h` from a layer above its own, `high`")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("low.rs:3") && t.contains("crate `tokio`")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("`side` belongs to no layer")),
            "{text:#?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
