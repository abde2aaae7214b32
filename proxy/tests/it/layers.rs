//! The proxy's layer rule (proxy/README.md): a module imports only layers below its own, `llm/` uses
//! no async runtime or HTTP service types, and no files import each other in a circle.

use std::path::Path;

use tollgate_modgraph::{Graph, Layer};

/// Top to bottom. Layers of one height are siblings and may not import each other either.
const LAYERS: &[Layer] = &[
    Layer {
        module: "serve",
        height: 8,
        forbidden_crates: &[],
    },
    Layer {
        module: "gateway",
        height: 7,
        forbidden_crates: &[],
    },
    Layer {
        module: "call",
        height: 6,
        forbidden_crates: &[],
    },
    Layer {
        module: "control",
        height: 5,
        forbidden_crates: &[],
    },
    Layer {
        module: "limits",
        height: 5,
        forbidden_crates: &[],
    },
    Layer {
        module: "telemetry",
        height: 4,
        forbidden_crates: &[],
    },
    Layer {
        module: "guard",
        height: 4,
        forbidden_crates: &[
            "tokio",
            "hyper",
            "hyper_util",
            "http_body",
            "http_body_util",
            "tower_service",
        ],
    },
    Layer {
        module: "llm",
        height: 4,
        forbidden_crates: &[
            "tokio",
            "hyper",
            "hyper_util",
            "http_body",
            "http_body_util",
            "tower_service",
        ],
    },
    Layer {
        module: "upstream",
        height: 3,
        forbidden_crates: &[],
    },
    Layer {
        module: "error",
        height: 2,
        forbidden_crates: &[],
    },
    Layer {
        module: "clock",
        height: 2,
        forbidden_crates: &[],
    },
    Layer {
        module: "escape",
        height: 2,
        forbidden_crates: &[],
    },
];

fn proxy_sources() -> Graph {
    Graph::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).expect("proxy/src reads")
}

#[test]
fn every_module_imports_only_layers_below_its_own() {
    let violations = proxy_sources().check_layers(LAYERS);
    let text: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{} import(s) break the proxy's layer rule (see proxy/README.md):\n{}",
        violations.len(),
        text.join("\n")
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let cycles = proxy_sources().cycles();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}
