//! A subscription row: one consumer's access to one route, with its effective limits and phase.

use serde::{Deserialize, Serialize};

pub use tollgate_crds::Phase;

use super::limits::{Budget, Limits};
use super::refs::{ConsumerIdx, ObjectRef, RouteIdx};

/// A consumer's access to a route, with its effective limits and phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The `ApiSubscription` object.
    pub id: ObjectRef,
    /// Its `metadata.uid` (empty when the object has none, as standalone YAML may): what identifies
    /// this object rather than its name, so a re-created subscription does not inherit its
    /// predecessor's counters. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Who subscribes.
    pub consumer: ConsumerIdx,
    /// To what.
    pub route: RouteIdx,
    /// Only `Approved` serves.
    pub phase: Phase,
    /// Subscription limits clamped to the route's.
    pub limits: Limits,
    /// Subscription budget clamped to the route's.
    #[serde(default)]
    pub budget: Budget,
}
