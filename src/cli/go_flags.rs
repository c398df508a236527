//! Consul's single-dash flags for `event` and `watch`: the `consul` CLI
//! parses with Go's `flag` package, so scripts say `consul event -name
//! deploy` and `consul watch -type key -key app/config handler`. Before
//! clap sees the arguments, `-name` and `-name=value` of these commands
//! become `--name`/`--name=value`, up to the first argument that is not a
//! flag (Go stops there too, so a handler's own `-x` is left alone).

use std::ffi::OsString;

/// Flags that take a value (`-flag value` or `-flag=value`).
const VALUED: &[&str] = &[
    "http-addr",
    "token",
    "name",
    "node",
    "service",
    "tag",
    "type",
    "key",
    "prefix",
    "state",
    "passingonly",
    "shell",
];
/// Flags that take none (`-flag`).
const BARE: &[&str] = &["stale"];

/// `argv` with the single-dash flags of `event` and `watch` doubled.
pub fn consul_style(argv: Vec<OsString>) -> Vec<OsString> {
    let Some(cmd) = argv.get(1).and_then(|a| a.to_str()) else {
        return argv;
    };
    if cmd != "event" && cmd != "watch" {
        return argv;
    }
    let mut out: Vec<OsString> = argv[..2].to_vec();
    let mut rest = argv[2..].iter();
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg.clone());
            break;
        };
        if text == "--" || !text.starts_with('-') || text == "-" {
            out.push(arg.clone());
            break;
        }
        let long = text.trim_start_matches('-');
        let (name, has_value) = match long.split_once('=') {
            Some((n, _)) => (n, true),
            None => (long, false),
        };
        let known = VALUED.contains(&name) || BARE.contains(&name);
        out.push(if known && !text.starts_with("--") {
            OsString::from(format!("--{long}"))
        } else {
            arg.clone()
        });
        // `shell` and `passingonly` are Go booleans: only `-flag=value`.
        let takes_next = VALUED.contains(&name) && !matches!(name, "shell" | "passingonly");
        if takes_next && !has_value {
            if let Some(v) = rest.next() {
                out.push(v.clone());
            }
        }
    }
    out.extend(rest.cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        consul_style(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn consuls_single_dash_flags_become_long_ones_up_to_the_handler() {
        assert_eq!(
            run(&[
                "pf",
                "event",
                "-name",
                "deploy",
                "-node=web",
                "-http-addr",
                "h:1",
                "-x"
            ]),
            [
                "pf",
                "event",
                "--name",
                "deploy",
                "--node=web",
                "--http-addr",
                "h:1",
                "-x"
            ]
        );
        assert_eq!(
            run(&[
                "pf",
                "watch",
                "-type",
                "key",
                "-key",
                "-odd",
                "-stale",
                "-shell=false",
                "h",
                "-k",
                "-name"
            ]),
            [
                "pf",
                "watch",
                "--type",
                "key",
                "--key",
                "-odd",
                "--stale",
                "--shell=false",
                "h",
                "-k",
                "-name"
            ]
        );
        assert_eq!(run(&["pf", "kv", "-name"]), ["pf", "kv", "-name"]);
        assert_eq!(
            run(&["pf", "watch", "--type", "event", "--", "-name"]),
            ["pf", "watch", "--type", "event", "--", "-name"]
        );
    }
}
