//! The browser assets under `web/`, embedded in the binary: no build step, no files to ship.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const TRADEWIRE_JS: &str = include_str!("../../../web/tradewire.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response()
            }),
        )
        .route(
            "/tradewire.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], TRADEWIRE_JS).into_response()
            }),
        )
}
