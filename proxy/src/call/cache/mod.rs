//! The response cache: a model call asked again is answered from a stored answer, without a
//! provider. What makes two calls the same is in `key`; the caller's `Cache-Control` in `control`;
//! this replica's store in `local`, shared through Redis in `store`; questions
//! compared by meaning in `semantic`; the copy of an answer made on
//! its way to the caller in `tee`; and the call path in `serve`.

mod control;
mod entry;
mod key;
#[cfg(test)]
mod key_equivalence;
mod local;
mod semantic;
mod serve;
pub(super) mod store;
pub(super) mod tee;

pub use serve::cached_call;
pub use store::{CacheConfig, ResponseCache};
