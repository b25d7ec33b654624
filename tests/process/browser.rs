//! A headless Chromium driven through ChromeDriver (the W3C WebDriver
//! protocol, plain HTTP and JSON), both from Debian's packages, installed
//! when missing. The browser's profile is a temp dir; the driver and the
//! browser end with the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::deps;

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
    _port: super::Ports,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session.
    pub fn start() -> Browser {
        let chromium = deps::ensure("chromium", "chromium");
        let chromedriver = deps::ensure("chromedriver", "chromium-driver");
        let ports = super::reserve_ports(1);
        let port = ports.ports[0];
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
            _port: ports,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while browser.get("/status").is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // As the machine's notes advise for a closed network: no
        // background connections, nothing fetched at start.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let session = browser.post("/session", &caps).expect("a browser session");
        browser.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {session}"))
            .to_string();
        browser
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .map_err(|e| e.to_string())?;
        let body: Value = r.body_mut().read_json().map_err(|e| e.to_string())?;
        check(r.status().as_u16(), body)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .map_err(|e| e.to_string())?;
        let body: Value = r.body_mut().read_json().map_err(|e| e.to_string())?;
        check(r.status().as_u16(), body)
    }

    fn in_session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.post(&self.in_session("/url"), &json!({"url": url}))
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub fn eval(&self, script: &str) -> Value {
        self.post(
            &self.in_session("/execute/sync"),
            &json!({"script": script, "args": []}),
        )
        .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// Clicks the element `css` selects, as a user would.
    pub fn click(&self, css: &str) {
        let found = self
            .post(
                &self.in_session("/element"),
                &json!({"using": "css selector", "value": css}),
            )
            .unwrap_or_else(|e| panic!("finding {css}: {e}"));
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element id in {found}"))
            .to_string();
        self.post(
            &self.in_session(&format!("/element/{id}/click")),
            &json!({}),
        )
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let shot = self
            .get(&self.in_session("/screenshot"))
            .expect("a screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("base64 text"))
            .expect("valid base64");
        std::fs::write(path, png).unwrap();
    }
}

/// WebDriver answers `{"value": …}`; an error is a value with `error`.
fn check(status: u16, body: Value) -> Result<Value, String> {
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 || value.get("error").is_some() {
        Err(format!("HTTP {status}: {value}"))
    } else {
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
