//! `mymcp-frontend`: wires configuration, the listener, the executor connection, logging and
//! signals around the library. See the crate documentation of `mymcp_frontend`.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use mymcp_frontend::acme::{Acme, AcmeConfig};
use mymcp_frontend::admission::ConnectionLimits;
use mymcp_frontend::body::BodyTimeouts;
use mymcp_frontend::cli::Cli;
use mymcp_frontend::forward::Forwarder;
use mymcp_frontend::http::{self, HostPolicy, HttpConfig, OriginPolicy, TrustedProxies};
use mymcp_frontend::listen::ListenSource;
use mymcp_frontend::server::{self, ServerConfig};
use mymcp_frontend::tls::{Tls, TlsFiles};
use mymcp_service::notify::Notifier;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How long open connections may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    // The frontend is never given a secret; should one arrive in its environment anyway, it
    // is overwritten where /proc/<pid>/environ shows it (first, while this is the only thread).
    for (name, _) in mymcp_service::environment::take_secrets(&mymcp_settings::SECRET_VARIABLES) {
        eprintln!("mymcp-frontend: warning: {name} in the environment was overwritten and ignored: the frontend never needs a secret");
    }
    // OTLP headers often carry an API key: out of the environment too, kept for the exporter.
    let otlp_headers = mymcp_frontend::otel::ExporterHeaders::take_from_env();
    let cli = Cli::parse();
    if mymcp_frontend::effective_uid() == 0 {
        eprintln!(
            "mymcp-frontend must not run as root: start it as an unprivileged user (e.g. mymcp)"
        );
        return ExitCode::from(2);
    }
    // The frontend reads no env file: the env file holds the executor's secrets. Its few
    // settings come from its environment (the unit or mymcpctl serve) and flags.
    let logging = mymcp_settings::logging::LogFormat::parse(&cli.log_format)
        .and_then(|format| mymcp_settings::logging::init(&cli.log_level, format, "mymcp-frontend"));
    if let Err(e) = logging {
        eprintln!("mymcp-frontend: {e}");
        return ExitCode::from(2);
    }

    match run(cli, otlp_headers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, otlp_headers: mymcp_frontend::otel::ExporterHeaders) -> anyhow::Result<()> {
    mymcp_service::memory::tune_allocator();
    if let Err(e) = mymcp_service::memory::start_trimmer(std::time::Duration::from_millis(500)) {
        tracing::warn!(error = %e, "no heap-trim thread; memory after large answers is kept");
    }
    let config = http_config(&cli)?;
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let acme = acme_config(&cli)?;
    let files = TlsFiles::from_settings(
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
        // With ACME, credentials the unit happens to load are not a conflict: ACME wins.
        credentials.as_deref().filter(|_| acme.is_none()),
    )?;
    let (tls, acme) = match (files, acme) {
        (Some(_), Some(_)) => anyhow::bail!(
            "MYMCP_ACME_DOMAIN and MYMCP_TLS_CERT/MYMCP_TLS_KEY are both set: the certificate comes either from files or from ACME; unset one"
        ),
        (Some(files), None) => (Some(Tls::load(files)?), None),
        (None, Some(config)) => {
            let tls = Tls::for_acme()?;
            let acme = Acme::new(config, tls.clone()).map_err(anyhow::Error::msg)?;
            (Some(tls), Some(acme))
        }
        (None, None) => (None, None),
    };
    // Touches the environment, so it runs before the runtime starts any thread.
    let source = match cli.listen_fd {
        Some(fd) => {
            ListenSource::from_fd(fd).with_context(|| format!("cannot use --listen-fd {fd}"))?
        }
        None => ListenSource::from_env(&cli.host, cli.port)
            .context("cannot use the socket passed by the service manager")?,
    };
    // Read (and removed) while this is the only thread.
    let notifier = Notifier::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let telemetry = runtime
        .block_on(async { mymcp_frontend::otel::init(&otlp_headers) })
        .context("OpenTelemetry (OTEL_EXPORTER_OTLP_*)")?;
    if telemetry {
        tracing::info!("OpenTelemetry on: traces, metrics and logs go to the OTLP endpoint");
    }
    let result = runtime.block_on(serve(cli, source, config, tls, acme, notifier));
    // Flushes what is buffered; the runtime still runs the exporters' requests.
    mymcp_frontend::otel::shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// How long the frontend waits for its first executor connection before serving anyway.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(1);

async fn serve(
    cli: Cli,
    source: ListenSource,
    config: HttpConfig,
    tls: Option<Tls>,
    acme: Option<Acme>,
    notifier: Notifier,
) -> anyhow::Result<()> {
    let listener = source.open(tls.is_some()).await?;
    let addr = listener.local_addr()?;
    mymcp_frontend::tls::check_plaintext(addr, tls.is_some(), cli.allow_plaintext)
        .map_err(anyhow::Error::msg)?;
    if let Some(tls) = &tls {
        match tls.files() {
            Some(files) => tracing::info!(
                cert = %files.cert.display(),
                fingerprint = %tls.fingerprint(),
                "serving HTTPS (TLS 1.2/1.3, ALPN h2, http/1.1)"
            ),
            None => tracing::info!(
                "serving HTTPS (TLS 1.2/1.3, ALPN h2, http/1.1, acme-tls/1) with certificates from ACME"
            ),
        }
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let acme_handle = acme.as_ref().map(Acme::handle);
    if let Some(acme) = acme {
        // Loads the stored certificate first, then orders one if need be, in the background.
        tokio::spawn(mymcp_frontend::acme::run(acme));
    }
    let reloading = tls.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &acme_handle {
                Some(acme) => acme.renew_now(),
                None => reload(reloading.as_ref()),
            }
        }
    });
    let forwarder = Forwarder::new(&cli.executor_socket);
    // Until the first connection to the executor, every call would get 503. When the executor
    // starts alongside (`mymcpctl serve`), it is there within milliseconds: wait for it, a
    // little, before taking requests (they wait in the listen queue meanwhile).
    forwarder.wait_connected(FIRST_CONNECTION_WAIT).await;
    mymcp_frontend::otel_executor::register_metrics(&forwarder);
    let audit_export = tokio::spawn(mymcp_frontend::otel_executor::export_audit_records(
        forwarder.clone(),
    ));
    let app = http::router(forwarder, config);

    let notifier = Arc::new(notifier);
    let scheme = if tls.is_some() { "https" } else { "http" };
    notifier.ready(&format!("serving on {scheme}://{addr}/mcp"));
    // From a task of the runtime that serves HTTP.
    let _watchdog = notifier.spawn_watchdog();

    let stopped = async {
        match wait_for_signal().await {
            Ok(signal) => tracing::info!("received {signal}; shutting down"),
            Err(e) => tracing::error!("cannot listen for signals ({e}); shutting down"),
        }
        notifier.stopping("stopping: finishing open requests");
    };

    let server_config = ServerConfig {
        header_read_timeout: Duration::from_secs(cli.header_timeout_sec),
        shutdown_grace: SHUTDOWN_GRACE,
        tls,
        limits: ConnectionLimits {
            max_connections: cli.max_connections,
            max_per_address: cli.max_connections_per_ip,
            exempt: TrustedProxies::from_list(&cli.trusted_proxies)
                .context("MYMCP_TRUSTED_PROXIES")?,
        },
    };
    server::serve(listener, app, server_config, stopped).await;
    audit_export.abort();
    Ok(())
}

