//! The console's stylesheet and script, compiled into the binary.

use http::{HeaderValue, Response, StatusCode, header};

use super::server::{Body, full, plain, with_type};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub fn serve(path: &str) -> Response<Body> {
    let (content_type, text) = match path {
        "/assets/console.css" => ("text/css; charset=utf-8", CSS),
        "/assets/console.js" => ("text/javascript; charset=utf-8", JS),
        _ => return plain(StatusCode::NOT_FOUND, "no such asset"),
    };
    let mut response = with_type(StatusCode::OK, content_type, full(text));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}
