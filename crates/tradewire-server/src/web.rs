//! The browser assets under `web/`, embedded in the binary: no build step, no files to ship.
//!
//! One static table, one route per file: the dashboard (`index.html`, `app.js`, its panel
//! modules and stylesheet), the standalone client module `tradewire.js`, and the vendored
//! charting library with its licence. Nothing here reads the disk at run time.
//!
//! Every file goes out with the same security headers ([`SECURITY_HEADERS`]): scripts
//! only from this origin (the pages have no inline script or event handler), no framing,
//! no content sniffing, no referrer.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The pages' Content Security Policy. `style-src` allows inline style because the
/// vendored charting library adds a `<style>` element for its attribution logo;
/// `connect-src` allows WebSockets (`ws:`/`wss:`), which `'self'` does not cover in every
/// browser.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// The headers every embedded file is served with.
pub const SECURITY_HEADERS: &[(HeaderName, &str)] = &[
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// `(URL path, content type, body)` of every embedded file.
const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../../web/index.html")),
    ("/tradewire.js", JS, include_str!("../../../web/tradewire.js")),
    ("/app.js", JS, include_str!("../../../web/app.js")),
    ("/app.css", CSS, include_str!("../../../web/app.css")),
    ("/api.js", JS, include_str!("../../../web/api.js")),
    ("/dom.js", JS, include_str!("../../../web/dom.js")),
    ("/panels/connection.js", JS, include_str!("../../../web/panels/connection.js")),
    ("/panels/stats.js", JS, include_str!("../../../web/panels/stats.js")),
    ("/panels/bots.js", JS, include_str!("../../../web/panels/bots.js")),
    ("/panels/portfolios.js", JS, include_str!("../../../web/panels/portfolios.js")),
    ("/panels/positions.js", JS, include_str!("../../../web/panels/positions.js")),
    ("/panels/orders.js", JS, include_str!("../../../web/panels/orders.js")),
    ("/panels/signals.js", JS, include_str!("../../../web/panels/signals.js")),
    ("/panels/risk.js", JS, include_str!("../../../web/panels/risk.js")),
    ("/panels/watchlist.js", JS, include_str!("../../../web/panels/watchlist.js")),
    ("/panels/health.js", JS, include_str!("../../../web/panels/health.js")),
    ("/panels/charts.js", JS, include_str!("../../../web/panels/charts.js")),
    (
        "/vendor/lightweight-charts.standalone.production.mjs",
        JS,
        include_str!("../../../web/vendor/lightweight-charts.standalone.production.mjs"),
    ),
    (
        "/vendor/lightweight-charts.LICENSE",
        TEXT,
        include_str!("../../../web/vendor/lightweight-charts.LICENSE"),
    ),
];

pub fn router() -> Router {
    let files = FILES.iter().fold(Router::new(), |router, &(path, content_type, body)| {
        router.route(
            path,
            get(move || async move {
                ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
                    .into_response()
            }),
        )
    });
    SECURITY_HEADERS.iter().fold(files, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::overriding(name.clone(), HeaderValue::from_static(value)))
    })
}

#[cfg(test)]
mod tests {
    use super::FILES;

    /// The Content Security Policy forbids inline script: no page may need one.
    #[test]
    fn no_page_has_inline_script_or_event_handlers() {
        for (path, _, body) in FILES.iter().filter(|(p, ..)| *p == "/" || p.ends_with(".html")) {
            let lower = body.to_lowercase();
            for (at, _) in lower.match_indices("<script") {
                let tag = &lower[at..at + lower[at..].find('>').expect("a closed tag")];
                assert!(tag.contains(" src="), "{path}: inline script {tag}>");
            }
            for handler in
                [" onclick=", " onload=", " onerror=", " onsubmit=", " oninput=", " onchange=", "javascript:"]
            {
                assert!(!lower.contains(handler), "{path}: inline handler {handler}");
            }
        }
    }

    #[test]
    fn every_module_the_dashboard_imports_is_served() {
        for (path, _, body) in FILES.iter().filter(|(p, ..)| p.ends_with(".js") || *p == "/") {
            for line in body.lines().filter(|l| l.trim_start().starts_with("import ")) {
                let Some(spec) = line.split(['"', '\'']).nth(1) else { continue };
                let target = if spec.starts_with('/') {
                    spec.to_string()
                } else {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    normalize(&format!("{dir}/{spec}"))
                };
                assert!(
                    FILES.iter().any(|(p, ..)| *p == target),
                    "{path} imports {spec} ({target}), which is not served"
                );
            }
        }
    }

    fn normalize(path: &str) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        format!("/{}", parts.join("/"))
    }
}