/// The HTTP settings; an invalid list or URL stops start-up naming the variable.
fn http_config(cli: &Cli) -> anyhow::Result<HttpConfig> {
    let mut origins = OriginPolicy::from_list(&cli.allowed_origins);
    let mut hosts = HostPolicy::from_list(&cli.allowed_hosts).context("MYMCP_ALLOWED_HOSTS")?;
    let public = cli.public_base_url.trim().trim_end_matches('/');
    if !public.is_empty() {
        origins = origins
            .with_public_url(public)
            .context("MYMCP_PUBLIC_BASE_URL")?;
        hosts = hosts
            .with_public_url(public)
            .context("MYMCP_PUBLIC_BASE_URL")?;
    }
    let trusted_proxies =
        TrustedProxies::from_list(&cli.trusted_proxies).context("MYMCP_TRUSTED_PROXIES")?;
    if cli.oauth_enabled && public.is_empty() {
        anyhow::bail!(
            "MYMCP_OAUTH_ENABLED: OAuth needs MYMCP_PUBLIC_BASE_URL (the issuer and its /mcp the resource)"
        );
    }
    let cimd = mymcp_frontend::cimd::CimdConfig::from_settings(
        &cli.oauth_cimd_allowed_networks,
        cli.outbound_ca_file.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(HttpConfig {
        max_body_bytes: cli.max_body_bytes,
        origins,
        hosts,
        trusted_proxies,
        public_base_url: public.to_owned(),
        oauth: cli.oauth_enabled,
        cimd,
        body_timeouts: BodyTimeouts {
            total: Duration::from_secs(cli.body_timeout_sec),
            idle: Duration::from_secs(cli.body_idle_timeout_sec),
        },
        ..HttpConfig::default()
    })
}

/// The ACME settings (`None` without `MYMCP_ACME_DOMAIN`); an invalid one stops start-up.
fn acme_config(cli: &Cli) -> anyhow::Result<Option<AcmeConfig>> {
    let domains: Vec<String> = cli.acme_domain.split(',').map(str::to_owned).collect();
    AcmeConfig::from_settings(
        &domains,
        &cli.acme_email,
        &cli.acme_directory,
        &cli.acme_dir,
        cli.outbound_ca_file.as_deref(),
    )
    .map_err(anyhow::Error::msg)
}

/// SIGHUP: read the certificate and key again; open connections keep theirs.
fn reload(tls: Option<&Tls>) {
    match tls {
        None => tracing::info!("SIGHUP: serving plain HTTP, no certificate to reload"),
        Some(tls) => match tls.reload() {
            Ok(fingerprint) => tracing::info!(%fingerprint, "SIGHUP: certificate reloaded"),
            Err(e) => tracing::error!("SIGHUP: {e}; still serving the previous certificate"),
        },
    }
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
