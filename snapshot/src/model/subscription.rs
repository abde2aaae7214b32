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
