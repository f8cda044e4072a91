//! A headless Chromium driven through chromedriver (WebDriver), for the
//! tests of the operator console: [`Browser::start`] runs chromedriver on a
//! free port and opens a session with a fresh profile; the waits poll the
//! page, each bounded by [`PAGE_WAIT`].
//!
//! Chromium and chromedriver come from the system's packages
//! (`/usr/bin/chromium`, `/usr/bin/chromedriver`, or the paths in
//! `AGENT_TEST_CHROMIUM` and `AGENT_TEST_CHROMEDRIVER`). Where either is
//! missing, [`Browser::start`] prints why the test is skipped and returns
//! `None`; under `CI=true` it panics instead.

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Map, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one wait for the page may take.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

/// A browser session and the chromedriver serving it; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    /// Where [`Browser::screenshot`] writes.
    screenshots: PathBuf,
}

/// The program at `$variable`, else at `default`, if it is a file.
fn program(variable: &str, default: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing (apt-get install chromium chromium-driver, or set {variable})",
            path.display()
        ))
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The workspace's target folder: the one the agent binary was built in.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_agent-host"))
        .ancestors()
        .nth(2)
        .expect("the binary sits in target/<profile>/")
        .to_path_buf()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (after
    /// printing why) when they are not installed, outside CI.
    pub async fn start(test: &str) -> Option<Self> {
        let programs = program("AGENT_TEST_CHROMIUM", "/usr/bin/chromium").and_then(|chromium| {
            program("AGENT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
                .map(|driver| (chromium, driver))
        });
        let (chromium, chromedriver) = match programs {
            Ok(found) => found,
            Err(why) => {
                if test_support::servers::in_ci() {
                    panic!("{test}: {why} (CI=true: a missing browser fails the test)");
                }
                eprintln!("skipped {test}: {why}");
                return None;
            }
        };
        let port = free_port();
        // A process group of its own: Chromium and its helpers are in it,
        // and all end with it.
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + PAGE_WAIT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver does not listen on {address}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut capabilities = Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let mut browser = Self {
            client: ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://{address}"))
                .await
                .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}")),
            driver,
            _profile: profile,
            screenshots: target_dir().join("console-screenshots"),
        };
        std::fs::create_dir_all(&browser.screenshots).expect("the screenshot folder");
        browser.screenshots = browser.screenshots.canonicalize().expect("its path");
        Some(browser)
    }

    /// Types `text` into the field `css` (emptied first).
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type into the field");
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// The element `css`, waiting until it exists.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// The rendered text of `css` ("" for a hidden one, as a reader sees it).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the text of `css` contains `needle`; that text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            if Instant::now() >= deadline {
                self.screenshot("failure").await;
                panic!("{css} never showed '{needle}'; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page; its value.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    /// Saves a screenshot of the window as `<name>.png` in the screenshot
    /// folder (`target/console-screenshots`); its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Ends the session, then chromedriver's process group.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Ends chromedriver and whatever of Chromium is left, even when a test
    /// failed before [`Browser::close`].
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}
