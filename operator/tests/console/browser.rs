//! A real headless Chromium driven over WebDriver (chromedriver), for the console tests.
//! `scripts/with-browser.sh` (run by `make test`) installs Debian's chromium and
//! chromium-driver when they are missing and sets `CONSOLE_REQUIRE_BROWSER`, which turns a
//! missing browser from a loudly reported skip into a failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};

/// How long a page has to show what a test waits for.
pub const WITHIN: Duration = Duration::from_secs(90);

pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// The program `env` names, else `default` if it exists.
fn program(env: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    path.exists().then_some(path)
}

/// Whether a missing prerequisite fails the test (in `make test`) rather than skipping it.
pub fn required(what: &str) -> bool {
    if std::env::var_os("CONSOLE_REQUIRE_BROWSER").is_some() {
        panic!("{what} is missing and CONSOLE_REQUIRE_BROWSER forbids skipping (scripts/with-browser.sh installs it)");
    }
    eprintln!("SKIPPED: {what} is missing; run `make test` (scripts/with-browser.sh installs it) to run this test");
    false
}

impl Browser {
    /// Chromium under a fresh chromedriver and profile; None (reported) when not installed.
    pub async fn start() -> Option<Browser> {
        let (Some(chromium), Some(driver)) =
            (program("CHROMIUM", "/usr/bin/chromium"), program("CHROMEDRIVER", "/usr/bin/chromedriver"))
        else {
            required("chromium or chromedriver");
            return None;
        };
        let port = free_port();
        // In a process group of its own, so that the Chromium it starts ends with the test.
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            // No crash handler: it would run in a session of its own and outlive the test.
            "--disable-breakpad",
            "--disable-crash-reporter",
            "--window-size=1366,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": chromium, "args": args }));
        // The consoles under test serve certificates the tests made themselves.
        capabilities.insert("acceptInsecureCerts".into(), serde_json::json!(true));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new()).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("chromedriver did not answer: {e}"),
                // chromedriver is still starting: ask again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Some(Browser { client, _driver: driver, _profile: profile })
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Waits until `check` holds for the page, or fails the test saying what it waited for.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WITHIN;
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!("the page did not show {what} within {WITHIN:?}; it shows:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the page's text contains `text`.
    pub async fn wait_for_text(&self, text: &str) {
        self.wait_until(&format!("{text:?}"), || async { self.text().await.contains(text) }).await;
    }

    /// How many elements match a CSS selector (a WebDriver error fails the test: it is no count).
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("counting {css}: {e}")).len()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        let element =
            self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"));
        element.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Saves a PNG of the page under target/console-screenshots/.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = target_dir().join("console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is written");
    }

    /// Evaluates JavaScript in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}"))
    }
}

/// The browser ends with the test, also when the test fails: chromedriver and every Chromium
/// process it started are killed with their process group.
impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            // SAFETY: signalling the process group this test started (the driver leads it).
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
