//! The dashboard's static files, compiled into the binary so it works
//! air-gapped: htmx 2.0.4 (0BSD, `static/htmx-LICENSE.txt`, from the npm
//! package `htmx.org`), the dashboard's script (SSE, copy buttons) and its
//! style sheet. Nothing is fetched from anywhere else.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `(name, content type, bytes)` of every static file.
const FILES: [(&str, &str, &str); 3] = [
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_str!("static/htmx.min.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("static/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("static/app.css"),
    ),
];

/// `GET /ui/static/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, text)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            *text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_static_file_names_another_origin() {
        for (name, _, text) in FILES {
            assert!(!text.contains("http://"), "{name}");
            assert!(!text.contains("https://"), "{name}");
        }
    }
}
