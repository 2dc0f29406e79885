//! Routes, handlers and the middleware around them (token, body limit, timeouts, response
//! counting). Handlers never run a model on the async executor: they hand the work to
//! `spawn_blocking`, behind a small queue that answers 503 when full.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use image::ImageEncoder as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::timeout::TimeoutLayer;

use super::assets;
use super::engine::{valid_dish, EngineError};
use super::state::{lock, token_matches, Shared, Snapshot};

/// Largest request body: a photo, with room for the multipart framing.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;
/// Time a request may take, end to end (teaching has its own, longer one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const TEACH_TIMEOUT: Duration = Duration::from_secs(300);

/// An API error: a status and a message that says what to do.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": self.1, "status": self.0.as_u16()})),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use dishcam_capture::decode::ImageError;
        match e {
            EngineError::Image(e) => {
                let status = match e {
                    ImageError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    ImageError::UnknownFormat { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError(status, e.to_string())
            }
            EngineError::BadRequest(m) => ApiError(StatusCode::BAD_REQUEST, m),
            EngineError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            EngineError::Internal(e) => {
                log::error!("{e:#}");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking work (models, index, files) off the executor, behind the queue.
async fn blocking<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&Shared) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let _permit = state.queue.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many requests are waiting for the model; retry in a moment",
        )
    })?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request failed: {e}"),
            )
        })?
}

/// The whole app.
pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/state", get(api_state))
        .route("/api/frame.jpg", get(frame_jpeg))
        .route("/api/classify", post(classify))
        .route("/api/recipes", get(search_recipes))
        .route("/api/recipes/{id}", get(show_recipe))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    let teach =
        Router::new()
            .route("/api/teach", post(teach))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                TEACH_TIMEOUT,
            ));
    // Server-sent events stay open: no timeout.
    let events = Router::new().route("/api/events", get(events));
    api.merge(teach)
        .merge(events)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Token check, body-size check from the header, and response counting.
async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let response = check(&state, &req).unwrap_or_else(|e| e.into_response());
    let response = if response.status() == StatusCode::CONTINUE {
        let mut r = next.run(req).await;
        r.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        r
    } else {
        response
    };
    *lock(&state.metrics)
        .responses
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

/// `Ok(100)` to go on, or the refusal.
fn check(state: &Shared, req: &Request) -> ApiResult<Response> {
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > BODY_LIMIT as u64);
    if too_large {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the limit of {} MB; send a smaller photo",
                BODY_LIMIT >> 20
            ),
        ));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // DNS rebinding: a page of another site that resolves its name to 127.0.0.1 reaches a
    // loopback server with its own name as Host. Without a token, only loopback names pass.
    if state.token.is_none() && !is_loopback_host(host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("host '{host}' refused: without a token this server answers only to localhost, 127.0.0.1 or [::1]"),
        ));
    }
    // Cross-site requests: browsers send Origin; only this server's own page may call the API.
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !same {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request from '{origin}' refused; use the page this server serves"
                ),
            ));
        }
    }
    let path = req.uri().path();
    let public = matches!(path, "/" | "/app.js" | "/style.css" | "/healthz");
    if let (Some(expected), false) = (&state.token, public) {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // EventSource and <img> cannot send headers: they pass ?token=.
        let query = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(percent_decode)
        });
        let ok = bearer.is_some_and(|t| token_matches(expected, t))
            || query.is_some_and(|t| token_matches(expected, &t));
        if !ok {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a token is required: send `Authorization: Bearer TOKEN` (or ?token=TOKEN)",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Ok(r);
        }
    }
    Ok(StatusCode::CONTINUE.into_response())
}

/// Whether a Host header names this machine's loopback: localhost, 127.0.0.0/8 or [::1], with
/// or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Decodes %XX escapes and '+' of a query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such page; the API is under /api (see docs/api.md)",
    )
}

async fn healthz(State(state): State<Shared>) -> Json<Value> {
    let status = lock(&state.live).status.clone();
    Json(json!({"status": "ok", "live": status}))
}

