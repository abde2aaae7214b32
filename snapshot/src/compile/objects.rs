//! Reading object metadata defensively, ordering objects canonically, and setting duplicates aside.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tollgate_crds::{AIGuardrail, AIRoute, ApiSubscription, Consumer, MCPServer, ModelProvider};

use crate::fx::{FxHashMap, FxHasher, map_with_capacity};
use crate::model::ObjectRef;

/// The namespace of objects that name none (standalone YAML files often leave it out).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Anything with Kubernetes object metadata.
pub(crate) trait Object: Serialize {
    fn meta(&self) -> &ObjectMeta;
}

macro_rules! impl_object {
    ($($t:ty),*) => {$(
        impl Object for $t {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
        }
    )*};
}
impl_object!(
    AIGuardrail,
    MCPServer,
    ModelProvider,
    AIRoute,
    Consumer,
    ApiSubscription,
    Secret,
    ConfigMap
);

/// Namespace of an object, `default` when absent or empty.
pub(crate) fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

/// `namespace/name` borrowed from an input object: ordered and printed like [`ObjectRef`], and cheap to
/// compare and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Id<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One input object with what compiling needs from its metadata.
pub(crate) struct Item<'a, T> {
    pub id: Id<'a>,
    /// The same as an owned reference, made once: the table entry and the verdict share it, and objects
    /// of one namespace share its string.
    pub reference: ObjectRef,
    pub generation: Option<i64>,
    /// `None` sorts first: an object without a creation time counts as the oldest.
    pub created: Option<Timestamp>,
    pub obj: &'a T,
    /// Position of the object in the input.
    pub at: usize,
}

/// One shared string per distinct text: names that many objects repeat (model names, key names) are
/// allocated once, and the tables that hold them stay small in memory.
#[derive(Default)]
pub(crate) struct Interner<'a> {
    strings: FxHashMap<&'a str, Arc<str>>,
}

impl<'a> Interner<'a> {
    /// The shared string equal to `text`.
    pub fn get(&mut self, text: &'a str) -> Arc<str> {
        Arc::clone(self.strings.entry(text).or_insert_with(|| Arc::from(text)))
    }
}

/// One shared string per distinct message text: many objects get the same sentence (consumers with
/// one key named alike, routes serving the same models), so each text is allocated once.
#[derive(Default)]
pub(crate) struct Texts {
    seen: HashSet<Arc<str>, BuildHasherDefault<FxHasher>>,
    scratch: String,
}

impl Texts {
    /// The shared string of the text that `write` writes.
    pub fn share(&mut self, write: impl FnOnce(&mut String)) -> Arc<str> {
        self.scratch.clear();
        write(&mut self.scratch);
        if let Some(text) = self.seen.get(self.scratch.as_str()) {
            return Arc::clone(text);
        }
        let text: Arc<str> = Arc::from(self.scratch.as_str());
        self.seen.insert(Arc::clone(&text));
        text
    }
}

