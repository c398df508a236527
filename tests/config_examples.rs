//! Every file in config-examples/ is parsed and validated, through the library
//! and through `pilotfish config check`, so the shipped examples never rot.

use std::process::Command;

#[test]
fn every_example_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    let mut checked = 0;
    // The top level and one level of folders (an example with its templates).
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config-examples/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("example folder") {
                paths.push(inner.expect("entry").path());
            }
        } else {
            paths.push(path);
        }
    }
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = pilotfish::config::load(&path)
            .unwrap_or_else(|e| panic!("{}:\n{}", path.display(), e.messages().join("\n")));
        assert!(!cfg.jobs.is_empty(), "{} has no jobs", path.display());
        let out = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .expect("config check");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 7,
        "expected the shipped examples, found {checked}"
    );
}

/// The images' configs validate too, with their template beside them as the
/// image lays it out.
#[test]
fn image_configs_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        root.join("config-examples/haproxy/haproxy.cfg.hbs"),
        dir.path().join("haproxy.cfg.hbs"),
    )
    .expect("copy the template");
    for name in ["app", "haproxy"] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::copy(root.join(format!("images/{name}/pilotfish.toml")), &path)
            .expect("copy the config");
        let cfg = pilotfish::config::load(&path)
            .unwrap_or_else(|e| panic!("images/{name}:\n{}", e.messages().join("\n")));
        assert!(
            cfg.jobs.iter().any(|j| j.primary),
            "images/{name} has a primary job"
        );
    }
}
