//! The `pilotfish` command: parse the CLI, load config, build the runtime, call
//! one `run` function and map the result to an exit status. Nothing else exits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pilotfish::config::{self, EXIT_CONFIG};
use pilotfish::control::client::{self, ClientCommand};

#[derive(Parser)]
#[command(name = "pilotfish", version = pilotfish::VERSION, about = "PID-1 supervisor with Consul-compatible discovery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Supervise the jobs of a config file (the container ENTRYPOINT).
    Run {
        #[arg(long, short, env = "PILOTFISH_CONFIG")]
        config: PathBuf,
    },
    /// Check or convert config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Render the config's [[templates]] from Consul without the supervisor.
    Template {
        #[arg(long, short, env = "PILOTFISH_CONFIG")]
        config: PathBuf,
        /// Render once every query has answered, install, run reload commands, exit.
        #[arg(long)]
        once: bool,
        /// Print what would be written ("> path" and the contents); write nothing, run nothing.
        #[arg(long)]
        dry: bool,
    },
    /// Print the version.
    Version,
    /// Ask a running pilotfish to reload its config (an invalid config changes nothing).
    Reload(SocketArg),
    /// Turn maintenance mode on or off.
    Maintenance {
        #[arg(value_parser = ["enable", "disable"])]
        mode: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Set environment variables for jobs started from now on (K=V; K= sets empty; -u K unsets).
    Putenv {
        /// Unset these variables instead of setting them.
        #[arg(short = 'u', long = "unset")]
        unset: bool,
        #[arg(required = true)]
        vars: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Record values of metrics declared in [[telemetry.metrics]] (NAME=VALUE).
    Putmetric {
        #[arg(required = true)]
        values: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Check that pilotfish answers on its control socket.
    Ping(SocketArg),
    /// Show every job's state.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Run the Consul-compatible discovery server/agent.
    // Boxed: the agent's flags would make every other command as large.
    Agent(Box<pilotfish::discovery::server::run::AgentArgs>),
    /// Register Docker containers with a Consul agent (Registrator's conventions).
    Registrator(Box<pilotfish::registrator::run::RegistratorArgs>),
    #[command(flatten)]
    Consul(pilotfish::cli::ConsulCommand),
}

#[derive(clap::Args)]
struct SocketArg {
    /// The control socket of the running pilotfish.
    #[arg(long, env = "PILOTFISH_SOCKET", default_value = config::DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and report every error.
    Check { file: PathBuf },
    /// Convert a ContainerPilot config (1.x, 2.x or 3.x, told apart by its
    /// keys) to pilotfish TOML. For 1.x/2.x give the application ContainerPilot
    /// ran after `--`: `pilotfish config import cp.json -- nginx -g 'daemon off;'`.
    Import {
        file: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The application's command line (ContainerPilot 1.x/2.x's APP ARGS).
        #[arg(last = true)]
        app: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Before anything else, and before any thread exists.
    if pilotfish::pid1::is_pid1() {
        if let Some(status) = pilotfish::pid1::keep() {
            return exit(status);
        }
    }
    // `event` and `watch` also take Consul's single-dash flags.
    let cli = Cli::parse_from(pilotfish::cli::go_flags::consul_style(
        std::env::args_os().collect(),
    ));
    match cli.command {
        Command::Run { config } => run(config),
        Command::Template { config, once, dry } => template(config, once, dry),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match config::load(&file) {
            Ok(cfg) => print_out(&format!(
                "{}: ok ({} jobs)\n",
                file.display(),
                cfg.jobs.len()
            )),
            Err(e) => config_error(&file, &e),
        },
        Command::Config {
            command: ConfigCommand::Import { file, output, app },
        } => import(&file, output, &app),
        Command::Version => print_out(&format!("pilotfish {}\n", pilotfish::VERSION)),
        Command::Reload(s) => client(s.socket, ClientCommand::Reload),
        Command::Maintenance { mode, socket } => client(
            socket.socket,
            ClientCommand::Maintenance {
                enable: mode == "enable",
            },
        ),
        Command::Putenv {
            unset: false,
            vars,
            socket,
        } => client(socket.socket, ClientCommand::PutEnv(vars)),
        Command::Putenv {
            unset: true,
            vars,
            socket,
        } => client(socket.socket, ClientCommand::UnsetEnv(vars)),
        Command::Putmetric { values, socket } => {
            client(socket.socket, ClientCommand::PutMetric(values))
        }
        Command::Ping(s) => client(s.socket, ClientCommand::Ping),
        Command::Status { json, socket } => client(socket.socket, ClientCommand::Status { json }),
        Command::Agent(args) => {
            pilotfish::discovery::server::run::prepare_process();
            match runtime(true) {
                Ok(rt) => exit(rt.block_on(pilotfish::discovery::server::run::run(*args))),
                Err(e) => {
                    eprintln!("pilotfish: cannot start the runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Registrator(args) => match runtime(false) {
            Ok(rt) => exit(rt.block_on(pilotfish::registrator::run::run(*args))),
            Err(e) => {
                eprintln!("pilotfish: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Consul(cmd) => match runtime(false) {
            Ok(rt) => exit(rt.block_on(pilotfish::cli::run(cmd))),
            Err(e) => {
                eprintln!("pilotfish: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Write a command's output to stdout. SIGPIPE is ignored in every pilotfish
/// process (Rust's default, and the supervisor must never die of it), so a
/// reader that went away (`pilotfish status | head -1`) shows up as EPIPE
/// here: the reader wants no more, which is not an error worth a panic (what
/// `println!` does with it).
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pilotfish: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from((code & 0xff) as u8)
}

fn config_error(file: &std::path::Path, e: &config::LoadError) -> ExitCode {
    let msgs = e.messages();
    eprintln!(
        "pilotfish: {} has {} error{}; nothing was started:",
        file.display(),
        msgs.len(),
        if msgs.len() == 1 { "" } else { "s" }
    );
    for m in msgs {
        eprintln!("  {m}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

fn template(path: PathBuf, once: bool, dry: bool) -> ExitCode {
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => return config_error(&path, &e),
    };
    let (_level, _flush) = pilotfish::logging::init(&cfg.logging);
    match runtime(false) {
        Ok(rt) => exit(rt.block_on(pilotfish::app::run_templates(
            cfg,
            pilotfish::template::Mode { once, dry },
        ))),
        Err(e) => {
            eprintln!("pilotfish: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => return config_error(&path, &e),
    };
    let (level, _flush) = pilotfish::logging::init(&cfg.logging);
    // One thread: the supervisor's work is small and never blocks, and it keeps
    // pilotfish's footprint next to tini's.
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pilotfish: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on_reload = Box::new(move |c: &config::Config| level.set(&c.logging.level));
    let code = rt.block_on(pilotfish::app::run(cfg, Some(path), on_reload));
    drop(rt);
    exit(code)
}

fn import(file: &std::path::Path, output: Option<PathBuf>, app: &[String]) -> ExitCode {
    // The same limits as a config pilotfish runs: a regular file, at most 4 MiB.
    let text = match config::read_file(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pilotfish: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match config::import::import_containerpilot_with(&text, app) {
        Ok(imported) => {
            eprintln!("pilotfish: {} converted", imported.version);
            for line in &imported.implicit {
                eprintln!("implicit: {line}");
            }
            for note in &imported.notes {
                eprintln!("note: {note}");
            }
            match output {
                Some(out) => match std::fs::write(&out, &imported.toml) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("pilotfish: writing {}: {e}", out.display());
                        ExitCode::FAILURE
                    }
                },
                None => print_out(&imported.toml),
            }
        }
        Err(e) => {
            eprintln!("pilotfish: {}: {e}", file.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn client(socket: PathBuf, cmd: ClientCommand) -> ExitCode {
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pilotfish: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(client::run(&socket, cmd)) {
        Ok(out) if out.is_empty() => ExitCode::SUCCESS,
        Ok(out) => print_out(&format!("{}\n", out.trim_end())),
        Err(e) => {
            eprintln!("pilotfish: {e}");
            ExitCode::FAILURE
        }
    }
}
