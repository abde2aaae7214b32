//! Random but reproducible worlds of resources, dense in the cross-object mistakes compile must handle:
//! shared and unshared providers, missing Secrets, path conflicts, duplicate names, keys and subscriptions.
#![allow(dead_code)]

use serde_json::{Value, json};
use tollgate_snapshot::Inputs;

use super::*;

/// xorshift64*: enough randomness for fixtures, and no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

const NAMESPACES: &[&str] = &["team-a", "team-b", "platform", ""];
const MODELS: &[&str] = &["gpt-4o-mini", "gpt-4.1", "claude-haiku-4-5", "local-llm"];
const PREFIXES: &[&str] = &["/a", "/a/v1", "/b", "/", "/c/d", "/c"];
const HOSTS: &[&str] = &["a.example.com", "*.example.com", "b.example.com"];
const TIMES: &[Option<&str>] = &[
    None,
    Some("2026-01-01T00:00:00Z"),
    Some("2026-01-01T00:00:00Z"),
    Some("2026-03-01T00:00:00Z"),
];
/// Values for Secrets; the last is too short for a consumer key.
const KEYS: &[&str] = &[
    "key-1-0123456789abcdef",
    "key-2-0123456789abcdef",
    "key-3-0123456789abcdef",
    "key-4-0123456789abcdef",
    "key-5-0123456789abcdef",
    "k6",
];

fn time<T: HasMeta>(rng: &mut Rng, obj: T) -> T {
    match rng.pick(TIMES) {
        Some(t) => created(obj, t),
        None => obj,
    }
}

fn ns(rng: &mut Rng) -> &'static str {
    NAMESPACES[rng.below(NAMESPACES.len())]
}

fn name(rng: &mut Rng, stem: &str) -> String {
    format!("{stem}{}", rng.below(4))
}

/// A world of up to a few dozen objects, from a seed.
pub fn world(seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let mut inputs = Inputs {
        now_unix: NOW,
        ..Inputs::default()
    };
    for _ in 0..rng.below(6) {
        let ty = *rng.pick(&[
            "OpenAI",
            "Fake",
            "Groq",
            "Anthropic",
            "OpenAICompatible",
            "AzureOpenAI",
        ]);
        let models: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                let mut m = json!({ "name": rng.pick(MODELS) });
                if rng.chance(30) {
                    m["pricing"] = json!({ "inputPerMillion": rng.below(5) as f64 * 0.5 });
                }
                m
            })
            .collect();
        let mut spec = json!({ "type": ty, "models": models });
        if ty != "Fake" {
            spec["credentials"] = json!({ "secretRefs": [{ "name": name(&mut rng, "cred") }] });
        }
        if matches!(ty, "OpenAICompatible" | "AzureOpenAI") && rng.chance(80) {
            spec["endpoint"] = json!("https://llm.internal/v1/");
        }
        if rng.chance(40) {
            spec["allowedNamespaces"] = json!([rng.pick(&["team-a", "team-b", "*"])]);
        }
        if rng.chance(20) {
            spec["timeouts"] = json!({ "total": rng.pick(&["1h30m", "500ms", "later"]) });
        }
        let p = provider(ns(&mut rng), &name(&mut rng, "prov"), spec);
        inputs.providers.push(time(&mut rng, p));
    }
    for _ in 0..rng.below(8) {
        let backend = |rng: &mut Rng| {
            let mut b = json!({ "provider": name(rng, "prov"), "weight": rng.below(3) });
            if rng.chance(40) {
                b["namespace"] = json!(rng.pick(&["team-a", "team-b", "platform"]));
            }
            if rng.chance(30) {
                b["model"] = json!(rng.pick(MODELS));
            }
            b
        };
        let models: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                let mut backends = vec![backend(&mut rng)];
                backends[0]["weight"] = json!(1 + rng.below(3));
                if rng.chance(50) {
                    backends.push(backend(&mut rng));
                }
                let fallbacks: Vec<Value> = (0..rng.below(2)).map(|_| backend(&mut rng)).collect();
                json!({ "name": rng.pick(MODELS), "backends": backends, "fallbacks": fallbacks })
            })
            .collect();
        let mut spec = json!({
            "prefix": rng.pick(PREFIXES),
            "models": models,
            "stage": rng.pick(&["Draft", "Published", "Published", "Deprecated", "Retired"]),
            "approval": rng.pick(&["Manual", "Automatic"]),
        });
        if spec["stage"] == "Deprecated" && rng.chance(70) {
            spec["sunset"] = json!(rng.pick(&["2026-06-01T00:00:00Z", "2027-06-01T00:00:00Z"]));
        }
        if rng.chance(40) {
            spec["hostnames"] = json!([rng.pick(HOSTS)]);
        }
        if rng.chance(50) {
            spec["limits"] =
                json!({ "requestsPerMinute": 1 + rng.below(100), "tokensPerMinute": 1000 });
        }
        let r = route(ns(&mut rng), &name(&mut rng, "route"), spec);
        inputs.routes.push(time(&mut rng, r));
    }
    for _ in 0..rng.below(8) {
        let keys: Vec<Value> = (0..1 + rng.below(2))
            .map(|i| {
                let mut k = if rng.chance(20) {
                    json!({ "name": format!("key{i}"), "generate": true })
                } else {
                    json!({ "name": format!("key{i}"), "secretRef": { "name": name(&mut rng, "ckey") } })
                };
                if rng.chance(25) {
                    k["expiresAt"] = json!(rng.pick(&["2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"]));
                }
                k
            })
            .collect();
        let c = consumer(
            ns(&mut rng),
            &name(&mut rng, "app"),
            json!({ "keys": keys }),
        );
        inputs.consumers.push(time(&mut rng, c));
    }
    for _ in 0..rng.below(10) {
        let mut spec = json!({ "consumer": name(&mut rng, "app"), "route": { "name": name(&mut rng, "route") } });
        if rng.chance(40) {
            spec["route"]["namespace"] = json!(rng.pick(&["team-a", "team-b", "platform"]));
        }
        if rng.chance(60) {
            spec["decision"] = json!(rng.pick(&["Approved", "Rejected", "Revoked"]));
            spec["decisionReason"] = json!("because");
        }
        if rng.chance(40) {
            spec["limits"] = json!({ "requestsPerMinute": 1 + rng.below(200) });
        }
        let s = subscription(ns(&mut rng), &name(&mut rng, "sub"), spec);
        inputs.subscriptions.push(time(&mut rng, s));
    }
    for ns in ["team-a", "team-b", "platform", "default"] {
        for stem in ["cred", "ckey"] {
            for i in 0..4 {
                if rng.chance(70) {
                    let value = rng.pick(KEYS);
                    let s = if rng.chance(50) {
                        secret(ns, &format!("{stem}{i}"), &[("apiKey", value)])
                    } else {
                        secret_data(ns, &format!("{stem}{i}"), &[("apiKey", value.as_bytes())])
                    };
                    inputs.secrets.push(s);
                }
            }
        }
    }
    inputs
}

/// The same resources in another order.
pub fn shuffled(inputs: &Inputs, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let mut out = inputs.clone();
    rng.shuffle(&mut out.providers);
    rng.shuffle(&mut out.routes);
    rng.shuffle(&mut out.consumers);
    rng.shuffle(&mut out.subscriptions);
    rng.shuffle(&mut out.secrets);
    out
}
