//! Security features against the real binary, with certificates made by the
//! real `openssl` CLI at test time:
//! - server-to-server mutual TLS: three servers with certificates from one
//!   CA form a cluster; a server whose certificate comes from another CA
//!   never joins; plain TCP and certificate-less TLS get nothing;
//! - the TLS flags' validation (all three or none; unreadable PEM);
//! - the `--acl-token` master token over HTTP and through the CLI;
//! - HTTPS health checks, with and without `TLSSkipVerify`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::agent::{Agent, BIN};

// ------------------------------------------------------------ certificates

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA: `<name>.pem` and `<name>.key` in `dir`.
struct Ca {
    dir: PathBuf,
    name: String,
    serial: std::cell::Cell<u32>,
}

struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let cnf = format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {name}\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        );
        std::fs::write(dir.join(format!("{name}.cnf")), cnf).unwrap();
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(EC);
        let (cnf, key, pem) = (
            format!("{name}.cnf"),
            format!("{name}.key"),
            format!("{name}.pem"),
        );
        args.extend([
            "-config",
            &cnf,
            "-extensions",
            "v3_ca",
            "-keyout",
            &key,
            "-out",
            &pem,
        ]);
        openssl(dir, &args);
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            serial: std::cell::Cell::new(1),
        }
    }

    fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A leaf for `ip`, good for TLS servers and clients.
    fn issue(&self, leaf: &str, ip: &str) -> Cert {
        let dir = &self.dir;
        std::fs::write(
            dir.join(format!("{leaf}.cnf")),
            format!("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {leaf}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{leaf}.ext")),
            format!(
                "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = IP:{ip}\n"
            ),
        )
        .unwrap();
        let (cnf, key, csr, pem, ext) = (
            format!("{leaf}.cnf"),
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.pem"),
            format!("{leaf}.ext"),
        );
        let mut args = vec!["req", "-new", "-nodes", "-config", &cnf];
        args.extend(EC);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &args);
        let serial = self.serial.get();
        self.serial.set(serial + 1);
        let (ca_pem, ca_key, serial) = (
            format!("{}.pem", self.name),
            format!("{}.key", self.name),
            serial.to_string(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
        Cert {
            cert: dir.join(pem),
            key: dir.join(key),
        }
    }
}

/// A self-signed certificate for 127.0.0.1 that no one trusts.
fn self_signed(dir: &Path) -> Cert {
    std::fs::write(
        dir.join("self.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = self-signed\n\
         [v3]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1\n",
    )
    .unwrap();
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC);
    args.extend([
        "-config",
        "self.cnf",
        "-extensions",
        "v3",
        "-keyout",
        "self.key",
        "-out",
        "self.pem",
    ]);
    openssl(dir, &args);
    Cert {
        cert: dir.join("self.pem"),
        key: dir.join("self.key"),
    }
}

// ------------------------------------------------------------------ agents

/// A running process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// reqwest is built without a default rustls provider: install pilotfish's.
fn client() -> reqwest::Client {
    pilotfish::discovery::server::tls::install_default_provider();
    reqwest::Client::new()
}

/// A `--dev` agent on free loopback ports with extra flags and environment.
fn dev(extra: &[&str], env: &[(&str, &Path)]) -> Agent {
    let mut b = Agent::dev().args(["--node", "sec"]).args(extra);
    for (k, v) in env {
        b = b.env(k, Some(v.to_str().unwrap()));
    }
    b.start()
}

