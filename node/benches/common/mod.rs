//! Benchmark figures as JSON, so that runs can be compared:
//! `target/bench-results/<bench>.json` holds
//! `{ "measure": { "value": x, "goal": y, "better": "lower" | "higher" } }`.

use std::path::PathBuf;

/// Which way a figure improves.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // each bench uses its own share of these
pub enum Better {
    Lower,
    Higher,
}

/// Writes `figures` (measure, value, goal, better) for `bench`, and says where.
pub fn write(bench: &str, figures: &[(&str, f64, f64, Better)]) {
    let map: serde_json::Map<String, serde_json::Value> = figures
        .iter()
        .map(|(measure, value, goal, better)| {
            let better = match better {
                Better::Lower => "lower",
                Better::Higher => "higher",
            };
            (measure.to_string(), serde_json::json!({ "value": value, "goal": goal, "better": better }))
        })
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    let path = dir.join(format!("{bench}.json"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| serde_json::to_vec_pretty(&map).map_err(std::io::Error::other))
        .and_then(|json| std::fs::write(&path, json));
    match written {
        Ok(()) => println!("    figures written to {}", path.display()),
        Err(e) => eprintln!("    could not write {}: {e}", path.display()),
    }
}
