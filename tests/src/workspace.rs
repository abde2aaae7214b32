//! Where the repository's files are, and the workspace binaries that the end-to-end tests run.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The repository root: manifests, examples, the chart and the README are read from here.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Helm chart, `charts/tollgate`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/tollgate")
}

/// The directory holding `tollgate-controller` and `tollgate-proxy`, built on first use.
///
/// The build runs once per test process and is a no-op when the binaries are fresh. The cargo
/// profile is `dev` unless `TOLLGATE_E2E_PROFILE` names another (e.g. `release`, to measure).
pub fn tollgate_binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let profile = std::env::var("TOLLGATE_E2E_PROFILE").unwrap_or_else(|_| "dev".into());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(repo_root()).args([
            "build",
            "--profile",
            &profile,
            "-p",
            "tollgate-controller",
            "-p",
            "tollgate-proxy",
            "--bins",
        ]);
        // `cargo test` gives this process the variables it gives a crate's build (CARGO_MANIFEST_DIR,
        // CARGO_PKG_NAME, ...). Build scripts such as ring's rerun when those change, so passing them
        // on would rebuild half the dependency tree here and again in the next ordinary build. The
        // caller's own settings stay (CARGO_INCREMENTAL among them: a different value rebuilds every
        // workspace crate).
        for (key, _) in std::env::vars() {
            let from_cargo_test = (key.starts_with("CARGO_")
                && !matches!(
                    key.as_str(),
                    "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_INCREMENTAL"
                ))
                || key == "OUT_DIR";
            if from_cargo_test {
                build.env_remove(key);
            }
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the controller and proxy failed");
        // A test binary is target/<profile dir>/deps/<name>; the bins are in target/<profile dir>/.
        let exe = std::env::current_exe().expect("test executable path");
        let target = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .expect("target dir");
        // Cargo's `dev` profile builds into `debug`; every other profile into its own name.
        let dir = if profile == "dev" { "debug" } else { &profile };
        target.join(dir)
    })
}

/// The ```sh blocks of the README section `## <section>`, each as its list of non-empty lines.
pub fn readme_shell_blocks(section: &str) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("README has the section {section}"));
    let body = &readme[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("```sh\n") {
        let block = &rest[open + 6..];
        let close = block.find("```").expect("closed code block");
        blocks.push(
            block[..close]
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        );
        rest = &block[close + 3..];
    }
    blocks
}
