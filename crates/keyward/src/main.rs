//! The `keyward` binary: command line, configuration, logging, and the wiring
//! of store, service and HTTP server. The only crate that uses `anyhow`.

mod client;
mod config;
mod duties;
mod migrate;
mod scan;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

/// mimalloc: glibc's malloc and free were about a tenth of the CPU of an HTTP
/// verify under load (issue 11; figures in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  keyward init                          create ./keyward-data and print an admin root key
  keyward serve                         serve on 127.0.0.1:8080 with the embedded store
  keyward serve --listen 0.0.0.0:9000 --data-dir /var/lib/keyward
  export KEYWARD_ROOT_KEY=kw_root_...
  keyward keyspaces create --name prod --prefix sk_live
  keyward keys create --keyspace ks_... --owner-id acme --scope read --ttl 30d
  keyward keys list --owner-id acme --status active
  keyward keys revoke key_... --reason compromised
  keyward events --code NOT_FOUND --follow
  keyward keys rotate key_... --overlap 1h
  keyward scan .                        exit 1 when a key is found in the tree
  keyward incident report inc_...
  keyward root-keys create --name ci --role verifier
  keyward audit --verify
  keyward master-key generate > master.key   then  KEYWARD_MASTER_KEY_FILE=master.key keyward serve
  keyward alerts --follow               print alerts as they are raised
  keyward webhooks create --url https://ops.example.com/keyward
  source <(keyward completions bash)
";

/// API key management: issue, verify, log, alert, rotate, revoke.
#[derive(Parser)]
#[command(name = "keyward", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data dir and an admin root key, and print that key alone on stdout.
    #[command(after_help = "Examples:
  export KEYWARD_ROOT_KEY=$(keyward init --data-dir ./keyward-data)
  keyward init --generate-master-key /etc/keyward/master.key   # an encrypted data dir from the start
  KEYWARD_MASTER_KEY_FILE=/etc/keyward/master.key keyward serve")]
    Init(InitArgs),
    /// Run the HTTP server. On an empty data dir, first creates and prints an admin root key.
    #[command(
        after_help = "Examples:\n  keyward serve\n  KEYWARD_LOG_FORMAT=json keyward serve --listen 0.0.0.0:8080\n  keyward serve --proxy-listen 127.0.0.1:8081 --upstream http://127.0.0.1:3000"
    )]
    Serve(ServerArgs),
    /// Manage keyspaces on a running server.
    #[command(subcommand)]
    Keyspaces(client::KeyspacesCmd),
    /// Manage keys on a running server.
    #[command(subcommand)]
    Keys(client::KeysCmd),
    /// Print usage events from a running server (auditor or admin root key).
    Events(client::EventsCmd),
    /// Find keyward keys in files (offline); exits 1 when any are found.
    Scan(scan::ScanCmd),
    /// Incident records on a running server.
    #[command(subcommand)]
    Incident(client::IncidentCmd),
    /// Alerts raised by the rules engine: list, follow, show, acknowledge, resolve; the rules in force.
    Alerts(client::AlertsCmd),
    /// Webhook endpoints notified of alerts and key lifecycle changes, and their deliveries.
    #[command(subcommand)]
    Webhooks(client::WebhooksCmd),
    /// Root keys of the management API on a running server (admin).
    #[command(subcommand)]
    RootKeys(client::RootKeysCmd),
    /// Workspaces (isolated tenants) on a running server (admin).
    #[command(subcommand)]
    Workspaces(client::WorkspacesCmd),
    /// The admin audit log of a running server; --verify checks its hash chain.
    Audit(client::AuditCmd),
    /// The master key that encrypts the data dir at rest: generate one, see its status, rotate it online.
    #[command(subcommand)]
    MasterKey(client::MasterKeyCmd),
    /// Copy this data dir (keys, audit chain, events, everything) into an empty
    /// PostgreSQL database for several nodes, with progress, and check the copy.
    #[command(after_help = "Examples:
  keyward migrate --data-dir ./keyward-data --to postgres://keyward@db.internal/keyward --write-pepper pepper.hex
  KEYWARD_DATABASE_URL=postgres://keyward@db.internal/keyward KEYWARD_PEPPER_FILE=pepper.hex keyward serve")]
    Migrate(MigrateArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  source <(keyward completions bash)                       # this shell
  keyward completions zsh > \"${fpath[1]}/_keyward\"         # zsh, for good
  keyward completions fish > ~/.config/fish/completions/keyward.fish")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Settings of a local server; each overrides `KEYWARD_*` and the config file.
#[derive(Args, Clone, Debug)]
struct ServerArgs {
    /// TOML config file (env KEYWARD_CONFIG; default ./keyward.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (env KEYWARD_LISTEN; default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (env KEYWARD_DATA_DIR; default ./keyward-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format, text or json (env KEYWARD_LOG_FORMAT).
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter, e.g. info or keyward=debug (env KEYWARD_LOG).
    #[arg(long)]
    log_level: Option<String>,
    /// Also run the gateway (the key-checking reverse proxy) on this address
    /// (env KEYWARD_PROXY_LISTEN; routes in the config's [proxy]).
    #[arg(long, value_name = "ADDR")]
    proxy_listen: Option<String>,
    /// Where the gateway forwards admitted requests, e.g. http://127.0.0.1:3000
    /// (env KEYWARD_UPSTREAM).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
}

#[derive(Args, Clone, Debug)]
struct InitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Make a new master key, write it to FILE (mode 0600; never inside the data dir)
    /// and encrypt the new data dir with it. Start `serve` with KEYWARD_MASTER_KEY_FILE=FILE.
    #[arg(long, value_name = "FILE")]
    generate_master_key: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
struct MigrateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The PostgreSQL database to copy into (empty; its schema is made).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Also write the data dir's pepper (hex, mode 0600) to FILE, for the
    /// nodes' KEYWARD_PEPPER_FILE: every node must hash with it.
    #[arg(long, value_name = "FILE")]
    write_pepper: Option<PathBuf>,
}

impl ServerArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
            proxy_listen: self.proxy_listen.clone(),
            upstream: self.upstream.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Scan(c) = cli.command {
        return match scan::scan(c) {
            Ok(true) => ExitCode::from(1),
            Ok(false) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.command {
        Command::Init(a) => serve::init(&a.server.overrides(), a.generate_master_key.as_deref()),
        Command::Serve(a) => serve::serve(&a.overrides()),
        Command::Migrate(a) => migrate::migrate(&a.server.overrides(), &a.to, a.write_pepper.as_deref()),
        Command::Keyspaces(c) => client::keyspaces(c),
        Command::Keys(c) => client::keys(c),
        Command::Events(c) => client::events(c),
        Command::Incident(c) => client::incident(c),
        Command::Alerts(c) => client::alerts(c),
        Command::Webhooks(c) => client::webhooks(c),
        Command::RootKeys(c) => client::root_keys(c),
        Command::Workspaces(c) => client::workspaces(c),
        Command::Audit(c) => client::audit(c),
        Command::MasterKey(c) => client::master_key(c),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "keyward",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Scan(_) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
