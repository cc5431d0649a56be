//! The `rampart` command line: `serve`, `demo`, `check-config`, `ban`, `top`,
//! `audit`, `user`, `client`, `keys`, `echo`, `migrate-storage`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rampart::app::{load_policy, load_policy_text};
use rampart::Gateway;
use rampart_core::config::{LogFormat, Policy};

/// mimalloc: the proxy allocates and frees many small objects per request
/// (headers, futures, bodies); glibc's malloc was ~10% of its CPU profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rampart", version, about = "A security gateway for HTTP APIs")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without a config file (no --config, no ./rampart.toml) it
    /// runs the demo: the gateway in front of a built-in echo upstream.
    Serve {
        /// Config file (default: ./rampart.toml).
        #[arg(long, short, env = "RAMPART_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the gateway in front of a built-in echo upstream, on loopback.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate a config file the way `serve` would, and exit.
    CheckConfig {
        /// Config file (default: ./rampart.toml).
        path: Option<PathBuf>,
    },
    /// Manage bans on a running gateway (through its operations listener).
    Ban {
        #[command(subcommand)]
        action: BanAction,
        /// Config of the running gateway, to find its operations listener.
        #[arg(long, short, env = "RAMPART_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Check, read and search the audit log (the database and the file of the config).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
        /// Config that names the database and the audit file.
        #[arg(long, short, env = "RAMPART_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Manage the accounts of the identity API (`[identity]`), in its database.
    User {
        #[command(subcommand)]
        action: UserAction,
        /// Config that names the database and the identity settings.
        #[arg(long, short, env = "RAMPART_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// The keys that sign the identity API's access tokens, in its database.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Config that names the database and the identity settings.
        #[arg(long, short, env = "RAMPART_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Manage the service clients of the `client_credentials` grant, in the
    /// identity database.
    Client {
        #[command(subcommand)]
        action: ClientAction,
        /// Config that names the database and the identity settings.
        #[arg(long, short, env = "RAMPART_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Manage API keys of users and service clients, in the identity database.
    ApiKey {
        #[command(subcommand)]
        action: ApiKeyAction,
        /// Config that names the database and the identity settings.
        #[arg(long, short, env = "RAMPART_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Show the heaviest client addresses of the last minute.
    Top {
        #[arg(long, short, env = "RAMPART_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run only the echo upstream (for benchmarks and experiments).
    Echo {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
    },
    /// Copy every table of one database into another, empty one (e.g. a
    /// SQLite file into PostgreSQL). Stop the gateways that use the source first.
    MigrateStorage {
        /// The database to copy (`sqlite://…` or `postgres://…`).
        #[arg(long, env = "RAMPART_MIGRATE_FROM", hide_env_values = true)]
        from: String,
        /// The database to fill; created and migrated if need be, refused if it holds any row.
        #[arg(long, env = "RAMPART_MIGRATE_TO", hide_env_values = true)]
        to: String,
    },
}

#[derive(Subcommand)]
enum BanAction {
    /// Ban an address on every instance (shared through Redis when configured).
    Add {
        ip: std::net::IpAddr,
        /// How long, e.g. `30m`, `24h`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Lift the bans that apply to an address (on it, or on an IPv6 network of it).
    Remove { ip: std::net::IpAddr },
    /// List bans in force.
    List,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user. The password is read from stdin (one line), never from
    /// the command line, and must pass the password policy.
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// A role; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users, one JSON object per line (never password hashes).
    List {
        /// Only usernames or e-mail addresses starting with this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Refuse a user's logins, for a while (`--for 1h`) or until unlocked.
    Lock {
        username: String,
        #[arg(long = "for")]
        duration: Option<String>,
    },
    /// Allow a locked user's logins again.
    Unlock { username: String },
    /// Log a user out everywhere: every refresh token revoked, every access
    /// token refused by running gateways within seconds.
    Logout { username: String },
    /// Replace a user's roles (none given: no roles).
    SetRole { username: String, roles: Vec<String> },
    /// Print everything stored about a user as one JSON document (GDPR
    /// access request): profile, sessions, API keys and passkeys (metadata
    /// only), second factors, and the audit records that name them.
    Export { username: String },
    /// Erase a user (GDPR): every credential and session deleted, personal
    /// fields removed, the id kept as a tombstone so the audit log still
    /// verifies. Running gateways refuse the user's tokens within seconds.
    Erase { username: String },
    /// Import users with their password hashes from another application:
    /// JSON lines `{"username", "email"?, "password_hash", "roles"?, "tier"?}`
    /// (`-` reads stdin). Hashes must be bcrypt, argon2id/argon2i, passlib
    /// `$pbkdf2-sha256$` or Django `pbkdf2_sha256$`; each becomes argon2id at
    /// the user's first login. Existing usernames are skipped. Prints a JSON
    /// summary; exits 1 if any line was refused.
    Import {
        file: PathBuf,
        /// Check every line and insert nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse (rather than skip) lines whose username exists.
        #[arg(long)]
        fail_on_existing: bool,
    },
}

#[derive(Subcommand)]
enum ClientAction {
    /// Create a client; prints its id and secret once, as JSON.
    Add {
        name: String,
        /// A scope the client may be granted; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A role its tokens carry; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List clients, one JSON object per line (never secrets).
    List,
    /// Give a client a new secret (printed once); the old one stops working.
    Rotate { client_id: String },
    /// Refuse a client's token requests until enabled again.
    Disable { client_id: String },
    /// Allow a disabled client's token requests again.
    Enable { client_id: String },
    /// Delete a client.
    Remove { client_id: String },
    /// The HMAC keys a client signs requests with (`X-Rampart-Signature`).
    SigningKey {
        #[command(subcommand)]
        action: SigningKeyAction,
    },
}

#[derive(Subcommand)]
enum SigningKeyAction {
    /// Make a signing key for a client; prints its id and secret once, as JSON.
    Add {
        client_id: String,
        /// Lifetime, e.g. `90d` (default: none).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List a client's signing keys, one JSON object per line (never secrets).
    List { client_id: String },
    /// Revoke a signing key; running gateways refuse it within 2 seconds.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
enum ApiKeyAction {
    /// Create a key for a user (`--user NAME`) or a service client
    /// (`--client ID`); prints it once, as JSON.
    Create {
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        name: String,
        /// A scope the key carries; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `30d` (default: none).
        #[arg(long)]
        expires: Option<String>,
        /// An address or block the key may be used from; repeat for several.
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
    },
    /// List keys (display prefix only), one JSON object per line.
    List {
        #[arg(long, conflicts_with = "client")]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
    /// Replace a key: prints the new one once; the old one works for the grace.
    Rotate {
        id: String,
        /// e.g. `1h` (default: `[identity.api_keys] rotation_grace`).
        #[arg(long)]
        grace: Option<String>,
    },
    /// Revoke a key; running gateways refuse it within seconds.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a new signing key active. The old one keeps verifying (and stays in
    /// the JWKS) until the last token it signed has expired. Running gateways
    /// pick the new key up within seconds.
    Rotate,
    /// List the keys, one JSON object per line (never private material).
    List,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chains of the database and the file; exits 1 naming the
    /// first bad record.
    Verify {
        /// Check only this JSON-lines file (no config needed).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the last records, one JSON object per line.
    Tail {
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: usize,
    },
    /// Print the newest matching records (oldest first), one JSON object per line.
    Search {
        /// e.g. `ban_added`, `auth_failure`.
        #[arg(long)]
        kind: Option<String>,
        /// The opaque subject id.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Only records this recent, e.g. `1h`, `7d`.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

const DEFAULT_CONFIG: &str = "rampart.toml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve { config: None }) {
            Command::Serve { config } => serve(config).await,
            Command::Demo { listen } => demo(listen).await,
            Command::CheckConfig { path } => check_config(path.as_deref()),
            Command::Echo { listen } => echo(listen).await,
            Command::MigrateStorage { from, to } => migrate_storage(&from, &to).await,
            Command::Ban { action, config } => ban(action, config.as_deref()).await,
            Command::Top { config } => top(config.as_deref()).await,
            Command::Audit { action, config } => audit(action, config.as_deref()).await,
            Command::User { action, config } => user(action, config.as_deref()).await,
            Command::Keys { action, config } => keys(action, config.as_deref()).await,
            Command::Client { action, config } => client(action, config.as_deref()).await,
            Command::ApiKey { action, config } => api_key(action, config.as_deref()).await,
        }
    });
    // A blocking write that never returns (an audit file on a dead mount or a
    // pipe nobody reads) must not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(policy: &Policy) {
    let filter = tracing_subscriber::EnvFilter::try_new(&policy.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match policy.log.format {
        LogFormat::Json => {
            builder.with_writer(std::io::stdout).json().flatten_event(true).with_current_span(false).try_init()
        }
        // Values carry client data: one event stays one line.
        LogFormat::Text => builder.with_writer(rampart::observe::log_text::OneLine(std::io::stdout)).try_init(),
    };
}

fn check_config(path: Option<&Path>) -> anyhow::Result<()> {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG));
    match load_policy(path) {
        Ok(policy) => {
            println!(
                "{}: ok ({} route(s), {} upstream(s), listening on {})",
                path.display(),
                policy.routes.len(),
                policy.upstreams.len(),
                policy.server.listen
            );
            if let Some(warning) = rampart::store::postgres_tls_warning(policy.storage.database.expose()) {
                eprintln!("warning: storage.database: {warning}");
            }
            Ok(())
        }
        Err(errs) => {
            eprintln!("{}: {} problem(s)", path.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            anyhow::bail!("invalid config")
        }
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = match config {
        Some(p) => p,
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => {
            eprintln!("No config given and no ./{DEFAULT_CONFIG}: starting the demo (see `rampart --help`).");
            return demo("127.0.0.1:8080".parse()?).await;
        }
    };
    let policy = load_policy(&path).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    init_logging(&policy);
    let gateway = Gateway::start(policy).await?;
    run_until_signalled(gateway, Some(path)).await
}

async fn demo(listen: SocketAddr) -> anyhow::Result<()> {
    let upstream = rampart::echo::spawn("127.0.0.1:0".parse()?).await?;
    // The demo's database and audit log go to a directory of its own, not
    // wherever it happens to be started.
    let data = std::env::temp_dir().join(format!("rampart-demo-{}", std::process::id()));
    let (db_path, audit_path) = (data.join("rampart.db"), data.join("audit.jsonl"));
    let database = toml::Value::String(format!("sqlite://{}", db_path.display()));
    let audit_file = toml::Value::String(audit_path.display().to_string());
    let text = format!(
        r#"version = 1
[server]
listen = "{listen}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[log]
format = "text"
[storage]
database = {database}
[audit]
file = {audit_file}
[upstreams.default]
url = "http://{upstream}"
[defaults.cors]
allow_origins = ["http://localhost:*", "http://127.0.0.1:*"]
"#,
        metrics_port = if listen.port() == 0 { 0 } else { 9090 },
    );
    let (audit, db) = (audit_path.display(), db_path.display());
    let policy = load_policy_text(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&policy);
    let gateway = Gateway::start(policy).await?;
    let a = gateway.addr;
    let ops = gateway.ops_addr.map_or("disabled".to_string(), |o| o.to_string());
    println!(
        r#"
  Rampart demo: gateway on http://{a} in front of a built-in echo upstream (http://{upstream}).

  Try:
    curl -i http://{a}/hello?name=world            # proxied; see the headers Rampart adds
    curl -i http://{a}/../etc/passwd --path-as-is  # refused: 400 problem document
    curl -i -X OPTIONS http://{a}/x -H 'Origin: https://evil.test' -H 'Access-Control-Request-Method: POST'
    curl -s http://{ops}/metrics | grep rampart_requests_total

  Audit log: {audit} and {db}.
  Ctrl-C stops it. For a real upstream, see examples/rampart.toml.
"#
    );
    let result = run_until_signalled(gateway, None).await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// The operations listener's base URL and admin token, from the config.
fn ops_endpoint(config: Option<&Path>) -> anyhow::Result<(String, Option<String>)> {
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    let policy = load_policy(path).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    let addr =
        policy.metrics_listen.ok_or_else(|| anyhow::anyhow!("[metrics] listen is disabled in {}", path.display()))?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok((format!("http://{host}:{}", addr.port()), policy.admin_token.map(|t| t.expose().to_string())))
}

/// One request to the operations listener; returns the body, or an error with
/// the server's problem detail.
async fn ops_call(
    config: Option<&Path>,
    method: http::Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Full};
    let (base, token) = ops_endpoint(config)?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| anyhow::anyhow!("{base} did not answer"))?
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway at {base}: {e}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if !status.is_success() {
        anyhow::bail!("{status}: {text}");
    }
    Ok(text)
}

async fn ban(action: BanAction, config: Option<&Path>) -> anyhow::Result<()> {
    match action {
        BanAction::Add { ip, ttl, reason } => {
            let body = serde_json::json!({ "ip": ip.to_string(), "ttl": ttl, "reason": reason }).to_string();
            ops_call(config, http::Method::POST, "/bans", Some(body)).await?;
            println!("banned {ip} for {ttl}");
        }
        BanAction::Remove { ip } => {
            ops_call(config, http::Method::DELETE, &format!("/bans/{ip}"), None).await?;
            println!("ban on {ip} lifted");
        }
        BanAction::List => {
            let text = ops_call(config, http::Method::GET, "/bans", None).await?;
            let bans: Vec<rampart::limit::bans::Ban> = serde_json::from_str(&text)?;
            let now = rampart::limit::bans::now_ms();
            println!("{:<43} {:>10}  {:<20} reason", "address", "ends in", "source");
            for b in bans {
                let ends = b.until_ms.saturating_sub(now) / 1000;
                println!("{:<43} {:>9}s  {:<20} {}", b.target(), ends, b.source, b.reason);
            }
        }
    }
    Ok(())
}

async fn top(config: Option<&Path>) -> anyhow::Result<()> {
    let text = ops_call(config, http::Method::GET, "/top", None).await?;
    let top: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    println!("{:<43} {:>10} {:>10}", "address", "requests", "± error");
    for t in top {
        let mut client = t["ip"].as_str().unwrap_or("?").to_owned();
        if let Some(len) = t["prefix_len"].as_u64() {
            client = format!("{client}/{len}");
        }
        println!("{:<43} {:>10} {:>10}", client, t["requests"], t["error"]);
    }
    Ok(())
}

async fn audit(action: AuditAction, config: Option<&Path>) -> anyhow::Result<()> {
    use rampart::observe::audit::{verify_file, AuditQuery};
    use rampart::store::audit::AuditStore;
    use rampart::store::{redact_url, Database};

    if let AuditAction::Verify { file: Some(file) } = &action {
        return match verify_file(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))? {
            Ok(n) => {
                println!("{}: ok, {n} record(s)", file.display());
                Ok(())
            }
            Err(e) => anyhow::bail!("{}: {e}", file.display()),
        };
    }
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    let policy = load_policy(path).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    let url = policy.storage.database.expose();
    let shown = redact_url(url);
    let db = Database::connect_existing(url).await.map_err(|e| anyhow::anyhow!("storage.database ({shown}): {e:#}"))?;
    let file = Some(PathBuf::from(&policy.audit.file)).filter(|f| !f.as_os_str().is_empty() && f.exists());

    match action {
        AuditAction::Verify { .. } => {
            let mut failures = Vec::new();
            let mut checked = 0;
            if let Some(db) = &db {
                checked += 1;
                match db.verify().await? {
                    Ok(n) => println!("database {shown}: ok, {n} record(s)"),
                    Err(e) => failures.push(format!("database {shown}: {e}")),
                }
            }
            if let Some(file) = &file {
                checked += 1;
                match verify_file(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))? {
                    Ok(n) => println!("file {}: ok, {n} record(s)", file.display()),
                    Err(e) => failures.push(format!("file {}: {e}", file.display())),
                }
            }
            if checked == 0 {
                anyhow::bail!("nothing to verify: neither the database ({shown}) nor audit.file exists");
            }
            if !failures.is_empty() {
                anyhow::bail!("the audit log was tampered with:\n  {}", failures.join("\n  "));
            }
        }
        AuditAction::Tail { lines } => {
            print_records(
                audit_query(db.as_ref(), file.as_deref(), &AuditQuery { limit: lines, ..AuditQuery::default() })
                    .await?,
            );
        }
        AuditAction::Search { kind, subject, ip, since, limit } => {
            let kind = kind.map(|k| k.parse()).transpose().map_err(|e: String| anyhow::anyhow!(e))?;
            let since_ms = match since {
                Some(s) => {
                    let d = humantime::parse_duration(&s).map_err(|e| anyhow::anyhow!("--since {s}: {e}"))?;
                    let ago = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    Some(rampart::observe::audit::now_ms().saturating_sub(ago))
                }
                None => None,
            };
            let query = AuditQuery { kind, subject, ip, since_ms, limit };
            print_records(audit_query(db.as_ref(), file.as_deref(), &query).await?);
        }
    }
    Ok(())
}

/// Reads from the database when it holds a log, else from the file.
async fn audit_query(
    db: Option<&rampart::store::Database>,
    file: Option<&Path>,
    query: &rampart::observe::audit::AuditQuery,
) -> anyhow::Result<Vec<rampart::observe::audit::AuditRecord>> {
    let (records, unreadable) = rampart::observe::audit::search(db, file, query).await?;
    if unreadable > 0 {
        if let Some(file) = file {
            eprintln!("{}: {unreadable} unreadable line(s) skipped (see `rampart audit verify`)", file.display());
        }
    }
    Ok(records)
}

fn print_records(records: Vec<rampart::observe::audit::AuditRecord>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for r in records {
        if let Ok(line) = serde_json::to_string(&r) {
            if writeln!(out, "{line}").is_err() {
                // Closed pipe (`| head`): stop quietly.
                return;
            }
        }
    }
}

async fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let addr = rampart::echo::spawn(listen).await?;
    println!("echo upstream on http://{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Serves until SIGTERM/SIGINT (graceful shutdown); SIGHUP reloads `config`.
async fn run_until_signalled(gateway: Gateway, config: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let console = gateway.console();
    if let Some(path) = &config {
        console.set_source(path);
    }
    loop {
        tokio::select! {
            _ = hup.recv() => match &config {
                Some(path) => {
                    tracing::info!(path = %path.display(), "SIGHUP: reloading config");
                    // Refusals are logged and audited by the reload itself.
                    let _ = console.clone().reload_off_thread().await;
                }
                None => tracing::info!("SIGHUP ignored: no config file"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping");
    gateway.shutdown();
    gateway.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn keys(action: KeysAction, config: Option<&Path>) -> anyhow::Result<()> {
    use rampart::identity::keys::{key_json, rotate};
    use rampart::store::identity::SigningKeyStore;

    let admin = identity_db(config).await?;
    let (settings, db) = (&admin.settings, &admin.db);
    let result = async {
        match action {
            KeysAction::Rotate => {
                let now = rampart::identity::service::now_ms();
                let kid = rotate(settings, db, now).await?;
                admin.audit(key_changed("signing_key_rotated").detail("kid", kid.clone())).await;
                for k in db.signing_keys().await? {
                    if k.kid == kid || k.not_after_sign == Some(now) {
                        println!("{}", key_json(&k));
                    }
                }
            }
            KeysAction::List => {
                for k in db.signing_keys().await? {
                    println!("{}", key_json(&k));
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}

/// `rampart migrate-storage`: one JSON line per table copied, on stdout.
async fn migrate_storage(from: &str, to: &str) -> anyhow::Result<()> {
    use rampart::store::{copy::copy_database, redact_url, Database};
    if from == to {
        anyhow::bail!("--from and --to name the same database");
    }
    let source = Database::connect_existing(from)
        .await
        .map_err(|e| anyhow::anyhow!("--from ({}): {e:#}", redact_url(from)))?
        .ok_or_else(|| anyhow::anyhow!("--from ({}): no such database file", redact_url(from)))?;
    let target = Database::connect(to).await.map_err(|e| anyhow::anyhow!("--to ({}): {e:#}", redact_url(to)))?;
    let copied = copy_database(&source, &target).await;
    source.close().await;
    target.close().await;
    let report = copied?;
    for (table, rows) in &report.tables {
        println!("{}", serde_json::json!({"table": table, "rows": rows}));
    }
    eprintln!("copied {} table(s) from {} to {}", report.tables.len(), redact_url(from), redact_url(to));
    Ok(())
}

/// What the account commands (`user`, `client`, `api-key`, `keys`) work with:
/// the identity settings, the database and the audit log of the config.
struct Admin {
    settings: std::sync::Arc<rampart_core::config::identity::IdentitySettings>,
    db: rampart::store::Database,
    audit: rampart_core::config::model::AuditConfig,
    policy: rampart_core::config::Policy,
}

impl Admin {
    /// The browser sessions where the gateway keeps them (`None` when they
    /// are off): in Redis when the config puts them there, else in the
    /// database. A Redis that does not answer within 5 s is an error rather
    /// than a silent look at the wrong store.
    async fn sessions(&self) -> anyhow::Result<Option<rampart::identity::sessions::Sessions>> {
        use rampart_core::config::sessions::SessionStoreKind;
        let Some(settings) = self.settings.sessions.clone() else { return Ok(None) };
        let redis = match settings.store {
            SessionStoreKind::Database => None,
            SessionStoreKind::Auto | SessionStoreKind::Redis => rampart::limit::redis_store(&self.policy)?,
        };
        if let Some(store) = &redis {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !store.is_available() {
                if std::time::Instant::now() > deadline {
                    anyhow::bail!("[redis] does not answer, and the sessions are kept there; try again when it does");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        let sessions =
            rampart::identity::sessions::Sessions::new(settings, self.db.clone(), self.settings.secret_key.expose());
        sessions.use_redis(redis)?;
        Ok(Some(sessions))
    }

    /// Records a change made by an admin command in the audit log (its
    /// database and file, chained onto what running gateways write). The
    /// change is made by then: a failure to record it is reported, not undone.
    async fn audit(&self, event: rampart::observe::audit::AuditEvent) {
        let event = event.detail("actor", "cli");
        if let Err(e) = rampart::observe::audit::write_now(&self.audit, Some(self.db.clone()), vec![event]).await {
            eprintln!("warning: done, but not recorded in the audit log: {e:#}");
        }
    }
}

/// The identity settings, the database and the audit log of the config.
async fn identity_db(config: Option<&Path>) -> anyhow::Result<Admin> {
    use rampart::store::{redact_url, Database};
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    let policy = load_policy(path).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    let Some(settings) = policy.identity.clone() else {
        anyhow::bail!("{}: [identity] is not enabled, so there are no accounts to manage", path.display());
    };
    let url = policy.storage.database.expose();
    let db =
        Database::connect(url).await.map_err(|e| anyhow::anyhow!("storage.database ({}): {e:#}", redact_url(url)))?;
    Ok(Admin { settings, db, audit: policy.audit.clone(), policy })
}

async fn client(action: ClientAction, config: Option<&Path>) -> anyhow::Result<()> {
    use rampart::identity::clients;
    use rampart::identity::signatures::admin as signing;
    let admin = identity_db(config).await?;
    let db = &admin.db;
    let explain = |e: rampart::identity::service::IdentityError| anyhow::anyhow!("{e}");
    let result = async {
        match action {
            ClientAction::Add { name, scopes, roles } => {
                let made = clients::add_client(db, &name, &scopes, &roles).await.map_err(explain)?;
                let event = admin_action("client_created", &made.client.client_id)
                    .detail("scopes", scopes)
                    .detail("roles", roles);
                admin.audit(event).await;
                println!("{}", clients::client_json(&made.client, Some(&made.secret)));
            }
            ClientAction::List => {
                for c in clients::list(db).await.map_err(explain)? {
                    println!("{}", clients::client_json(&c, None));
                }
            }
            ClientAction::Rotate { client_id } => {
                let made = clients::rotate(db, &client_id).await.map_err(explain)?;
                admin.audit(key_changed("client_secret_rotated").subject(client_id)).await;
                println!("{}", clients::client_json(&made.client, Some(&made.secret)));
            }
            ClientAction::Disable { client_id } => {
                let c = clients::set_disabled(db, &client_id, true).await.map_err(explain)?;
                admin.audit(admin_action("client_disabled", &client_id)).await;
                println!("{}", clients::client_json(&c, None));
            }
            ClientAction::Enable { client_id } => {
                let c = clients::set_disabled(db, &client_id, false).await.map_err(explain)?;
                admin.audit(admin_action("client_enabled", &client_id)).await;
                println!("{}", clients::client_json(&c, None));
            }
            ClientAction::Remove { client_id } => {
                clients::remove(db, &client_id).await.map_err(explain)?;
                admin.audit(admin_action("client_removed", &client_id)).await;
                println!("{}", serde_json::json!({ "removed": client_id }));
            }
            ClientAction::SigningKey { action: SigningKeyAction::Add { client_id, expires } } => {
                let expires = expires
                    .map(|t| humantime::parse_duration(&t).map_err(|e| anyhow::anyhow!("--expires {t}: {e}")))
                    .transpose()?;
                let made = signing::add(&admin.settings, db, &client_id, expires).await.map_err(explain)?;
                admin.audit(key_changed("signing_key_created").subject(client_id)).await;
                println!("{}", signing::key_json(&made.record, Some(&made.secret)));
            }
            ClientAction::SigningKey { action: SigningKeyAction::List { client_id } } => {
                for k in signing::list(db, &client_id).await.map_err(explain)? {
                    println!("{}", signing::key_json(&k, None));
                }
            }
            ClientAction::SigningKey { action: SigningKeyAction::Revoke { key_id } } => {
                let k = signing::revoke(db, &key_id).await.map_err(explain)?;
                admin.audit(key_changed("signing_key_revoked").subject(k.client_id.clone())).await;
                println!("{}", signing::key_json(&k, None));
            }
        }
        anyhow::Ok(())
    }
    .await;
    admin.db.close().await;
    result
}

async fn api_key(action: ApiKeyAction, config: Option<&Path>) -> anyhow::Result<()> {
    use rampart::identity::api_keys::{self, http::parse_cidr, key_json, KeyRequest};
    use rampart::store::identity::{Owner, UserStore};
    let admin = identity_db(config).await?;
    let (db, settings) = (&admin.db, &admin.settings.api_keys);
    let explain = |e: rampart::identity::service::IdentityError| anyhow::anyhow!("{e}");
    let duration =
        |flag: &str, text: &str| humantime::parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag} {text}: {e}"));
    let result = async {
        let owner_of = |user: Option<String>, client: Option<String>| async {
            match (user, client) {
                (Some(name), _) => match db.user_by_username(&name).await? {
                    Some(u) => Ok(Some(Owner::User(u.id))),
                    None => Err(anyhow::anyhow!("no user `{name}`")),
                },
                (None, Some(id)) => Ok(Some(Owner::Client(id))),
                (None, None) => anyhow::Ok(None),
            }
        };
        match action {
            ApiKeyAction::Create { user, client, name, scopes, expires, cidrs } => {
                let owner = owner_of(user, client).await?.ok_or_else(|| anyhow::anyhow!("--user or --client"))?;
                let expires_in = expires.as_deref().map(|t| duration("expires", t)).transpose()?;
                let cidrs = cidrs
                    .iter()
                    .map(|c| parse_cidr(c).ok_or_else(|| anyhow::anyhow!("--cidr {c}: not an address or block")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let req = KeyRequest { name, scopes, expires_in, cidrs };
                let made = api_keys::create(db, settings, owner, &req).await.map_err(explain)?;
                admin.audit(api_key_changed("api_key_created", &made.record)).await;
                println!("{}", key_json(&made.record, Some(&made.key)));
            }
            ApiKeyAction::List { user, client } => {
                let owner = owner_of(user, client).await?;
                for k in api_keys::list(db, owner.as_ref()).await.map_err(explain)? {
                    println!("{}", key_json(&k, None));
                }
            }
            ApiKeyAction::Rotate { id, grace } => {
                let grace = grace.as_deref().map(|t| duration("grace", t)).transpose()?;
                let (made, old) = api_keys::rotate(db, settings, &id, None, grace).await.map_err(explain)?;
                let event = api_key_changed("api_key_rotated", &old).detail("new_api_key_id", made.record.id.clone());
                admin.audit(event).await;
                println!("{}", key_json(&made.record, Some(&made.key)));
            }
            ApiKeyAction::Revoke { id } => {
                let k = api_keys::revoke(db, &id, None).await.map_err(explain)?;
                admin.audit(api_key_changed("api_key_revoked", &k)).await;
                println!("{}", key_json(&k, None));
            }
        }
        anyhow::Ok(())
    }
    .await;
    admin.db.close().await;
    result
}

async fn import(ctx: &Admin, file: &Path, options: rampart::identity::admin::ImportOptions) -> anyhow::Result<()> {
    use rampart::identity::admin::{import_users, LineOutcome};
    let input: Box<dyn std::io::BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let summary = import_users(&ctx.db, input, options, |n, outcome| match outcome {
        LineOutcome::Skipped(why) => eprintln!("line {n}: skipped: {why}"),
        LineOutcome::Refused(why) => eprintln!("line {n}: refused: {why}"),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !summary.dry_run {
        let event = rampart::observe::audit::AuditEvent::new(rampart::observe::audit::AuditKind::AdminAction)
            .detail("action", "users_imported")
            .detail("imported", summary.imported)
            .detail("skipped", summary.skipped)
            .detail("refused", summary.refused);
        ctx.audit(event).await;
    }
    println!("{}", serde_json::to_string(&summary)?);
    if summary.refused > 0 {
        anyhow::bail!("{} line(s) refused", summary.refused);
    }
    Ok(())
}

async fn user(action: UserAction, config: Option<&Path>) -> anyhow::Result<()> {
    use rampart::identity::admin;
    use rampart::identity::service::IdentityError;

    let ctx = identity_db(config).await?;
    let db = &ctx.db;
    let explain = |e: IdentityError| match e {
        IdentityError::WeakPassword(v) => {
            anyhow::anyhow!("password refused: {}", v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
        }
        other => anyhow::anyhow!("{other}"),
    };
    let print = |u: &rampart::store::identity::User| println!("{}", admin::user_json(u));
    let result = async {
        // Each change is recorded by the user's opaque id, never the name.
        let changed = match action {
            UserAction::Add { username, email, roles } => {
                let mut password = String::new();
                std::io::stdin().read_line(&mut password)?;
                let password = password.trim_end_matches(['\r', '\n']);
                let u = admin::add_user(&ctx.settings, db, &username, email.as_deref(), password, &roles)
                    .await
                    .map_err(explain)?;
                Some((u, admin_action("user_created", "").detail("roles", roles)))
            }
            UserAction::List { search, limit } => {
                for u in admin::list_users(db, search, limit).await.map_err(explain)? {
                    print(&u);
                }
                None
            }
            UserAction::Lock { username, duration } => {
                let d = match duration {
                    Some(s) => match humantime::parse_duration(&s) {
                        Ok(d) if !d.is_zero() => Some(d),
                        Ok(_) => anyhow::bail!("--for {s}: a lock needs a duration longer than zero"),
                        Err(e) => anyhow::bail!("--for {s}: {e}"),
                    },
                    None => None,
                };
                let u = admin::lock(db, &username, d).await.map_err(explain)?;
                let event = admin_action("user_locked", "");
                Some((
                    u,
                    match d {
                        Some(d) => event.detail("for_secs", d.as_secs()),
                        None => event,
                    },
                ))
            }
            UserAction::Unlock { username } => {
                Some((admin::unlock(db, &username).await.map_err(explain)?, admin_action("user_unlocked", "")))
            }
            UserAction::Logout { username } => {
                let u = admin::log_out(db, &username).await.map_err(explain)?;
                // The raised token version already refuses every session;
                // deleting them (in Redis too) also ends what they record.
                match ctx.sessions().await {
                    Ok(Some(sessions)) => {
                        sessions.end_all(&u.id, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("warning: sessions not deleted ({e}); they are refused all the same"),
                }
                Some((u, admin_action("user_logged_out", "")))
            }
            UserAction::SetRole { username, roles } => {
                let u = admin::set_roles(db, &username, &roles).await.map_err(explain)?;
                // As stored (sorted, without repeats, at most 64): the raw
                // arguments may repeat a role until `admin` falls past the
                // audit's cap on a list's values.
                let stored = u.roles.clone();
                Some((u, admin_action("roles_set", "").detail("roles", stored)))
            }
            UserAction::Export { username } => {
                let u = admin::find(db, &username).await.map_err(explain)?;
                let sessions = ctx.sessions().await?;
                let data =
                    rampart::identity::privacy::export(db, sessions.as_ref(), &u, true).await.map_err(explain)?;
                // Audited as over HTTP: a person's whole record left the store.
                ctx.audit(admin_action("account_exported", &u.id)).await;
                println!("{data}");
                None
            }
            UserAction::Erase { username } => {
                let u = admin::find(db, &username).await.map_err(explain)?;
                let sessions = ctx.sessions().await?;
                rampart::identity::privacy::erase(db, sessions.as_ref(), &u.id).await.map_err(explain)?;
                ctx.audit(admin_action("account_erased", &u.id)).await;
                println!("{}", serde_json::json!({"erased": u.id}));
                None
            }
            UserAction::Import { file, dry_run, fail_on_existing } => {
                import(&ctx, &file, admin::ImportOptions { dry_run, fail_on_existing }).await?;
                None
            }
        };
        if let Some((user, event)) = changed {
            ctx.audit(event.subject(user.id.clone())).await;
            print(&user);
        }
        anyhow::Ok(())
    }
    .await;
    ctx.db.close().await;
    result
}

/// An `admin_action` record of `action` on `subject` (an opaque id; `""`:
/// set later).
fn admin_action(action: &str, subject: &str) -> rampart::observe::audit::AuditEvent {
    use rampart::observe::audit::{AuditEvent, AuditKind};
    let event = AuditEvent::new(AuditKind::AdminAction).detail("action", action.to_owned());
    if subject.is_empty() {
        event
    } else {
        event.subject(subject)
    }
}

/// A `key_changed` record of `action`.
fn key_changed(action: &str) -> rampart::observe::audit::AuditEvent {
    use rampart::observe::audit::{AuditEvent, AuditKind};
    AuditEvent::new(AuditKind::KeyChanged).detail("action", action.to_owned())
}

/// A `key_changed` record of `action` on an API key, naming its owner by id.
fn api_key_changed(action: &str, key: &rampart::store::identity::ApiKeyRecord) -> rampart::observe::audit::AuditEvent {
    key_changed(action)
        .subject(key.owner.id())
        .detail("owner_kind", key.owner.kind())
        .detail("api_key_id", key.id.clone())
}