async fn metrics(State(state): State<Shared>) -> Response {
    let text = {
        let live = lock(&state.live);
        let numbers = dishcam_eval::prometheus::LiveNumbers {
            counts: live.counts,
            fps_in: live.fps_in,
            fps_out: live.fps_out,
        };
        drop(live);
        let sample = state.sampler.latest();
        dishcam_eval::prometheus::render(&lock(&state.metrics), Some(&numbers), sample.as_ref())
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn api_state(State(state): State<Shared>) -> Json<Value> {
    Json(state.state_json())
}

/// The latest live frame as JPEG (encoded once per frame, on request).
async fn frame_jpeg(State(state): State<Shared>) -> ApiResult<Response> {
    let (seq, cached, snapshot) = {
        let live = lock(&state.live);
        let Some(f) = &live.frame else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no live frame: start `dishcam serve SOURCE` with a camera, folder or synthetic:// source",
            ));
        };
        let cached = live
            .jpeg
            .as_ref()
            .filter(|(s, _)| *s == f.seq)
            .map(|(_, j)| j.clone());
        let snapshot = cached.is_none().then(|| f.clone());
        (f.seq, cached, snapshot)
    };
    let jpeg = match (cached, snapshot) {
        (Some(j), _) => j,
        (None, Some(snap)) => {
            let bytes = blocking(&state, move |_| encode_jpeg(&snap)).await?;
            let bytes = Arc::new(bytes);
            lock(&state.live).jpeg = Some((seq, bytes.clone()));
            bytes
        }
        (None, None) => unreachable!("a frame is either cached or copied"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from(jpeg.as_ref().clone()),
    )
        .into_response())
}

fn encode_jpeg(s: &Snapshot) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode(&s.rgb, s.width, s.height, image::ExtendedColorType::Rgb8)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the frame: {e}"),
            )
        })?;
    Ok(out)
}

/// The multipart fields of a request: files by field name, texts by field name.
struct Form {
    files: Vec<(String, String, Vec<u8>)>,
    texts: Vec<(String, String)>,
}

/// Reads a multipart form; malformed bodies are 400, too-large ones 413.
async fn read_form(form: Result<Multipart, MultipartRejection>) -> ApiResult<Form> {
    let mut mp = form.map_err(|e| {
        ApiError::new(
            e.status(),
            format!(
                "{}; send multipart/form-data with a field `image`",
                e.body_text()
            ),
        )
    })?;
    let mut f = Form {
        files: Vec::new(),
        texts: Vec::new(),
    };
    loop {
        let field = mp.next_field().await.map_err(body_error)?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or("").to_string();
        let file = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(body_error)?;
        match file {
            Some(file) => f.files.push((name, file, bytes.to_vec())),
            None => f.texts.push((
                name,
                String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "a text field is not UTF-8")
                })?,
            )),
        }
    }
    Ok(f)
}

/// A body that could not be read is the client's fault: too large (413), malformed or cut
/// short (400).
fn body_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = match e.status() {
        s if s.is_server_error() => StatusCode::BAD_REQUEST,
        s => s,
    };
    ApiError::new(
        status,
        format!("malformed or incomplete multipart body: {}", e.body_text()),
    )
}

impl Form {
    fn text(&self, name: &str) -> Option<&str> {
        self.texts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn classify(
    State(state): State<Shared>,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Value>> {
    let mut form = read_form(form).await?;
    let pos = form
        .files
        .iter()
        .position(|(n, _, _)| n == "image")
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "no `image` file field in the form; send the photo as multipart field `image`",
            )
        })?;
    let (_, file, bytes) = form.files.swap_remove(pos);
    let text = form
        .text("text")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let done = blocking(&state, move |state| {
        let mut engine = lock(&state.engine);
        Ok(engine.classify(&bytes, &file, text.as_deref())?)
    })
    .await?;
    {
        let mut m = lock(&state.metrics);
        for (stage, ms) in &done.timings {
            m.observe("upload", stage, *ms);
        }
    }
    let row: Vec<f64> = ["decode", "preprocess", "encode", "head", "total"]
        .iter()
        .map(|s| {
            done.timings
                .iter()
                .find(|(k, _)| k == s)
                .map_or(0.0, |(_, v)| *v)
        })
        .collect();
    let mut uploads = lock(&state.uploads);
    if uploads.len() == super::state::HISTORY {
        uploads.pop_front();
    }
    uploads.push_back([row[0], row[1], row[2], row[3], row[4]]);
    Ok(Json(done.json))
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    exclude: String,
    top: Option<usize>,
}

async fn search_recipes(
    State(state): State<Shared>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let exclude: Vec<String> = q
        .exclude
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let top = q.top.unwrap_or(5).clamp(1, 50);
    let v = blocking(&state, move |state| {
        Ok(lock(&state.engine).search(&q.q, &exclude, top)?)
    })
    .await?;
    Ok(Json(v))
}

async fn show_recipe(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = blocking(&state, move |state| Ok(lock(&state.engine).show(&id)?)).await?;
    Ok(Json(v))
}

