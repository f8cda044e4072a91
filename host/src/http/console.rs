//! The operator console: one page (`GET /`) and its script and style
//! (`GET /console/app.js`, `GET /console/app.css`), hand-written files
//! embedded in the binary.
//!
//! The files hold no data, so they are served without a token
//! ([`serves_without_token`]); the page reads everything from the `/v1`
//! API with the token the operator types in, sent as `Authorization:
//! Bearer`. Every answer here carries a Content-Security-Policy that lets
//! the page run only these files and talk only to this agent
//! ([`CONTENT_SECURITY_POLICY`]), and `X-Content-Type-Options: nosniff`.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CSP_HEADER, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The console's policy: its own script and style only (nothing inline),
/// fetches to this agent only, no forms posted anywhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page.
const INDEX_HTML: &str = include_str!("console/index.html");
/// The page's script.
const APP_JS: &str = include_str!("console/app.js");
/// The page's style.
const APP_CSS: &str = include_str!("console/app.css");

/// The console's paths and their files: `(path, content type, text)`.
const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/console/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/console/app.css", "text/css; charset=utf-8", APP_CSS),
];

/// The console's routes, to merge into the API's router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, text)| {
            router.route(path, get(move || ready_asset(content_type, text)))
        })
}

/// Whether a request is for one of the console's files, which need no
/// token: a `GET` (or `HEAD`) of one of their paths.
pub(super) fn serves_without_token(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && ASSETS.iter().any(|&(asset, _, _)| asset == path)
}

async fn ready_asset(content_type: &'static str, text: &'static str) -> Response {
    asset(content_type, text)
}

/// One file's answer, with the console's security headers.
fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CSP_HEADER,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new build of the agent serves new files: the browser asks again.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_names_its_files() {
        assert!(INDEX_HTML.contains(r#"<script src="/console/app.js" defer></script>"#));
        assert!(INDEX_HTML.contains(r#"href="/console/app.css""#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1, "one script tag");
        assert!(!INDEX_HTML.contains("<style"), "no inline style element");
        assert!(!INDEX_HTML.contains(" style="), "no style attribute");
        assert!(
            !INDEX_HTML
                .split_whitespace()
                .any(|word| word.starts_with("on") && word.contains('=')),
            "no inline event handler"
        );
    }

    #[test]
    fn the_script_sends_the_token_in_a_header_only_and_writes_text_not_markup() {
        assert!(APP_JS.contains("Authorization: 'Bearer ' + token"));
        assert!(APP_JS.contains("sessionStorage"));
        assert!(
            !APP_JS.contains("localStorage"),
            "the token dies with the tab"
        );
        assert!(!APP_JS.contains("innerHTML"), "text only, never markup");
        assert!(!APP_JS.contains("?token"), "never a token in a URL");
        assert!(
            !APP_JS.contains("new EventSource"),
            "cannot send the header"
        );
    }

    #[test]
    fn only_reads_of_the_console_files_skip_the_token() {
        for path in ["/", "/console/app.js", "/console/app.css"] {
            assert!(serves_without_token(&Method::GET, path), "{path}");
            assert!(serves_without_token(&Method::HEAD, path), "{path}");
            assert!(!serves_without_token(&Method::POST, path), "{path}");
        }
        for path in [
            "/console/",
            "/console/other.js",
            "/v1/plugins",
            "/index.html",
        ] {
            assert!(!serves_without_token(&Method::GET, path), "{path}");
        }
    }

    #[test]
    fn every_file_carries_the_policy_and_nosniff() {
        for &(_, content_type, text) in &ASSETS {
            let response = asset(content_type, text);
            let headers = response.headers();
            assert_eq!(headers[CSP_HEADER], CONTENT_SECURITY_POLICY);
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[CONTENT_TYPE], content_type);
        }
    }
}
