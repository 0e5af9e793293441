//! The command line: `serve` (the default), `admin` (registration tokens
//! and invites, on a running or a stopped server) and `db` for looking
//! into a stopped server's database.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use conduit_api::tls::TlsListener;
use conduit_service::{
    Config, Services,
    admin_commands::AdminCommand,
    config::{CertSource, Loaded, LogFormat},
};

use crate::admin_socket;
use conduit_storage::Database;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "conduit", version, about = "A small, fast Matrix homeserver")]
struct Cli {
    /// Path to conduit.toml. Without it (and without CONDUIT_CONFIG) a
    /// development server runs on 127.0.0.1:8008 with open registration.
    #[arg(short, long, env = "CONDUIT_CONFIG", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Serve,
    /// First-run setup: write a commented conduit.toml for DOMAIN (the
    /// --config path, default ./conduit.toml; an existing one is kept), then
    /// check DNS, federation discovery, port 8448 and the client API and
    /// say what is missing.
    Init {
        /// The server name: users will be @name:DOMAIN.
        domain: String,
        /// Where the database goes. Default: conduit-data beside the config.
        #[arg(long)]
        data: Option<PathBuf>,
        /// No reverse proxy: serve TLS on ports 443 and 8448 with a
        /// certificate from Let's Encrypt, obtained and renewed by the server.
        #[arg(long)]
        acme: bool,
    },
    /// Look into the database of a stopped server; back it up or restore it.
    #[command(subcommand)]
    Db(DbCommand),
    /// Exit 0 when the server of this config answers its health check on
    /// its client port (for Docker's HEALTHCHECK: no curl needed).
    Health,
    /// Admin commands (`conduit admin token create --uses 1`, `conduit admin
    /// invite`; `conduit admin --help` lists them). Sent to the running
    /// server through its admin socket, or run on the database when it is
    /// stopped.
    Admin {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// List the tables with their estimated row counts.
    Tables,
    /// Print a table's rows as JSON lines: [key, value].
    Scan {
        table: String,
        /// Print at most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Back up the database and media into DIR (new or empty), while the
    /// server runs or not.
    Backup { dir: PathBuf },
    /// Restore a backup made by `db backup` into this config's (new, empty)
    /// database_path and media directory.
    Restore { from: PathBuf },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // `init` writes the config the others read.
    if let Some(Command::Init { domain, data, acme }) = cli.command {
        return crate::init::run(&domain, cli.config, data, acme);
    }
    let Loaded { config, warnings } = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("conduit: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, warnings),
        Command::Db(command) => db(config, command),
        Command::Health => health(&config),
        Command::Init { .. } => unreachable!("run before the config is loaded"),
        Command::Admin { words } => admin(config, words),
    }
}

/// Asks the server on this config's client port for `/_conduit/health`.
fn health(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    let host = match config.address {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        address => address,
    };
    let address = std::net::SocketAddr::new(host, config.port);
    let ask = || -> std::io::Result<String> {
        let timeout = Duration::from_secs(5);
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /_conduit/health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut reply = String::new();
        stream.take(64 * 1024).read_to_string(&mut reply)?;
        Ok(reply)
    };
    match ask() {
        Ok(reply) if reply.split(' ').nth(1) == Some("200") => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
            eprintln!("conduit: unhealthy: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("conduit: no answer from http://{address}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long `conduit admin` waits for the running server's answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `conduit db backup` waits for it (media files may be copied).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

fn admin(config: Config, mut words: Vec<String>) -> ExitCode {
    // A registration is read here, by the admin who names the file, and
    // sent as text: the server may not be allowed to read it.
    if let [first, second, file] = &mut words[..]
        && first == "appservice"
        && second == "register"
    {
        match std::fs::read_to_string(&*file) {
            Ok(text) => *file = text,
            Err(e) => {
                eprintln!("conduit: cannot read {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Usage errors and --help are answered here, without a server.
    if let Err((is_help, text)) = AdminCommand::parse(&words) {
        if is_help {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        eprint!("{text}");
        return ExitCode::FAILURE;
    }
    let (ok, output) = match admin_socket::send(&config.database_path, &words, ADMIN_TIMEOUT) {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => (false, e),
        // No server here: work on its database, which must exist (a wrong
        // path or config must not quietly make a new, empty server).
        None if !config.database_path.join("CURRENT").exists() => (
            false,
            format!(
                "no server runs with the database at {} and there is no database there",
                config.database_path.display()
            ),
        ),
        None => {
            eprintln!(
                "(the server is not running: using the database at {})",
                config.database_path.display()
            );
            match Services::open(config) {
                Ok(services) => admin_socket::answer(&services, words),
                Err(e) => (false, format!("cannot open the database: {e}")),
            }
        }
    };
    if ok {
        println!("{output}");
        ExitCode::SUCCESS
    } else {
        eprintln!("conduit: {output}");
        ExitCode::FAILURE
    }
}

fn serve(config: Config, warnings: Vec<String>) -> ExitCode {
    let filter = match EnvFilter::try_new(&config.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("conduit: invalid value for config key `log`: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().init(),
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_async(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_async(config: Config) -> Result<(), String> {
    let address = (config.address, config.port);
    let services: Arc<Services> = Services::open(config).map_err(|e| e.to_string())?;
    services.start_presence_sweeper();
    services.start_to_device_pruner();
    services.start_media_pruner();
    admin_socket::listen(services.clone());
    if let Some(invite) = services.first_admin_invite().map_err(|e| e.to_string())? {
        tracing::warn!(
            "no account exists yet: open {} to create the first account, which becomes the \
             server admin (or register with registration token {}; single use, valid for 24 hours)",
            services.invite_link(&invite.record.token),
            invite.record.token
        );
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", address.0, address.1))?;
    let tls = tls_listeners(&services).await?;
    services
        .start_federation_sender()
        .map_err(|e| format!("cannot read the federation queue: {e}"))?;
    services
        .start_push_sender()
        .map_err(|e| format!("cannot read the push queue: {e}"))?;
    services.start_appservice_sender();
    tracing::info!(
        "serving {} on http://{}",
        services.config.server_name,
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let metrics = match services.config.metrics_address {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
            tracing::info!("serving metrics on http://{address}/metrics");
            Some(listener)
        }
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics_task = metrics.map(|listener| {
        let mut stopped = stopped.clone();
        tokio::spawn(conduit_api::serve_metrics(
            services.clone(),
            listener,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ))
    });
    let tls_tasks: Vec<_> = tls
        .into_iter()
        .map(|listener| {
            let mut stopped = stopped.clone();
            tokio::spawn(conduit_api::serve_tls(
                services.clone(),
                listener,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ))
        })
        .collect();
    let stopping = services.clone();
    conduit_api::serve(services, listener, async move {
        shutdown_signal().await;
        // Health checks fail from now on, while open requests finish.
        stopping
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = stop.send(true);
    })
    .await
    .map_err(|e| format!("server error: {e}"))?;
    for task in tls_tasks.into_iter().chain(metrics_task) {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The TLS listeners, when `[global.tls]` is configured: federation on
/// `federation_port` and apps on `https_port`, one certificate for both,
/// from files or from ACME.
async fn tls_listeners(services: &Services) -> Result<Vec<TlsListener>, String> {
    let config = &services.config;
    let Some(tls) = &config.tls else {
        return Ok(Vec::new());
    };
    let certificates = Arc::new(conduit_api::tls::Certificates::default());
    match tls.source() {
        CertSource::Files { certs, key } => {
            conduit_api::tls::files::serve_from(&certificates, certs, key)?;
        }
        CertSource::Acme => conduit_api::tls::acme::start(
            certificates.clone(),
            conduit_api::tls::acme::AcmeSettings {
                host: config.server_name.host().to_owned(),
                directory: tls.acme_directory.clone(),
                contact: tls.acme_contact.clone(),
                ca_certificate: tls.acme_ca_certificate.clone(),
                state_dir: config.database_path.join("acme"),
            },
        )?,
    }
    let server_config = Arc::new(conduit_api::tls::server_config(certificates));
    let address = tls.address.unwrap_or(config.address);
    let ports = std::iter::once(("federation", config.federation_port))
        .chain(tls.https_port().map(|port| ("apps and federation", port)));
    let mut listeners = Vec::new();
    for (serving, port) in ports {
        let tcp = tokio::net::TcpListener::bind((address, port))
            .await
            .map_err(|e| format!("cannot listen on {address}:{port}: {e}"))?;
        let listener = TlsListener::new(tcp, server_config.clone())
            .map_err(|e| format!("cannot listen for TLS: {e}"))?;
        tracing::info!("serving {serving} over TLS on https://{address}:{port}");
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn db(config: Config, command: DbCommand) -> ExitCode {
    let result = match command {
        DbCommand::Backup { dir } => db_backup(&config, dir),
        DbCommand::Restore { from } => {
            crate::backup::restore(&from, &config.database_path, &config.media_dir())
        }
        // These print as they go.
        DbCommand::Tables => open_db(&config).and_then(|db| printed(tables(&db))),
        DbCommand::Scan { table, limit } => {
            open_db(&config).and_then(|db| printed(scan(&db, &table, limit)))
        }
    };
    match result {
        Ok(done) => {
            if !done.is_empty() {
                println!("{done}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("conduit: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A backup by the running server, or of the stopped server's database.
fn db_backup(config: &Config, dir: PathBuf) -> Result<String, String> {
    // The server's working directory is not ours.
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let words = [admin_socket::BACKUP.to_owned(), dir.display().to_string()];
    match admin_socket::send(&config.database_path, &words, BACKUP_TIMEOUT) {
        Some(Ok((true, done))) => Ok(done),
        Some(Ok((false, e)) | Err(e)) => Err(e),
        None if !config.database_path.join("CURRENT").exists() => Err(format!(
            "there is no database at {}",
            config.database_path.display()
        )),
        None => crate::backup::backup(&open_db(config)?, &config.media_dir(), &dir),
    }
}

/// The stopped server's database, for looking into.
fn open_db(config: &Config) -> Result<Database, String> {
    Database::open(&config.database_path, conduit_service::tables::ALL, 8 << 20)
        .map_err(|e| e.to_string())
}

/// A command that printed its output: nothing more to say.
fn printed(result: conduit_storage::Result<()>) -> Result<String, String> {
    result.map(|()| String::new()).map_err(|e| e.to_string())
}

/// Prints each table with its estimated row count.
fn tables(db: &Database) -> conduit_storage::Result<()> {
    for table in db.tables() {
        let rows = db.property(table.name, "rocksdb.estimate-num-keys")?;
        println!("{}\t{}", table.name, rows.unwrap_or(0));
    }
    Ok(())
}

/// Prints a table's first rows as JSON lines.
fn scan(db: &Database, name: &str, limit: usize) -> conduit_storage::Result<()> {
    let table = db
        .tables()
        .find(|t| t.name == name)
        .copied()
        .ok_or_else(|| conduit_storage::Error::UnknownTable(name.to_owned()))?;
    for row in db.scan_raw(name)?.take(limit) {
        let (key, value) = row?;
        let line = serde_json::json!([(table.render_key)(&key), (table.render_value)(&value)]);
        println!("{line}");
    }
    Ok(())
}
