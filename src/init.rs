//! `conduit init DOMAIN`: first-run setup as Snikket does it. Writes a
//! commented `conduit.toml` for the domain (never over an existing one),
//! then checks what the world needs to reach the server (DNS record,
//! federation discovery and port, the client API) and says in one sentence
//! per problem what is missing.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use conduit_service::{
    Config,
    federation::reachability::{self, Verdict},
};
use ruma::OwnedServerName;

/// Where certbot keeps a domain's certificate: used when it is there.
const CERTBOT_LIVE: &str = "/etc/letsencrypt/live";

/// How the new server gets its TLS.
enum Tls<'a> {
    /// A reverse proxy in front does it (the config has TLS commented out).
    Proxy,
    /// certbot's files for the name, found in this directory.
    Certbot(&'a Path),
    /// ACME, by the server itself on ports 443 and 8448.
    Acme,
}

pub fn run(
    domain: &str,
    config_path: Option<PathBuf>,
    data: Option<PathBuf>,
    acme: bool,
) -> ExitCode {
    let name = match OwnedServerName::try_from(domain) {
        Ok(name) => name,
        Err(e) => {
            eprintln!("conduit: {domain:?} is not a server name like example.org ({e})");
            return ExitCode::FAILURE;
        }
    };
    let path = config_path.unwrap_or_else(|| PathBuf::from("conduit.toml"));
    match write_config(&name, &path, data, acme) {
        Ok(written) => println!("{written}"),
        Err(e) => {
            eprintln!("conduit: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("\nChecking how other servers and apps reach {name}:");
    let findings = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(reachability::check(&name)),
        Err(e) => {
            eprintln!("conduit: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    for finding in &findings {
        let label = match finding.verdict {
            Verdict::Ok => "ok",
            Verdict::Missing => "missing",
            Verdict::Note => "note",
        };
        println!("  {label:>7}  {}", finding.text);
    }
    let missing = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Missing)
        .count();
    let shown = path.display();
    println!();
    match missing {
        0 => println!("Everything is in place."),
        1 => println!("One thing is missing; run `conduit init {name}` again once it is fixed."),
        n => {
            println!("{n} things are missing; run `conduit init {name}` again once they are fixed.")
        }
    }
    println!(
        "Start the server with `conduit --config {shown} serve`: it logs a link that creates \
         the first account, the server's admin."
    );
    ExitCode::SUCCESS
}

/// Writes the config for `name` at `path`, or keeps the one there if it
/// names the same server. Says which.
fn write_config(
    name: &OwnedServerName,
    path: &Path,
    data: Option<PathBuf>,
    acme: bool,
) -> Result<String, String> {
    let shown = path.display();
    if path.exists() {
        let loaded = Config::load(Some(path)).map_err(|e| e.to_string())?;
        if loaded.config.server_name != *name {
            return Err(format!(
                "{shown} exists and is for {}, not {name}: remove it or pass another --config",
                loaded.config.server_name
            ));
        }
        return Ok(format!("{shown} exists: kept as it is."));
    }
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let config_dir = absolute(path)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let data = match data {
        Some(data) => absolute(&data)?,
        None => config_dir.join("conduit-data"),
    };
    let certs = Path::new(CERTBOT_LIVE).join(name.host());
    let tls = if acme {
        Tls::Acme
    } else if certs.join("fullchain.pem").exists() && certs.join("privkey.pem").exists() {
        Tls::Certbot(&certs)
    } else {
        Tls::Proxy
    };
    let text = config_text(name, &data, &tls);
    // `create_new`: a file that appeared meanwhile is not overwritten.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    let tls = match tls {
        Tls::Proxy => {
            ", for a reverse proxy that does TLS; without one, run `conduit init --acme`".to_owned()
        }
        Tls::Certbot(dir) => format!(", TLS with certbot's certificate in {}", dir.display()),
        Tls::Acme => ", TLS on ports 443 and 8448 with a certificate from Let's Encrypt".to_owned(),
    };
    Ok(format!(
        "Wrote {shown} for {name} (database in {}{tls}).",
        data.display()
    ))
}

/// The config file: only what a new server needs, each key explained.
fn config_text(name: &OwnedServerName, data: &Path, tls: &Tls<'_>) -> String {
    let host = name.host();
    let data = toml_string(&data.display().to_string());
    let tls = match tls {
        Tls::Certbot(dir) => format!(
            "[global.tls]\n\
             certs = {}\n\
             key = {}\n\
             # The TLS listener serves the world; plain HTTP stays on loopback.\n\
             address = \"::\"\n",
            toml_string(&dir.join("fullchain.pem").display().to_string()),
            toml_string(&dir.join("privkey.pem").display().to_string()),
        ),
        Tls::Acme => "# TLS by the server itself: a certificate for the name from Let's Encrypt\n\
             # (validated on port 443, renewed 30 days before it expires, kept in\n\
             # the database directory), served on 443 (apps) and 8448 (servers).\n\
             [global.tls]\n\
             acme = true\n\
             # Where the CA sends expiry warnings. Default: none.\n\
             #acme_contact = \"admin@example.org\"\n\
             # TLS for the world; plain HTTP stays on loopback.\n\
             address = \"::\"\n"
            .to_owned(),
        Tls::Proxy => format!(
            "# Without a reverse proxy: `acme = true` gets a certificate from Let's\n\
             # Encrypt and serves TLS on 443 and 8448; or name certificate files\n\
             # (read again when they change).\n\
             #[global.tls]\n\
             #acme = true\n\
             #certs = \"/etc/letsencrypt/live/{host}/fullchain.pem\"\n\
             #key = \"/etc/letsencrypt/live/{host}/privkey.pem\"\n\
             #address = \"::\"\n"
        ),
    };
    format!(
        "# conduit.toml for {name}, written by `conduit init`. Every key, its\n\
         # default and why: conduit.toml.example. Any key can also be set by an\n\
         # environment variable, e.g. CONDUIT_PORT=8008.\n\
         \n\
         [global]\n\
         # The name in your users' IDs (@alice:{name}). It cannot change later.\n\
         server_name = {server_name}\n\
         \n\
         # The database, and in its \"media\" folder the uploaded files: the one\n\
         # directory to back up (`conduit db backup DIR`, docs/backup.md).\n\
         database_path = {data}\n\
         \n\
         # Plain HTTP on loopback, for a reverse proxy (Caddy, nginx) that serves\n\
         # https://{host} and forwards /_matrix and /_conduit here\n\
         # (docs/federation.md).\n\
         address = \"127.0.0.1\"\n\
         port = 8008\n\
         \n\
         # Accounts are made with a registration token or an invite link: the\n\
         # first start logs a link that creates the admin account, and the admin\n\
         # makes more (`conduit admin invite`, `conduit admin token create`).\n\
         allow_registration = true\n\
         registration_requires_token = true\n\
         \n\
         # Other servers connect here over TLS unless a .well-known or SRV record\n\
         # sends them elsewhere (the checks of `conduit init {name}` tell).\n\
         federation_port = 8448\n\
         \n\
         {tls}\
         \n\
         [global.well_known]\n\
         # Where apps find the client API (served at /.well-known/matrix/client).\n\
         client = \"https://{host}\"\n\
         # Set this to send other servers to the reverse proxy's port 443 instead\n\
         # of 8448 (served at /.well-known/matrix/server).\n\
         #server = \"{host}:443\"\n",
        server_name = toml_string(name.as_str()),
    )
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use conduit_service::config::TlsConfig;

    use super::*;

    #[test]
    fn written_config_loads_as_a_closed_server() {
        let dir = tempfile::tempdir().unwrap();
        let name = OwnedServerName::try_from("chat.example.org").unwrap();
        let certbot = Path::new("/etc/letsencrypt/live/chat.example.org");
        for tls in [Tls::Proxy, Tls::Certbot(certbot), Tls::Acme] {
            let path = dir.path().join("conduit.toml");
            let _ = std::fs::remove_file(&path);
            let data = dir.path().join("data \"quoted\"");
            std::fs::write(&path, config_text(&name, &data, &tls)).unwrap();
            let loaded = Config::load(Some(&path)).unwrap();
            assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
            let config = loaded.config;
            assert_eq!(config.server_name, name);
            assert_eq!(config.database_path, data);
            assert!(config.registration_requires_token);
            match (tls, config.tls) {
                (Tls::Proxy, None) => {}
                (Tls::Certbot(_), Some(read)) => {
                    assert_eq!(read.address, Some("::".parse().unwrap()));
                    assert!(!read.acme);
                    assert_eq!(read.certs, Some(certbot.join("fullchain.pem")));
                    assert_eq!(read.https_port(), None);
                }
                (Tls::Acme, Some(read)) => {
                    assert_eq!(read.address, Some("::".parse().unwrap()));
                    assert!(read.acme && read.certs.is_none());
                    assert_eq!(read.https_port(), Some(443));
                    assert_eq!(read.acme_directory, TlsConfig::LETSENCRYPT);
                }
                (_, read) => panic!("unexpected TLS config {read:?}"),
            }
        }
    }
}
