//! Writes one YAML file per CRD into the `crds/` folder (or the folder given as the first argument).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for crd in tollgate_crds::all_crds() {
        let path = dir.join(tollgate_crds::crd_file_name(&crd));
        std::fs::write(&path, tollgate_crds::render_crd(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
