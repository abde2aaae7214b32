//! Stands in for kube-controller-manager's ClusterRole aggregation, which this control plane lacks.
//!
//! The built-in `admin`, `edit` and `view` roles are born empty: their rules are the union of
//! the ClusterRoles their `aggregationRule` selects (`rbac.authorization.k8s.io/aggregate-to-*`),
//! and a controller fills them in. Without it, binding `edit` grants nothing.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::{ControlPlane, controlplane::kubectl_command};

/// Aggregated roles may select one another (`edit` is part of `admin`); this many passes settle
/// any realistic nesting.
const MAX_PASSES: usize = 8;

impl ControlPlane {
    /// Fills the rules of every ClusterRole that has an `aggregationRule`, as the missing
    /// controller would. Runs once at startup; call it again after applying ClusterRoles
    /// labelled for aggregation (for example `rbac.authorization.k8s.io/aggregate-to-edit`).
    /// Panics if the API server refuses.
    pub fn aggregate_cluster_roles(&self) {
        if let Err(error) = aggregate(self.bin_dir(), self.kubeconfig_path()) {
            panic!("aggregating ClusterRoles: {error:#}");
        }
    }
}

/// One ClusterRole, reduced to what aggregation reads.
struct Role {
    labels: Map<String, Value>,
    rules: Vec<Value>,
    selectors: Option<Vec<Value>>,
}

pub(crate) fn aggregate(bin_dir: &Path, kubeconfig: &Path) -> Result<()> {
    let listed = kubectl_command(bin_dir, kubeconfig)
        .args([
            "get",
            "clusterroles",
            "--output=json",
            "--request-timeout=30s",
        ])
        .output()
        .context("running kubectl get clusterroles")?;
    if !listed.status.success() {
        bail!(
            "kubectl get clusterroles: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
    let list: Value =
        serde_json::from_slice(&listed.stdout).context("parsing the ClusterRole list")?;
    // Sorted by name, like the controller, so the union comes out in the same order.
    let mut roles: BTreeMap<String, Role> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let name = item["metadata"]["name"].as_str()?.to_owned();
            let role = Role {
                labels: item["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                rules: item["rules"].as_array().cloned().unwrap_or_default(),
                selectors: item["aggregationRule"]["clusterRoleSelectors"]
                    .as_array()
                    .cloned(),
            };
            Some((name, role))
        })
        .collect();
    let original: BTreeMap<String, Vec<Value>> = roles
        .iter()
        .filter(|(_, role)| role.selectors.is_some())
        .map(|(name, role)| (name.clone(), role.rules.clone()))
        .collect();

    for _ in 0..MAX_PASSES {
        let mut changed = false;
        for name in original.keys() {
            let rules = union_of_selected(name, &roles);
            let role = roles
                .get_mut(name)
                .expect("aggregated roles come from this map");
            if role.rules != rules {
                role.rules = rules;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    for (name, before) in &original {
        let after = &roles[name].rules;
        if after == before {
            continue;
        }
        let patch = json!({ "rules": after }).to_string();
        let out = kubectl_command(bin_dir, kubeconfig)
            .args([
                "patch",
                "clusterrole",
                name,
                "--type=merge",
                "--request-timeout=30s",
            ])
            .arg(format!("--patch={patch}"))
            .output()
            .context("running kubectl patch clusterrole")?;
        if !out.status.success() {
            bail!(
                "patching ClusterRole {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// The rules of every other role that one of `name`'s selectors picks, without duplicates.
fn union_of_selected(name: &str, roles: &BTreeMap<String, Role>) -> Vec<Value> {
    let mut union: Vec<Value> = Vec::new();
    for selector in roles[name].selectors.iter().flatten() {
        for (other, role) in roles {
            if other == name || !selects(selector, &role.labels) {
                continue;
            }
            for rule in &role.rules {
                if !union.contains(rule) {
                    union.push(rule.clone());
                }
            }
        }
    }
    union
}

/// Whether a `LabelSelector` (as JSON) matches `labels`; an empty selector matches everything.
fn selects(selector: &Value, labels: &Map<String, Value>) -> bool {
    let wanted = selector["matchLabels"].as_object().into_iter().flatten();
    let labels_match = wanted
        .into_iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten();
    labels_match
        && expressions.into_iter().all(|expr| {
            let key = expr["key"].as_str().unwrap_or_default();
            let value = labels.get(key);
            let listed = || {
                let values = expr["values"].as_array().into_iter().flatten();
                values.into_iter().any(|v| Some(v) == value)
            };
            match expr["operator"].as_str() {
                Some("In") => listed(),
                Some("NotIn") => !listed(),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(labels: Value, rules: Value, selectors: Option<Value>) -> Role {
        Role {
            labels: labels.as_object().cloned().unwrap(),
            rules: rules.as_array().cloned().unwrap(),
            selectors: selectors.map(|s| s.as_array().cloned().unwrap()),
        }
    }

    #[test]
    fn selectors_follow_label_selector_rules() {
        let labels = json!({ "tier": "edit", "team": "a" });
        let labels = labels.as_object().unwrap();
        assert!(selects(&json!({}), labels));
        assert!(selects(
            &json!({ "matchLabels": { "tier": "edit" } }),
            labels
        ));
        assert!(!selects(
            &json!({ "matchLabels": { "tier": "view" } }),
            labels
        ));
        let expr = |op: &str, values: Value| json!({ "matchExpressions": [{ "key": "team", "operator": op, "values": values }] });
        assert!(selects(&expr("In", json!(["a", "b"])), labels));
        assert!(!selects(&expr("NotIn", json!(["a"])), labels));
        assert!(selects(&expr("Exists", json!([])), labels));
        assert!(!selects(&expr("DoesNotExist", json!([])), labels));
    }

    #[test]
    fn union_skips_duplicates_and_the_role_itself() {
        let get = json!({ "verbs": ["get"], "resources": ["pods"] });
        let list = json!({ "verbs": ["list"], "resources": ["pods"] });
        let selector = json!([{ "matchLabels": { "agg": "x" } }]);
        let roles: BTreeMap<String, Role> = [
            ("a".into(), role(json!({ "agg": "x" }), json!([get]), None)),
            (
                "b".into(),
                role(json!({ "agg": "x" }), json!([get, list]), None),
            ),
            ("c".into(), role(json!({}), json!([list]), None)),
            (
                "z".into(),
                role(json!({ "agg": "x" }), json!([]), Some(selector)),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(union_of_selected("z", &roles), vec![get, list]);
    }
}
