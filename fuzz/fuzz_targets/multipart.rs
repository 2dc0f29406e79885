//! `dishcam serve`'s upload path: a `POST /api/classify` request whose `Content-Type` is the
//! first line of the input and whose body is the rest.
//!
//! The serve code lives in the `dishcam` binary (there is no library target to import), so this
//! target rebuilds its upload path from the same parts: axum's `Multipart` extractor taken as
//! `Result<Multipart, MultipartRejection>`, `DefaultBodyLimit::max(BODY_LIMIT)`, the loop of
//! `read_form` (src/serve/api.rs) field by field, then the `image` file through the decode and
//! preprocessing that `Engine::classify` runs before the model. The real `read_form` replays the
//! saved inputs in a unit test of src/serve/api.rs.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart};
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// src/serve/api.rs `BODY_LIMIT`.
const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// src/serve/api.rs `read_form`, answering with the status it would.
async fn classify(form: Result<Multipart, MultipartRejection>) -> StatusCode {
    let mut mp = match form {
        Ok(mp) => mp,
        Err(e) => return e.status(),
    };
    let mut image = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return body_error(e.status()),
        };
        let name = field.name().unwrap_or("").to_string();
        let file = field.file_name().map(str::to_string);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return body_error(e.status()),
        };
        match file {
            Some(_) if name == "image" && image.is_none() => image = Some(bytes.to_vec()),
            Some(_) => {}
            None => {
                if String::from_utf8(bytes.to_vec()).is_err() {
                    return StatusCode::BAD_REQUEST;
                }
            }
        }
    }
    let Some(bytes) = image else {
        return StatusCode::BAD_REQUEST;
    };
    // The image_preprocess target's first byte picks the lite preprocessing variant; 0 is the
    // pack's own (bilinear, centre crop, NCHW, RGB).
    let mut input = Vec::with_capacity(bytes.len() + 1);
    input.push(0);
    input.extend_from_slice(&bytes);
    match dishcam_fuzz::harness::image_preprocess(&input) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// src/serve/api.rs `body_error`: a body that cannot be read is the client's fault.
fn body_error(status: StatusCode) -> StatusCode {
    if status.is_server_error() {
        StatusCode::BAD_REQUEST
    } else {
        status
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"multipart/form-data; boundary=X"[..], data),
    };
    let app = Router::new()
        .route("/api/classify", post(classify))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let mut req = Request::builder().method("POST").uri("/api/classify");
    if let Ok(v) = header::HeaderValue::from_bytes(content_type) {
        req = req.header(header::CONTENT_TYPE, v);
    }
    let req = req
        .body(Body::from(body.to_vec()))
        .expect("a request with a valid method and URI");
    let status = runtime()
        .block_on(app.oneshot(req))
        .expect("the router is infallible")
        .status();
    assert!(
        !status.is_server_error(),
        "bad input answered {status}: src/serve/api.rs maps every multipart error to 4xx"
    );
});