/// `POST /api/teach`: labels photos (uploaded `image` fields, and/or the current live frame
/// with `frame=current`) as `dish`, then refits the default head with them.
async fn teach(
    State(state): State<Shared>,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Value>> {
    let form = read_form(form).await?;
    let dish = form.text("dish").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "no `dish` field: name the dish the photos show",
        )
    })?;
    let dish = valid_dish(dish).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    let use_frame = form.text("frame") == Some("current");
    let mut photos: Vec<(String, Vec<u8>)> = form
        .files
        .into_iter()
        .filter(|(n, _, _)| n == "image")
        .map(|(_, f, b)| (f, b))
        .collect();
    let frame = if use_frame {
        let live = lock(&state.live);
        let f = live.frame.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "there is no live frame to teach from; upload photos instead",
            )
        })?;
        Some(f)
    } else {
        None
    };
    if photos.is_empty() && frame.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "nothing to teach from: send `image` files or `frame=current`",
        ));
    }
    if let Some(f) = frame {
        photos.push((format!("frame-{}.png", f.seq), png_of(&f)?));
    }
    let v = blocking(&state, move |state| {
        super::teach::teach(state, &dish, &photos).map_err(ApiError::from)
    })
    .await?;
    Ok(Json(v))
}

fn png_of(s: &Snapshot) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&s.rgb, s.width, s.height, image::ExtendedColorType::Rgb8)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the frame: {e}"),
            )
        })?;
    Ok(out)
}

/// `GET /api/events`: one `dish` event per settled/changed/cleared dish, JSON data.
async fn events(State(state): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use tokio::sync::broadcast::error::RecvError;
    let rx = state.events.subscribe();
    let stopping = state.stopping.clone();
    let stream =
        futures_util::stream::unfold((rx, stopping), |(mut rx, mut stopping)| async move {
            loop {
                let got = tokio::select! {
                    got = rx.recv() => got,
                    _ = stopping.wait_for(|s| *s) => return None,
                };
                match got {
                    Ok(data) => {
                        return Some((
                            Ok(Event::default().event("dish").data(data)),
                            (rx, stopping),
                        ))
                    }
                    // A slow client misses events; the next one brings it up to date.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn only_loopback_hosts_pass_without_a_token() {
        use super::is_loopback_host;
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:80",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    /// The `multipart` fuzz corpus (tests/corpus/fuzz/multipart: the first line of a file is the
    /// Content-Type, the rest the body) through `read_form` behind the real body limit, then the
    /// `image` file through the decoder: every input is answered 2xx or 4xx with an error message.
    #[test]
    fn multipart_fuzz_corpus_gives_client_errors() {
        use super::*;
        use tower::ServiceExt;

        async fn upload(form: Result<Multipart, MultipartRejection>) -> ApiResult<&'static str> {
            let form = read_form(form).await?;
            let (_, file, bytes) = form
                .files
                .iter()
                .find(|(n, _, _)| n == "image")
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "no `image` file field"))?;
            let decode = dishcam_capture::decode::DecodeOptions::default();
            dishcam_capture::decode::decode_bytes(bytes, file, &decode)
                .map_err(|e| ApiError::from(EngineError::Image(e)))?;
            Ok("decoded")
        }

        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fuzz/multipart");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no inputs", dir.display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let mut statuses = Vec::new();
        for path in files {
            let data = std::fs::read(&path).expect("a corpus file");
            let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (&b"multipart/form-data; boundary=X"[..], &data[..]),
            };
            let app = Router::new()
                .route("/api/classify", post(upload))
                .layer(DefaultBodyLimit::max(BODY_LIMIT));
            let mut req = axum::http::Request::builder()
                .method("POST")
                .uri("/api/classify");
            if let Ok(v) = HeaderValue::from_bytes(content_type) {
                req = req.header(header::CONTENT_TYPE, v);
            }
            let req = req.body(Body::from(body.to_vec())).expect("a request");
            let response = rt.block_on(app.oneshot(req)).expect("infallible");
            let status = response.status();
            let body = rt
                .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .expect("a response body");
            assert!(
                status.is_success() || status.is_client_error(),
                "{}: answered {status}",
                path.display()
            );
            if status.is_client_error() {
                let v: Value = serde_json::from_slice(&body).expect("a JSON error");
                assert!(
                    v["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{}: {v}",
                    path.display()
                );
            }
            statuses.push(status.as_u16());
        }
        assert!(statuses.contains(&200), "no seed decodes: {statuses:?}");
    }

    #[test]
    fn query_tokens_are_decoded() {
        assert_eq!(percent_decode("a%20b+c%2F"), "a b c/");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
