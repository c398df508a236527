//! `pilotfish registrator`: Docker containers registered with a Consul agent
//! from the Docker event stream, compatible with gliderlabs/registrator's
//! conventions (`SERVICE_*` env and labels, its IDs and flags) and without
//! its defects: it negotiates the Engine API version, decodes events by
//! `Type`/`Action`/`Actor`, reconnects a lost event stream with `since=` and
//! reconciles fully after, and never exits because Docker or Consul is down
//! for a while.
//!
//! - `rules` — the pure core: inspect JSON + flags → service definitions.
//! - `registry` — the pure state: what is registered, what a start, exit,
//!   removal or reconciliation must change ([`registry::Action`]s).
//! - `docker` — the Engine API over the Unix socket (hyper), its wire types.
//! - `run` — the shell: flags, the event loop, resync, signals.
//!
//! It reaches Consul only through `discovery::client` and the agent API
//! (never the catalog's: an agent's anti-entropy would undo that).

pub mod docker;
pub mod registry;
pub mod rules;
pub mod run;

use crate::discovery::client::{Options, TlsOptions};

/// The agent the registry URI names: `consul://HOST[:PORT]` (HTTP) or
/// `consul-tls://HOST[:PORT]` (HTTPS with `$CONSUL_CACERT`,
/// `$CONSUL_CLIENT_CERT`, `$CONSUL_CLIENT_KEY`, as Registrator reads them).
/// The port defaults to 8500. `env` reads a variable.
pub fn consul_options(uri: &str, env: impl Fn(&str) -> Option<String>) -> Result<Options, String> {
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
        format!("registry URI {uri:?}: expected consul://HOST:PORT or consul-tls://HOST:PORT")
    })?;
    if scheme != "consul" && scheme != "consul-tls" {
        return Err(format!(
            "registry URI {uri:?}: backend {scheme} is not supported; \
             use consul://HOST:PORT or consul-tls://HOST:PORT"
        ));
    }
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') {
        return Err(format!(
            "registry URI {uri:?}: expected consul://HOST:PORT (or consul-tls://) with no path"
        ));
    }
    let has_port = hostport.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    });
    let hostport = if has_port {
        hostport.to_owned()
    } else {
        format!("{hostport}:8500")
    };
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let token = nonempty("CONSUL_HTTP_TOKEN");
    match scheme {
        "consul" => Ok(Options {
            address: format!("http://{hostport}"),
            token,
            tls: TlsOptions::default(),
        }),
        _ => Ok(Options {
            address: format!("https://{hostport}"),
            token,
            tls: TlsOptions {
                ca_file: nonempty("CONSUL_CACERT").map(Into::into),
                cert_file: nonempty("CONSUL_CLIENT_CERT").map(Into::into),
                key_file: nonempty("CONSUL_CLIENT_KEY").map(Into::into),
                ..TlsOptions::default()
            },
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "CONSUL_HTTP_TOKEN" => Some("secret".into()),
            "CONSUL_CACERT" => Some("/ca.pem".into()),
            _ => None,
        }
    }

    #[test]
    fn registry_uris() {
        let o = consul_options("consul://127.0.0.1:8600", env).unwrap();
        assert_eq!(o.address, "http://127.0.0.1:8600");
        assert_eq!(o.token.as_deref(), Some("secret"));
        assert_eq!(
            consul_options("consul://consul", |_| None).unwrap().address,
            "http://consul:8500"
        );
        let o = consul_options("consul-tls://consul.example:8501/", env).unwrap();
        assert_eq!(o.address, "https://consul.example:8501");
        assert_eq!(o.tls.ca_file, Some("/ca.pem".into()));
        assert!(o.tls.verify);
        for bad in [
            "etcd://x:1/p",
            "consul-unix:///run/c.sock",
            "127.0.0.1:8500",
            "consul://",
        ] {
            let e = consul_options(bad, env).unwrap_err();
            assert!(e.contains("consul://HOST:PORT"), "{bad}: {e}");
        }
    }
}
