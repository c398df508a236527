//! `pilotfish snapshot inspect FILE` as `consul snapshot inspect`: the
//! archive's metadata, then its records by type (count and size, largest
//! first); `--format json` prints Consul's JSON (3-space indent). A file in
//! the older `pilotfish-snapshot` format is read too (no ID or term).

use std::path::{Path, PathBuf};

use crate::discovery::api::snapshot::{InspectMeta, InspectOutput};
use crate::discovery::snapshot::{self, archive};

/// `snapshot inspect` flags.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// `pretty` (the default) or `json`.
    #[arg(long, default_value = "pretty")]
    pub format: String,
    pub file: PathBuf,
}

pub fn run(args: &InspectArgs) -> Result<String, String> {
    if args.format != "pretty" && args.format != "json" {
        return Err(format!(
            "Error parsing format: Unknown format: {}",
            args.format
        ));
    }
    let out = inspect(&args.file)?;
    if args.format == "json" {
        let mut buf = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut buf,
            serde_json::ser::PrettyFormatter::with_indent(b"   "),
        );
        serde::Serialize::serialize(&out, &mut ser).map_err(|e| e.to_string())?;
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(pretty(&out))
}

fn inspect(file: &Path) -> Result<InspectOutput, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("Error opening snapshot file: {e}"))?;
    let (meta, state) = if archive::is_archive(&bytes) {
        let a = archive::read(&bytes, usize::MAX / 2)
            .map_err(|e| format!("Error extracting snapshot data: {e}"))?;
        let m = InspectMeta {
            id: a.meta.id,
            size: a.meta.size,
            index: a.meta.index,
            term: a.meta.term,
            version: a.meta.version,
        };
        (m, a.state)
    } else {
        let f = snapshot::decode(&bytes).map_err(|e| format!("Error verifying snapshot: {e}"))?;
        let state = serde_json::to_vec(&f.snapshot).map_err(|e| e.to_string())?;
        let m = InspectMeta {
            id: String::new(),
            size: state.len() as u64,
            index: f.index,
            term: 0,
            version: 1,
        };
        (m, state)
    };
    let stats =
        archive::stats(&state).map_err(|e| format!("Error extracting snapshot data: {e}"))?;
    Ok(InspectOutput {
        meta,
        total_size: stats.iter().map(|s| s.sum).sum(),
        stats,
    })
}

/// Consul's tabwriter layout.
fn pretty(out: &InspectOutput) -> String {
    let m = &out.meta;
    let mut text = format!(
        "{:<13}{}\n{:<13}{}\n{:<13}{}\n{:<13}{}\n{:<13}{}\n\n\n",
        "ID", m.id, "Size", m.size, "Index", m.index, "Term", m.term, "Version", m.version
    );
    let row = |a: &str, b: &str, c: &str| format!(" {a:<28}{b:<11}{c}\n");
    text.push_str(&row("Type", "Count", "Size"));
    text.push_str(&row("----", "----", "----"));
    for s in &out.stats {
        text.push_str(&row(
            &s.name,
            &s.count.to_string(),
            &archive::byte_size(s.sum),
        ));
    }
    text.push_str(&row("----", "----", "----"));
    text.push_str(&row("Total", "", &archive::byte_size(out.total_size)));
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::api::snapshot::TypeStats;

    #[test]
    fn pretty_output_is_consuls() {
        let out = InspectOutput {
            meta: InspectMeta {
                id: "2-11-1602262512378".into(),
                size: 4863,
                index: 11,
                term: 2,
                version: 1,
            },
            stats: vec![
                TypeStats {
                    name: "Register".into(),
                    sum: 1638,
                    count: 3,
                },
                TypeStats {
                    name: "Index".into(),
                    sum: 313,
                    count: 11,
                },
            ],
            total_size: 4813,
        };
        assert_eq!(
            pretty(&out),
            "ID           2-11-1602262512378
Size         4863
Index        11
Term         2
Version      1


 Type                        Count      Size
 ----                        ----       ----
 Register                    3          1.6KB
 Index                       11         313B
 ----                        ----       ----
 Total                                  4.7KB"
        );
    }
}