/// Positions of the items (which are sorted by namespace/name) in the order of their objects in the
/// input. That is about the order the objects were allocated in, so work on each object alone runs
/// faster in it than in name order whenever the two differ: there consecutive objects lie far apart in
/// memory and compiling mostly waits for it.
pub(crate) fn input_order<T>(items: &[Item<'_, T>]) -> Vec<usize> {
    let end = items.iter().map(|item| item.at + 1).max().unwrap_or(0);
    let mut slots = vec![usize::MAX; end];
    for (i, item) in items.iter().enumerate() {
        slots[item.at] = i;
    }
    slots.retain(|&i| i != usize::MAX);
    slots
}

/// `f` of each item position, called in `order` (see [`input_order`]), returned in item order.
pub(crate) fn map_in_order<R>(order: &[usize], mut f: impl FnMut(usize) -> R) -> Vec<R> {
    let mut out: Vec<Option<R>> = (0..order.len()).map(|_| None).collect();
    for &i in order {
        out[i] = Some(f(i));
    }
    out.into_iter()
        .map(|r| r.expect("the order holds every position once"))
        .collect()
}

/// Positions of the items (which are sorted by namespace/name) that pass `keep`, oldest first:
/// creation time, then namespace/name.
pub(crate) fn by_age<T>(items: &[Item<'_, T>], keep: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).filter(|&i| keep(i)).collect();
    // Items are in namespace/name order, so the position breaks ties in creation time.
    order.sort_unstable_by_key(|&i| (items[i].created, i));
    order
}

/// Whether item `a` is older than item `b` in the order of [`by_age`]. Finding the oldest of a few
/// items this way spares sorting them all.
pub(crate) fn older<T>(items: &[Item<'_, T>], a: usize, b: usize) -> bool {
    (items[a].created, a) < (items[b].created, b)
}

/// Makes item `i` the holder of `key` unless an older item holds it; says whether another item held
/// the key before (either way, the older of the two holds it now).
pub(crate) fn claim_for_older<K: Hash + Eq, T>(
    holders: &mut FxHashMap<K, usize>,
    key: K,
    i: usize,
    items: &[Item<'_, T>],
) -> bool {
    match holders.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(i);
            false
        }
        Entry::Occupied(mut slot) => {
            if older(items, i, *slot.get()) {
                slot.insert(i);
            }
            true
        }
    }
}

/// Each item's table state by namespace and name, inserted in `order` (see `input_order`).
pub(crate) fn states_by_id<'a, T, S>(
    items: &[Item<'a, T>],
    order: &[usize],
    mut state: impl FnMut(usize) -> S,
) -> FxHashMap<(&'a str, &'a str), S> {
    let mut by_id = map_with_capacity(items.len());
    for &i in order {
        let id = items[i].id;
        by_id.insert((id.namespace, id.name), state(i));
    }
    by_id
}

/// Objects sorted by namespace/name, and the duplicates (same namespace/name) set aside.
pub(crate) struct Collected<'a, T> {
    pub items: Vec<Item<'a, T>>,
    pub duplicates: Vec<Item<'a, T>>,
}

/// Sorts objects canonically. Of several sharing a namespace/name (possible only in standalone files), the first
/// by creation time, uid, resourceVersion and finally content is kept, so input order never matters.
pub(crate) fn collect<T: Object>(objects: &[T]) -> Collected<'_, T> {
    let mut all: Vec<Sorting<'_, T>> = objects
        .iter()
        .enumerate()
        .map(|(at, obj)| {
            let meta = obj.meta();
            let id = Id {
                namespace: namespace_of(meta),
                name: meta.name.as_deref().unwrap_or_default(),
            };
            Sorting {
                heads: Heads::of(id),
                id,
                generation: meta.generation,
                created: meta.creation_timestamp.as_ref().map(|t| t.0),
                obj,
                at,
            }
        })
        .collect();
    all.sort_unstable_by(|a, b| {
        a.heads
            .cmp_ids(a.id, &b.heads, b.id)
            .then_with(|| same_name_order(a.obj, b.obj))
    });
    let mut items: Vec<Item<'_, T>> = Vec::with_capacity(all.len());
    let mut duplicates = Vec::new();
    let mut last: Option<Heads> = None;
    // Sorted, so one namespace's objects are consecutive and share its string.
    let mut namespace: Option<Arc<str>> = None;
    for s in all {
        let shared = match &namespace {
            Some(ns) if **ns == *s.id.namespace => Arc::clone(ns),
            _ => Arc::clone(namespace.insert(Arc::from(s.id.namespace))),
        };
        let item = Item {
            id: s.id,
            reference: ObjectRef {
                namespace: shared,
                name: Arc::from(s.id.name),
            },
            generation: s.generation,
            created: s.created,
            obj: s.obj,
            at: s.at,
        };
        match (last, items.last()) {
            (Some(h), Some(prev)) if h.cmp_ids(prev.id, &s.heads, item.id).is_eq() => {
                duplicates.push(item)
            }
            _ => {
                items.push(item);
                last = Some(s.heads);
            }
        }
    }
    Collected { items, duplicates }
}

/// An object while objects are sorted: its [`Item`] without the owned reference, made afterwards in
/// namespace order.
struct Sorting<'a, T> {
    heads: Heads,
    id: Id<'a>,
    generation: Option<i64>,
    created: Option<Timestamp>,
    obj: &'a T,
    at: usize,
}

/// The first eight bytes of an object's namespace and name as numbers that order like the strings
/// (zero-padded, big-endian). Sorting tens of thousands of objects compares these and reads the
/// strings themselves, scattered over the heap, only when they tie.
#[derive(Clone, Copy)]
struct Heads {
    namespace: u64,
    name: u64,
}

