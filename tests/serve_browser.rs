//! End to end in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`,
//! installed by scripts/setup.sh) driven over WebDriver loads the page of `dishcam serve`,
//! uploads a Food-101 photo, and must show the dish, the top-5, recipes with ingredients and
//! steps, and the latency chart. Screenshots at 1280x800 and at a phone's 390 px width go to
//! `target/artifacts/` (the CI artefacts; `scripts/screenshot.sh` runs just this test).
#![cfg(feature = "web")]

mod common;
#[path = "common/server.rs"]
mod server;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::json;
use server::Server;
use std::panic::AssertUnwindSafe;

/// The photo and the dish the lite pack names first for it (see tests/serve.rs).
const PHOTO: &str = "food101-10class/train/beignets/1057410.jpg";
const DISH: &str = "beignets";

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let exe = ["chromedriver", "/usr/bin/chromedriver"]
            .into_iter()
            .find(|e| Command::new(e).arg("--version").output().is_ok_and(|o| o.status.success()))
            .expect("chromedriver is not installed: run scripts/setup.sh (Debian packages chromium and chromium-driver)");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Bounded wait for the driver to listen (not a timing assertion: it only has to come up).
        for _ in 0..200 {
            if TcpStream::connect(addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: run scripts/setup.sh")
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium(),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in headless Chromium")
}

fn artifacts() -> PathBuf {
    let dir = common::repo().join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Resizes the window so its viewport is `width` x `height` CSS pixels.
async fn viewport(c: &Client, width: u32, height: u32) {
    c.set_window_size(width, height).await.unwrap();
    let inner = c
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .unwrap();
    let (iw, ih) = (
        inner[0].as_u64().unwrap() as u32,
        inner[1].as_u64().unwrap() as u32,
    );
    if (iw, ih) != (width, height) {
        c.set_window_size(2 * width - iw, 2 * height - ih)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn upload_a_photo_and_see_dish_recipes_and_latency() {
    let Some(data) = common::shared_data("serve browser") else {
        return;
    };
    // Chromium takes only canonical paths for file inputs.
    let photo = std::fs::canonicalize(data.join(PHOTO)).unwrap();
    // The same photo looped as the live source, so the live view and the chart have frames.
    let source = format!("file://{}", photo.display());
    // --gate 0: every frame of the still photo goes through the encoder, as a camera's would.
    let server = Server::start(&[&source, "--fps", "4", "--loop", "--gate", "0"]);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    // Whatever happens, the session is closed: killing chromedriver alone would leave the
    // browser running.
    let outcome = AssertUnwindSafe(check_the_page(&c, &server, &photo))
        .catch_unwind()
        .await;
    let _ = c.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check_the_page(c: &Client, server: &Server, photo: &Path) {
    viewport(c, 1280, 800).await;
    c.goto(&format!("http://{}/", server.addr)).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "dishcam");

    let input = c.find(Locator::Css("#photo")).await.unwrap();
    input.send_keys(photo.to_str().unwrap()).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(120))
        .for_element(Locator::Css("#result[data-state=done]"))
        .await
        .expect("the page shows the result of the upload");

    let dish = c.find(Locator::Css("#dish-name")).await.unwrap();
    assert_eq!(dish.attr("data-dish").await.unwrap().as_deref(), Some(DISH));
    assert_eq!(dish.text().await.unwrap(), "Beignets");
    let bars = c.find_all(Locator::Css("#top5 li")).await.unwrap();
    assert_eq!(bars.len(), 5);
    assert!(bars[0].text().await.unwrap().contains("Beignets"));
    let recipes = c.find_all(Locator::Css("#recipes .recipe")).await.unwrap();
    assert!(!recipes.is_empty(), "no recipe shown");
    let first = recipes[0].text().await.unwrap();
    for want in ["Ingredients", "Steps"] {
        assert!(
            first.to_lowercase().contains(&want.to_lowercase()),
            "{want} missing in {first}"
        );
    }
    assert!(c
        .find(Locator::Css("#recipes-for"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("Beignets"));
    // The chart has drawn the live frames: one legend entry per stage, with a median.
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath(
            "//div[@id='legend']/span[contains(., 'ms')]",
        ))
        .await
        .expect("the latency chart shows stage medians");
    let legend = c.find_all(Locator::Css("#legend span")).await.unwrap();
    assert_eq!(legend.len(), 5);
    // The live frame has loaded.
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#live-img[src*='/api/frame.jpg']"))
        .await
        .expect("the live view shows a frame");
    let shown = c
        .execute(
            "return document.getElementById('live-img').naturalWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(shown.as_u64().unwrap() > 0, "the live frame did not decode");

    let png = c.screenshot().await.unwrap();
    let shot = artifacts().join("serve-upload.png");
    std::fs::write(&shot, &png).unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1280, 800));
    eprintln!("screenshot: {}", shot.display());

    // A phone: nothing wider than the screen; the whole page as one tall screenshot.
    viewport(c, 390, 844).await;
    let overflow = c
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap();
    assert!(
        overflow.as_u64().unwrap() <= 390,
        "the page is wider than a phone: {overflow}"
    );
    let height = c
        .execute("return document.documentElement.scrollHeight", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap() as u32;
    viewport(c, 390, height.clamp(844, 4000)).await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts().join("serve-upload-phone.png"), &png).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn the_page_asks_for_the_token_and_then_works() {
    common::lite_pack();
    let token = "browser-test-token-42";
    let server = Server::start(&["--token", token]);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let outcome = AssertUnwindSafe(async {
        c.goto(&format!("http://{}/", server.addr)).await.unwrap();
        c.wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("#auth:not([hidden])"))
            .await
            .expect("the page asks for the token after a 401");
        let chips = c.find_all(Locator::Css("#chips .chip")).await.unwrap();
        assert!(chips.is_empty(), "no data without the token");
        c.find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        c.find(Locator::Css("#auth-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::XPath(
                "//div[@id='chips']/span[contains(., 'lite')]",
            ))
            .await
            .expect("with the token the page loads the server's state");
        let hidden = c
            .execute("return document.getElementById('auth').hidden", vec![])
            .await
            .unwrap();
        assert_eq!(hidden, json!(true));
    })
    .catch_unwind()
    .await;
    let _ = c.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
