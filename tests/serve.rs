//! `dishcam serve`'s HTTP API against the built binary on an ephemeral loopback port: real
//! photos classified, recipes, the token, limits on bodies and pixels, malformed requests,
//! health and metrics, the live pipeline, teaching.
#![cfg(feature = "web")]

mod common;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use server::{multipart, send_raw, send_truncated, shared_photo, Server};

/// A held-out Food-101 photo the lite pack's default head names right (checked with `dishcam
/// classify --json`: beignets first, 0.94). The shipped head names 45 % of such photos right
/// (docs/recogniser.md); these tests are about the plumbing, so they use one it gets right.
pub const PHOTO: &str = "food101-10class/train/beignets/1057410.jpg";
pub const PHOTO_DISH: &str = "beignets";

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn classify_names_a_real_photo_with_recipes() {
    let Some(photo) = shared_photo("serve classify", PHOTO) else {
        return;
    };
    let s = Server::start(&[]);
    let r = s.post_form(
        "/api/classify",
        &[("image", Some("photo.jpg"), &photo)],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["schema"], "dishcam.serve.classify/1");
    assert_eq!(v["head"], "food101");
    let top: Vec<&str> = v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(top.len(), 5);
    assert!(
        top.contains(&PHOTO_DISH),
        "{PHOTO_DISH} not in top-5 {top:?}"
    );
    assert_eq!(v["dish"], top[0]);
    let recipes = v["recipes"].as_array().unwrap();
    assert!(!recipes.is_empty(), "no recipes for {}", v["dish"]);
    assert_eq!(
        recipes[0]["dish"], v["dish"],
        "recipes are for the predicted dish"
    );
    assert!(!recipes[0]["ingredients"].as_array().unwrap().is_empty());
    assert!(!recipes[0]["steps"].as_array().unwrap().is_empty());
    for stage in ["decode", "preprocess", "encode", "head", "total"] {
        assert!(
            v["timings_ms"][stage].as_f64().is_some(),
            "timings_ms.{stage}"
        );
    }
    // With a text, the pack's fusion head answers.
    let r = s.post_form(
        "/api/classify",
        &[
            ("image", Some("photo.jpg"), &photo),
            ("text", None, b"warm beignets with powdered sugar"),
        ],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_ne!(
        v["head"], "food101",
        "a photo with a text goes through the fusion head"
    );
    assert_eq!(v["dish"], PHOTO_DISH);
}

#[test]
fn recipes_search_and_show() {
    let s = Server::start(&[]);
    let r = s.get("/api/recipes?q=vietnamese%20noodle%20soup&top=3");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], "food101-pho", "{v}");
    let r = s.get("/api/recipes/food101-pho");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["dish"], "pho");
    assert!(!v["steps"].as_array().unwrap().is_empty());
    // Excluding an ingredient of every hit leaves them out.
    let r = s.get("/api/recipes?q=peanut%20noodles&top=10");
    let all: Vec<serde_json::Value> = r.json()["hits"].as_array().unwrap().clone();
    let r = s.get("/api/recipes?q=peanut%20noodles&top=10&exclude=peanut");
    assert_eq!(r.status, 200);
    let kept = r.json()["hits"].as_array().unwrap().clone();
    let has_peanut = |h: &serde_json::Value| {
        h["ingredients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().to_lowercase().contains("peanut"))
    };
    assert!(
        all.iter().any(has_peanut),
        "the query should find peanut dishes"
    );
    assert!(!kept.iter().any(has_peanut), "exclude=peanut kept {kept:?}");
    // Unknown ids are 404, empty queries 400, both with a message.
    let r = s.get("/api/recipes/no-such-recipe");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("no-such-recipe"));
    assert_eq!(s.get("/api/recipes?q=").status, 400);
}