impl Heads {
    fn of(id: Id<'_>) -> Self {
        Self {
            namespace: head(id.namespace),
            name: head(id.name),
        }
    }

    /// The order of `a` and `b` (whose heads these and `theirs` are): the same as `a.cmp(&b)`.
    fn cmp_ids(&self, a: Id<'_>, theirs: &Heads, b: Id<'_>) -> Ordering {
        cmp_by_head(self.namespace, a.namespace, theirs.namespace, b.namespace)
            .then_with(|| cmp_by_head(self.name, a.name, theirs.name, b.name))
    }
}

fn head(s: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = s.len().min(8);
    bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

/// Different heads order their strings; equal heads of strings no longer than eight bytes mean one is
/// the other plus trailing zero bytes, so the shorter is first; otherwise the strings decide.
fn cmp_by_head(head_a: u64, a: &str, head_b: u64, b: &str) -> Ordering {
    head_a.cmp(&head_b).then_with(|| {
        if a.len() <= 8 && b.len() <= 8 {
            a.len().cmp(&b.len())
        } else {
            a.cmp(b)
        }
    })
}

/// Orders two objects with the same namespace/name: creation time, uid, resourceVersion, content.
pub(crate) fn same_name_order<T: Object>(a: &T, b: &T) -> Ordering {
    let (ma, mb) = (a.meta(), b.meta());
    ma.creation_timestamp
        .cmp(&mb.creation_timestamp)
        .then_with(|| ma.uid.cmp(&mb.uid))
        .then_with(|| ma.resource_version.cmp(&mb.resource_version))
        .then_with(|| content_of(a).cmp(&content_of(b)))
}

fn content_of<T: Serialize>(obj: &T) -> Vec<u8> {
    serde_json::to_vec(obj).unwrap_or_default()
}

/// "a", "a and b", "a, b and c", "a, b, c and 4 more".
pub(crate) fn join_list<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    push_list(&mut out, items);
    out
}

/// Appends [`join_list`]'s text to `out`, without building it apart.
pub(crate) fn push_list<S: AsRef<str>>(out: &mut String, items: &[S]) {
    const SHOWN: usize = 5;
    let shown = &items[..items.len().min(SHOWN)];
    let hidden = items.len() - shown.len();
    for (i, item) in shown.iter().enumerate() {
        if i > 0 {
            // The last shown item follows "and" unless more are hidden behind it.
            out.push_str(if i + 1 == shown.len() && hidden == 0 {
                " and "
            } else {
                ", "
            });
        }
        out.push_str(item.as_ref());
    }
    if hidden > 0 {
        out.push_str(" and ");
        out.push_str(&hidden.to_string());
        out.push_str(" more");
    }
}

/// Sentences joined with spaces, each starting with a capital and ending in a full stop.
pub(crate) fn sentences(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut chars = p.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            let mut s: String = first.into_iter().chain(chars).collect();
            if !s.ends_with('.') {
                s.push('.');
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_order_like_the_strings() {
        let names = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0b",
            "ab",
            "team-042",
            "team-042\0",
            "team-0420",
            "team-043",
            "team-04",
            "sub-12345",
            "sub-12346",
            "sub-1234",
            "zzzzzzzzz",
            "\u{e9}t\u{e9}",
        ];
        for a in names {
            for b in names {
                assert_eq!(
                    cmp_by_head(head(a), a, head(b), b),
                    a.cmp(b),
                    "{a:?} against {b:?}"
                );
            }
        }
    }

    #[test]
    fn lists_read_as_english() {
        assert_eq!(join_list::<&str>(&[]), "");
        assert_eq!(join_list(&["a"]), "a");
        assert_eq!(join_list(&["a", "b"]), "a and b");
        assert_eq!(join_list(&["a", "b", "c"]), "a, b and c");
        assert_eq!(
            join_list(&["a", "b", "c", "d", "e", "f", "g"]),
            "a, b, c, d, e and 2 more"
        );
    }

    #[test]
    fn sentences_are_capitalised_and_stopped() {
        let parts = [
            "key a: gone".to_string(),
            String::new(),
            "Done.".to_string(),
        ];
        assert_eq!(sentences(&parts), "Key a: gone. Done.");
    }
}
