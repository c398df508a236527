use pilotfish::config::import::import_containerpilot;
#[test]
fn dump() {
    for f in ["consul", "nginx", "json5-features"] {
        let text = std::fs::read_to_string(format!("tests/fixtures/containerpilot/{f}.json5"))
            .expect("read");
        match import_containerpilot(&text) {
            Ok(i) => println!("===== {f}\n{}", i.toml),
            Err(e) => println!("===== {f} ERROR {e}"),
        }
    }
}
