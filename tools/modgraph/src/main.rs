//! `modgraph DIR…`: prints every import circle among the files of each crate source folder given
//! (for example `proxy/src snapshot/src`) and exits 1 if there is one.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: modgraph SRC_DIR…   (for example: modgraph proxy/src snapshot/src)");
        return ExitCode::from(2);
    }
    let mut found = false;
    for dir in &dirs {
        let graph = match tollgate_modgraph::Graph::read(Path::new(dir)) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let cycles = graph.cycles();
        println!(
            "{dir}: {} files, {} imports between them, {} import circles",
            graph.files.len(),
            graph.edges.len(),
            cycles.len()
        );
        for c in &cycles {
            println!("{c}");
        }
        found |= !cycles.is_empty();
    }
    if found {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
