//! `dishcam serve [SOURCE]`: the kitchen camera's web page and HTTP API (docs/api.md), served by
//! the binary itself. The live pipeline runs on SOURCE on its own threads; uploads, recipe
//! search and teaching run their models on tokio's blocking pool; the async executor only moves
//! bytes.

mod api;
mod assets;
mod engine;
mod live;
mod state;
mod teach;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::cli::EngineArgs;
use engine::Engine;
use live::{LiveConfig, LiveRunner};
use state::{digest, lock, AppState, LiveView};

#[derive(Args)]
#[command(after_help = "Examples:
  dishcam serve                                    # uploads only, http://127.0.0.1:8080
  dishcam serve \"synthetic://?fps=15\"              # with a live view
  dishcam serve v4l2:///dev/video0 --bind 0.0.0.0:8080 --token SECRET")]
pub struct ServeArgs {
    /// Frame source for the live view (synthetic://?fps=30&size=640x480, file://photo.jpg,
    /// dir://DIR, v4l2:///dev/video0, ...); without one the page serves uploads only.
    pub source: Option<String>,
    /// Address to listen on. Anything but loopback needs --token. Port 0 picks a free port;
    /// the address is printed on stdout as `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Token every API call must carry (`Authorization: Bearer TOKEN`, or `?token=`); required
    /// to bind a non-loopback address.
    #[arg(long, env = "DISHCAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Live: skip the encoder when the scene changed less than this (0-255; 0 disables).
    #[arg(long, default_value_t = 2.0)]
    pub gate: f32,
    /// Live: frame rate for sources that take one (synthetic, folders).
    #[arg(long)]
    pub fps: Option<f32>,
    /// Live: start a file or folder over at its end.
    #[arg(long = "loop")]
    pub loop_: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// A client must send a request's head within this time, or its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until Ctrl-C, then ends the event streams and closes connections
/// gracefully (requests in flight finish). Each connection is HTTP/1.1 with a header-read
/// timeout, so a client that opens connections and never sends a request cannot hold them.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stop.subscribe();
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let stopped = tokio::select! {
                _ = conn.as_mut() => false,
                _ = stopping.wait_for(|s| *s) => true,
            };
            if stopped {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
        // Reap finished connections so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    eprintln!("stopping");
    let _ = stop.send(true);
    drop(listener);
    // Requests in flight get a few seconds to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Refuses a bind the network could reach without a token.
fn check_bind(bind: &SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if token.is_some_and(|t| t.trim().len() < 8) {
        bail!("--token must be at least 8 characters (got a shorter one); use a random string");
    }
    if !bind.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {bind} without a token: anyone on the network could use the camera and the API; pass --token TOKEN (or set DISHCAM_TOKEN), or bind 127.0.0.1"
        );
    }
    Ok(())
}

/// Loads the models, starts the live pipeline when there is a source, and serves until Ctrl-C.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    check_bind(&args.bind, args.token.as_deref())?;
    let engine = Engine::load(&args.engine)?;
    let (events, _) = tokio::sync::broadcast::channel(64);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let live_config = args.source.as_ref().map(|s| LiveConfig {
        source: s.clone(),
        engine: args.engine.clone(),
        gate: args.gate,
        fps: args.fps,
        loop_: args.loop_,
    });
    let state = Arc::new_cyclic(|me| AppState {
        info: Mutex::new(engine.describe()),
        engine: Mutex::new(engine),
        queue: tokio::sync::Semaphore::new(8),
        live: Mutex::new(LiveView {
            status: "idle".into(),
            ..LiveView::default()
        }),
        runner: Mutex::new(None),
        metrics: Mutex::default(),
        token: args.token.as_deref().map(digest),
        events,
        sampler: dishcam_board::Sampler::start(
            dishcam_board::detect(Path::new("/")),
            Duration::from_secs(1),
        ),
        uploads: Mutex::default(),
        started: Instant::now(),
        engine_args: args.engine.clone(),
        live_config: live_config.clone(),
        teaching: Mutex::new(()),
        me: me.clone(),
        stopping,
    });
    if let Some(cfg) = &live_config {
        *lock(&state.runner) = Some(LiveRunner::start(cfg, &state)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("dishcam-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        std::io::stdout().flush().ok();
        if args.token.is_none() {
            eprintln!("note: open http://{addr}/ in a browser (loopback only, no token)");
        }
        serve(listener, api::router(state.clone()), stop).await
    });
    if let Some(runner) = lock(&state.runner).take() {
        runner.stop();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(check_bind(&lo, None).is_ok());
        assert!(check_bind(&lo6, None).is_ok());
        let err = check_bind(&any, None).unwrap_err().to_string();
        assert!(err.contains("--token"), "{err}");
        assert!(check_bind(&any, Some("a-long-enough-token")).is_ok());
        assert!(check_bind(&lo, Some("short")).is_err());
    }
}