#[test]
fn a_token_is_required_on_every_api_call_when_set() {
    let token = "kitchen-test-token-1";
    let s = Server::start(&["--token", token]);
    for path in [
        "/api/state",
        "/api/recipes?q=soup",
        "/api/recipes/food101-pho",
        "/metrics",
        "/api/frame.jpg",
        "/api/events",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 401, "{path} without a token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(
            s.get_auth(path, "wrong-token-xxxx").status,
            401,
            "{path}, wrong token"
        );
    }
    let (ct, body) = multipart(&[("image", Some("x.png"), &png(8, 8))]);
    let r = s.request("POST", "/api/classify", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 401, "classify without a token");
    let r = s.request("POST", "/api/teach", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 401, "teach without a token");
    assert_eq!(s.get_auth("/api/state", token).status, 200);
    assert_eq!(s.get(&format!("/api/state?token={token}")).status, 200);
    assert_eq!(s.get_auth("/metrics", token).status, 200);
    // The page itself and the health check need no token; the page asks for it.
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn cross_site_and_rebound_requests_are_refused() {
    let s = Server::start(&[]);
    // A page of another site posting a form to the camera (CSRF).
    let r = s.post_form(
        "/api/teach",
        &[("dish", None, b"soup"), ("frame", None, b"current")],
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("cross-origin"));
    // A site whose name was rebound to 127.0.0.1.
    let r = s.request("GET", "/api/state", &[("Host", "evil.example:8080")], &[]);
    assert_eq!(r.status, 403);
    // The server's own page passes.
    let own = format!("http://{}", s.addr);
    let r = s.request("GET", "/api/state", &[("Origin", &own)], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.request("GET", "/api/state", &[("Host", "localhost:8080")], &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn binding_beyond_loopback_needs_a_token() {
    common::lite_pack();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dishcam"))
        .args(["serve", "--bind", "0.0.0.0:0"])
        .env_remove("DISHCAM_TOKEN")
        .output()
        .unwrap();
    common::assert_fails_with(&o, &["refusing to listen on 0.0.0.0:0", "--token"]);
}

#[test]
fn bad_uploads_are_refused_with_the_right_status() {
    let s = Server::start(&["--max-pixels", "1000000"]);
    // Over the body limit: refused from Content-Length, before the body is read.
    let big = vec![0u8; 11 * 1024 * 1024];
    let r = s.post_form("/api/classify", &[("image", Some("big.jpg"), &big)], &[]);
    assert_eq!(r.status, 413, "{}", r.text());
    // The same without Content-Length (chunked): refused while reading.
    let (ct, body) = multipart(&[("image", Some("big.jpg"), &big)]);
    let mut raw = format!(
        "POST /api/classify HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.addr
    )
    .into_bytes();
    for chunk in body.chunks(1 << 20) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = send_raw(s.addr, &raw);
    assert_eq!(r.status, 413, "chunked: {}", r.text());
    // Malformed multipart: no boundary, a broken body, no image field.
    let r = s.request(
        "POST",
        "/api/classify",
        &[("Content-Type", "multipart/form-data")],
        b"x",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.request(
        "POST",
        "/api/classify",
        &[("Content-Type", "multipart/form-data; boundary=abc")],
        b"--abc\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\nunterminated",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.post_form("/api/classify", &[("text", None, b"soup")], &[]);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("image"));
    let r = s.request(
        "POST",
        "/api/classify",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // Not an image; too many pixels (the limit is read from the header).
    let r = s.post_form(
        "/api/classify",
        &[("image", Some("notes.jpg"), b"hello, I am text")],
        &[],
    );
    assert_eq!(r.status, 415, "{}", r.text());
    let r = s.post_form(
        "/api/classify",
        &[("image", Some("wide.png"), &png(2000, 1000))],
        &[],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("megapixels"));
    // Unknown paths never reach the file system.
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/web/app.js",
        "/static/..%2fCargo.toml",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("root:"), "{path}");
    }
    // The server still answers.
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn health_and_metrics_follow_the_prometheus_format() {
    let s = Server::start(&[]);
    let r = s.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = s.post_form(
        "/api/classify",
        &[("image", Some("p.png"), &png(320, 240))],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A colour gradient is not food: no dish, the check's numbers, no classes, no recipe.
    let v = r.json();
    assert_eq!(v["dish"], serde_json::Value::Null, "{v}");
    assert_eq!(v["probability"], serde_json::Value::Null, "{v}");
    assert_eq!(v["no_dish"]["reason"], "not-food", "{v}");
    assert!(
        v["no_dish"]["score"].as_f64().unwrap() < v["no_dish"]["threshold"].as_f64().unwrap(),
        "{v}"
    );
    assert_eq!(v["top"], serde_json::json!([]), "{v}");
    assert_eq!(v["recipes"], serde_json::json!([]), "{v}");
    assert!(v["timings_ms"]["check"].as_f64().is_some(), "{v}");
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // name{labels} value
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "{name} has no # TYPE line before it"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line:?}");
        }
    }
    assert_eq!(types["dishcam_stage_latency_seconds"], "histogram");
    assert!(
        text.contains("dishcam_stage_latency_seconds_count{path=\"upload\",stage=\"encode\"} 1\n"),
        "{text}"
    );
    assert!(text.contains(
        "dishcam_stage_latency_seconds_bucket{path=\"upload\",stage=\"total\",le=\"+Inf\"} 1\n"
    ));
    assert!(
        text.contains("dishcam_stage_latency_seconds_count{path=\"upload\",stage=\"check\"} 1\n"),
        "{text}"
    );
    // Without a live source every frame counter is there, at zero.
    for kind in [
        "captured",
        "classified",
        "gated",
        "dropped",
        "no_dish",
        "source_error",
    ] {
        assert!(
            text.contains(&format!("dishcam_frames_total{{kind=\"{kind}\"}} 0\n")),
            "{kind}: {text}"
        );
    }
    for name in [
        "dishcam_fps",
        "dishcam_dropped_frames_total",
        "dishcam_frames_total",
        "dishcam_http_responses_total",
    ] {
        assert!(types.contains_key(name), "{name} missing");
    }
}

#[test]
fn a_thousand_malformed_requests_do_not_wedge_the_server() {
    let s = Server::start(&[]);
    let good = png(320, 240);
    let classify = |s: &Server| {
        let t = std::time::Instant::now();
        let r = s.post_form("/api/classify", &[("image", Some("p.png"), &good)], &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        t.elapsed()
    };
    let mut before: Vec<Duration> = (0..5).map(|_| classify(&s)).collect();
    before.sort();
    let broken =
        b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\nno end";
    let mut broken_multipart = format!(
        "POST /api/classify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n",
        broken.len()
    )
    .into_bytes();
    broken_multipart.extend_from_slice(broken);
    let bad: [(&[u8], bool); 5] = [
        (&broken_multipart, false),
        (b"GARBAGE\r\n\r\n", true),
        (b"GET /api/recipes?q=%zz&top=-1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", false),
        (b"POST /api/teach HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", false),
        // The client gives up mid-body.
        (b"POST /api/classify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 600\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n", true),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..1000 {
        let (raw, truncated) = bad[i % bad.len()];
        // 0: the server closed without an HTTP answer (it cannot parse the request, or the
        // client left).
        let status = if truncated {
            send_truncated(s.addr, raw).map_or(0, |r| r.status)
        } else {
            send_raw(s.addr, raw).status
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(
        statuses.keys().all(|s| *s == 0 || (400..500).contains(s)),
        "a malformed request got a non-4xx answer: {statuses:?}"
    );
    let after = classify(&s);
    eprintln!(
        "malformed-request statuses {statuses:?}; classify median before {:?}, after {:?}",
        before[2], after
    );
    assert_eq!(s.get("/healthz").json()["status"], "ok");
}

#[test]
fn the_live_pipeline_feeds_state_frames_and_events() {
    let Some(dir) = common::shared_data("serve live") else {
        return;
    };
    let photo = dir.join(PHOTO);
    let source = format!("file://{}", photo.display());
    let s = Server::start(&[&source, "--fps", "8", "--loop", "--gate", "0"]);
    // Subscribe to dish events before the dish can settle.
    let mut events = std::net::TcpStream::connect(s.addr).unwrap();
    use std::io::{Read, Write};
    events
        .write_all(format!("GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).as_bytes())
        .unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // One minute in all: keep-alive comments on the stream must not keep the test waiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.contains("\"event\":\"settled\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no dish settled within a minute: {seen}"
        );
        let n = events.read(&mut buf).expect("a dish event within a minute");
        assert!(n > 0, "the event stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("event: dish"), "{seen}");
    assert!(
        seen.contains(&format!("\"dish\":\"{PHOTO_DISH}\"")),
        "{seen}"
    );
    let v = s.get("/api/state").json();
    assert_eq!(v["live"]["status"], "running");
    assert_eq!(v["live"]["dish"], PHOTO_DISH);
    assert!(v["live"]["counts"]["classified"].as_u64().unwrap() >= 5);
    assert!(!v["live"]["recipes"].as_array().unwrap().is_empty());
    let rows = v["latency"]["live"]["ms"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert_eq!(rows[0].as_array().unwrap().len(), 5);
    let r = s.get("/api/frame.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let img = image::load_from_memory(&r.body).expect("a JPEG frame");
    let original = image::open(&photo).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (original.width(), original.height())
    );
    let text = s.get("/metrics").text();
    assert!(text.contains("dishcam_stage_latency_seconds_count{path=\"live\",stage=\"encode\"}"));
}

#[test]
fn teaching_adds_a_dish_from_uploaded_photos_and_the_live_frame() {
    let Some(dir) = common::shared_data("serve teach") else {
        return;
    };
    // A private home: teaching writes the pack's overlay.
    let live = format!("file://{}", dir.join(PHOTO).display());
    let s = Server::start_private(&[&live, "--fps", "4", "--loop", "--gate", "0"]);
    let before = s.get("/api/state").json()["models"]["classes"]
        .as_u64()
        .unwrap();
    // Photos of one Food-101 class, taught as a new dish name.
    let class_dir = dir.join("food101-10class/train/bibimbap");
    let mut names: Vec<_> = std::fs::read_dir(&class_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let photos: Vec<Vec<u8>> = names
        .iter()
        .take(6)
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let mut fields: Vec<(&str, Option<&str>, &[u8])> = vec![("dish", None, b"Stone Pot Rice")];
    for p in &photos {
        fields.push(("image", Some("p.jpg"), p));
    }
    let r = s.post_form("/api/teach", &fields, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["dish"], "stone_pot_rice");
    assert_eq!(v["head"], "kitchen");
    assert_eq!(v["photos"], 6);
    assert_eq!(
        v["heads"][0]["added_classes"],
        serde_json::json!(["stone_pot_rice"])
    );
    let after = s.get("/api/state").json()["models"]["classes"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1, "the server reloaded the refitted head");
    // A taught photo is now named as the new dish.
    let r = s.post_form(
        "/api/classify",
        &[("image", Some("p.jpg"), &photos[0])],
        &[],
    );
    let top: Vec<String> = r.json()["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap().to_string())
        .collect();
    assert!(top.contains(&"stone_pot_rice".to_string()), "{top:?}");
    assert_eq!(
        s.get("/api/state").json()["live"]["status"],
        "running",
        "the live pipeline restarted"
    );
    // The live frame, as an example of a dish the head knows: no class is added.
    let r = s.post_form(
        "/api/teach",
        &[("dish", None, b"beignets"), ("frame", None, b"current")],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["photos"], 1);
    assert_eq!(v["heads"][0]["added_classes"], serde_json::json!([]));
    assert_eq!(v["heads"][0]["classes"].as_u64(), Some(after));
    // Bad dish names and empty requests are refused.
    let r = s.post_form(
        "/api/teach",
        &[
            ("dish", None, b"../../etc"),
            ("image", Some("p.jpg"), &photos[0]),
        ],
        &[],
    );
    assert_eq!(r.status, 400);
    let r = s.post_form("/api/teach", &[("dish", None, b"soup")], &[]);
    assert_eq!(r.status, 400);
    let idle = Server::start_private(&[]);
    let r = idle.post_form(
        "/api/teach",
        &[("dish", None, b"soup"), ("frame", None, b"current")],
        &[],
    );
    assert_eq!(r.status, 409, "no live frame without a source");
}

#[test]
fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    use std::io::{Read, Write};
    let s = Server::start(&[]);
    let mut slow = std::net::TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // The server closes it after its header-read timeout (10 s); a read that waits longer
    // than a minute means the connection would be held forever.
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 1024];
    match slow.read(&mut buf) {
        Ok(n) => assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            "unexpected answer: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server held the half-sent request for a minute"
        ),
    }
    assert_eq!(s.get("/healthz").status, 200);
}