/// `pilotfish ARGS` against `a`, with `token` (or none) in `CONSUL_HTTP_TOKEN`.
fn cli(a: &Agent, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("CONSUL_HTTP_ADDR", a.http.to_string())
        .env_remove("CONSUL_HTTP_TOKEN");
    if let Some(t) = token {
        cmd.env("CONSUL_HTTP_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ------------------------------------------------------- server-to-server TLS

const SUBNET: &str = "127.0.92";

/// `pilotfish agent --server` number `n` on 127.0.92.n with these TLS files.
fn tls_server(n: u8, cert: &Cert, ca: &Path, data: &Path) -> Agent {
    let ip = format!("{SUBNET}.{n}");
    let mut b = Agent::on(&ip)
        .args(["--server", "--bootstrap-expect", "3"])
        .args(["--node", &format!("s{n}"), "--bind", &ip, "--data-dir"])
        .arg(data)
        .ports(8500, 8600, 8300)
        .args(["--log-level", "warn", "--tls-cert"])
        .arg(&cert.cert)
        .arg("--tls-key")
        .arg(&cert.key)
        .arg("--tls-ca")
        .arg(ca);
    for peer in 1..=3 {
        b = b.args(["--retry-join", &format!("{SUBNET}.{peer}")]);
    }
    b.start()
}

fn api(n: u8, path: &str) -> String {
    format!("http://{SUBNET}.{n}:8500{path}")
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    match http.get(url).send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

async fn peer_count(http: &reqwest::Client, n: u8) -> usize {
    get_json(http, &api(n, "/v1/status/peers"))
        .await
        .as_array()
        .map_or(0, Vec::len)
}

async fn member_names(http: &reqwest::Client, n: u8) -> Vec<String> {
    let members = get_json(http, &api(n, "/v1/agent/members")).await;
    let mut names: Vec<String> = members
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["Name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

async fn node_names(http: &reqwest::Client, n: u8) -> Vec<String> {
    let nodes = get_json(http, &api(n, "/v1/catalog/nodes?stale")).await;
    let mut names: Vec<String> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["Node"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_servers_form_a_cluster_and_refuse_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let other_ca = Ca::new(dir.path(), "other-ca");
    let data: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let _servers: Vec<Agent> = (1..=3u8)
        .map(|n| {
            let cert = ca.issue(&format!("s{n}"), &format!("{SUBNET}.{n}"));
            tls_server(n, &cert, &ca.pem(), data[usize::from(n) - 1].path())
        })
        .collect();
    let http = client();

    // The three form one cluster: every server sees three voters.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for n in 1..=3 {
            counts.push(peer_count(&http, n).await);
        }
        if counts == [3, 3, 3] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 3-server cluster over TLS; peers per server: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A write on one server replicates to the others (over TLS).
    let r = http
        .put(api(1, "/v1/kv/over-tls"))
        .body("yes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 2..=3 {
        loop {
            let r = http
                .get(api(n, "/v1/kv/over-tls?raw&stale"))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                assert_eq!(r.text().await.unwrap(), "yes");
                break;
            }
            assert!(Instant::now() < deadline, "s{n} never got the write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A fourth server whose certificate comes from another CA (and which
    // trusts only that CA) retries joining all along, and never gets in.
    let stranger = other_ca.issue("s4", &format!("{SUBNET}.4"));
    let _s4 = tls_server(4, &stranger, &other_ca.pem(), data[3].path());
    // Several retry-join rounds (1 s) and member-probe periods (0.5 s): a
    // period in which it must never get in, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for n in 1..=3 {
        assert_eq!(
            member_names(&http, n).await,
            ["s1", "s2", "s3"],
            "members of s{n}"
        );
        assert_eq!(peer_count(&http, n).await, 3, "peers of s{n}");
        assert_eq!(
            node_names(&http, n).await,
            ["s1", "s2", "s3"],
            "catalog of s{n}"
        );
    }
    assert_eq!(member_names(&http, 4).await, ["s4"], "s4 reached no one");
    assert_eq!(peer_count(&http, 4).await, 0, "s4 is in no raft cluster");

    // Plain TCP on the server port: no HTTP answer, whatever is asked.
    let mut plain = TcpStream::connect(format!("{SUBNET}.1:8300")).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = "POST /pilotfish/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    plain.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain TCP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // TLS that trusts the CA but has no client certificate: refused too.
    let mut s_client = Command::new("openssl");
    s_client
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("{SUBNET}.1:8300"),
        ])
        .arg("-CAfile")
        .arg(ca.pem())
        .stdin(Stdio::piped());
    let mut child = s_client
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /pilotfish/v1/members HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    assert!(
        !out(&o).contains("HTTP/1.1"),
        "a client without a certificate got: {}",
        out(&o)
    );
}

/// `pilotfish agent --dev` with `flags`: it must exit 1 at once; its stderr.
fn refused(flags: &[&str]) -> String {
    Agent::dev().args(flags).refused()
}

#[test]
fn tls_flags_are_validated_with_the_flag_and_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let good = ca.issue("n1", "127.0.0.1");
    let other = ca.issue("n2", "127.0.0.1");
    let (cert, key, ca_pem) = (
        good.cert.to_str().unwrap(),
        good.key.to_str().unwrap(),
        ca.pem(),
    );
    let ca_pem = ca_pem.to_str().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let broken = broken.to_str().unwrap();

    let together = "--tls-cert, --tls-key and --tls-ca go together: give all three or none";
    assert!(refused(&["--tls-cert", cert]).contains(together));
    assert!(refused(&["--tls-cert", cert, "--tls-key", key]).contains(together));
    assert!(refused(&["--tls-ca", ca_pem]).contains(together));

    let missing = dir.path().join("nope.pem");
    let e = refused(&[
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        key,
        "--tls-ca",
        ca_pem,
    ]);
    assert!(
        e.contains(&format!("--tls-cert {}: no such file", missing.display())),
        "{e}"
    );

    let e = refused(&["--tls-cert", garbage, "--tls-key", key, "--tls-ca", ca_pem]);
    assert!(
        e.contains(&format!("--tls-cert {garbage}: no PEM certificate")),
        "{e}"
    );
    let e = refused(&["--tls-cert", cert, "--tls-key", garbage, "--tls-ca", ca_pem]);
    assert!(e.contains(&format!("--tls-key {garbage}: ")), "{e}");
    assert!(e.contains("private key is needed"), "{e}");
    let e = refused(&["--tls-cert", cert, "--tls-key", key, "--tls-ca", garbage]);
    assert!(
        e.contains(&format!("--tls-ca {garbage}: no PEM certificate")),
        "{e}"
    );
    let e = refused(&["--tls-cert", cert, "--tls-key", key, "--tls-ca", broken]);
    assert!(e.contains(&format!("--tls-ca {broken}: ")), "{e}");
    // A key that is not the certificate's.
    let wrong_key = other.key.to_str().unwrap();
    let e = refused(&[
        "--tls-cert",
        cert,
        "--tls-key",
        wrong_key,
        "--tls-ca",
        ca_pem,
    ]);
    assert!(e.contains(&format!("--tls-cert {cert}")), "{e}");
    assert!(e.contains(&format!("--tls-key {wrong_key}")), "{e}");
    assert!(
        e.contains("is not the private key of the certificate"),
        "{e}"
    );
}

// ------------------------------------------------------------------- ACLs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_token_guards_the_api_and_the_cli() {
    let a = dev(&["--acl-token", "s3cret"], &[]);
    let http = client();

    // Without a token, or with a wrong one: 403 Permission denied.
    for (what, req) in [
        ("no token", http.get(a.url("/v1/kv/k"))),
        (
            "wrong header",
            http.get(a.url("/v1/kv/k")).header("X-Consul-Token", "nope"),
        ),
        ("wrong query", http.get(a.url("/v1/kv/k?token=nope"))),
        ("write", http.put(a.url("/v1/kv/k")).body("v")),
        ("agent", http.get(a.url("/v1/agent/self"))),
        ("snapshot", http.get(a.url("/v1/snapshot"))),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        assert_eq!(r.text().await.unwrap(), "Permission denied", "{what}");
    }
    // Each of the three places a token goes.
    let r = http
        .put(a.url("/v1/kv/k"))
        .header("X-Consul-Token", "s3cret")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status(), r.text().await.unwrap().as_str()),
        (StatusCode::OK, "true")
    );
    for (what, req) in [
        (
            "header",
            http.get(a.url("/v1/kv/k?raw"))
                .header("X-Consul-Token", "s3cret"),
        ),
        (
            "bearer",
            http.get(a.url("/v1/kv/k?raw")).bearer_auth("s3cret"),
        ),
        ("query", http.get(a.url("/v1/kv/k?raw&token=s3cret"))),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{what}");
        assert_eq!(r.text().await.unwrap(), "v", "{what}");
    }
    // Status endpoints stay open (health probes and `consul info`-less scripts).
    let r = http.get(a.url("/v1/status/leader")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let leader: String = r.json().await.unwrap();
    assert!(leader.starts_with("127.0.0.1:"), "{leader:?}");
    let r = http.get(a.url("/v1/status/peers")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The CLI sends CONSUL_HTTP_TOKEN...
    let put = cli(&a, &["kv", "put", "cli", "yes"], Some("s3cret"));
    assert!(put.status.success(), "{}", err(&put));
    assert_eq!(out(&put), "Success! Data written to: cli\n");
    let get = cli(&a, &["kv", "get", "cli"], Some("s3cret"));
    assert_eq!(out(&get), "yes\n");
    let info = cli(&a, &["info"], Some("s3cret"));
    assert!(info.status.success(), "{}", err(&info));
    // ...and without it says what is wrong and what to do.
    let put = cli(&a, &["kv", "put", "cli", "no"], None);
    assert_eq!(put.status.code(), Some(1));
    assert_eq!(
        err(&put),
        "Error! Failed writing data: Unexpected response code: 403 (Permission denied); \
         the agent requires an ACL token: set CONSUL_HTTP_TOKEN or --token to its --acl-token\n"
    );
    let get = cli(&a, &["kv", "get", "cli"], None);
    assert_eq!(get.status.code(), Some(1));
    assert!(
        err(&get).contains("403 (Permission denied)"),
        "{}",
        err(&get)
    );
    let info = cli(&a, &["info"], Some("wrong"));
    assert_eq!(info.status.code(), Some(1));
    assert!(
        err(&info).contains("the token in CONSUL_HTTP_TOKEN/--token was refused"),
        "{}",
        err(&info)
    );
    // Nothing was written by the refused commands.
    let get = cli(&a, &["kv", "get", "cli"], Some("s3cret"));
    assert_eq!(out(&get), "yes\n");
    // --token works like the variable.
    let r = cli(&a, &["kv", "get", "--token", "s3cret", "cli"], None);
    assert_eq!(out(&r), "yes\n");
    drop(a);
}

// ------------------------------------------------------------ HTTPS checks

/// A python3 HTTPS server on 127.0.0.1 with this certificate; its port.
fn https_server(dir: &Path, cert: &Cert) -> (Proc, u16) {
    let script = dir.join("https_server.py");
    std::fs::write(
        &script,
        r#"import http.server, ssl, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"secure ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#,
    )
    .unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&cert.cert)
        .arg(&cert.key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port? {line:?}"));
    (Proc(child), port)
}

async fn register_check(http: &reqwest::Client, a: &Agent, id: &str, url: &str, skip: bool) {
    let mut def = json!({"ID": id, "Name": id, "HTTP": url, "Interval": "1s", "Timeout": "5s"});
    if skip {
        def["TLSSkipVerify"] = json!(true);
    }
    let r = http
        .put(a.url("/v1/agent/check/register"))
        .body(def.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// Wait until check `id` has `status` and an output containing `needle`.
async fn wait_check(
    http: &reqwest::Client,
    a: &Agent,
    id: &str,
    status: &str,
    needle: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let checks = get_json(http, &a.url("/v1/agent/checks")).await;
        let c = &checks[id];
        let output = c["Output"].as_str().unwrap_or_default().to_string();
        if c["Status"] == status && output.contains(needle) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "check {id}: wanted {status} with {needle:?}, have {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_verify_certificates_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "roots");
    let trusted = ca.issue("trusted", "127.0.0.1");
    let untrusted = self_signed(dir.path());
    let (_good_server, good_port) = https_server(dir.path(), &trusted);
    let (_self_server, self_port) = https_server(dir.path(), &untrusted);
    // The agent's system roots are this CA alone (rustls-native-certs reads
    // SSL_CERT_FILE), so "verified" is decided by the test, not the host.
    let a = dev(&[], &[("SSL_CERT_FILE", &ca.pem())]);
    let http = client();
    let good = format!("https://127.0.0.1:{good_port}/");
    let selfsigned = format!("https://127.0.0.1:{self_port}/");

    register_check(&http, &a, "trusted", &good, false).await;
    register_check(&http, &a, "skip", &selfsigned, true).await;
    register_check(&http, &a, "verify", &selfsigned, false).await;

    let o = wait_check(&http, &a, "trusted", "passing", "secure ok").await;
    assert_eq!(o, format!("HTTP GET {good}: 200 OK Output: secure ok"));
    let o = wait_check(&http, &a, "skip", "passing", "secure ok").await;
    assert_eq!(
        o,
        format!("HTTP GET {selfsigned}: 200 OK Output: secure ok")
    );
    let o = wait_check(&http, &a, "verify", "critical", "not trusted").await;
    assert!(
        o.starts_with(&format!(
            "GET {selfsigned}: x509: certificate signed by unknown authority"
        )),
        "{o}"
    );
    assert!(o.contains("TLSSkipVerify"), "{o}");
    // Stays critical: the runner did not fall back to skipping. A period in
    // which nothing may change (a few of the check's runs), not a wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_check(&http, &a, "verify", "critical", "not trusted").await;
}
