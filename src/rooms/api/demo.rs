//! The demo chat served at `/` and the JS client module at `/client.js`: static files
//! embedded in the binary at build time (no files to deploy, nothing read from disk at run
//! time, no external assets). `RoomsConfig::demo` (`--no-demo`) turns them off.
//!
//! Owns the file table and the response headers only; routing stays in `Api::serve`.

use crate::server::HttpResponse;

/// One embedded file: the path it answers on, its media type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the demo. `/client.js` is the npm package's own module (clients/js), so the
/// demo runs exactly what front-end developers install.
const ASSETS: [Asset; 4] = [
    Asset { path: "/", content_type: HTML, body: include_str!("../../../demo/index.html") },
    Asset { path: "/demo.js", content_type: JAVASCRIPT, body: include_str!("../../../demo/demo.js") },
    Asset { path: "/demo.css", content_type: CSS, body: include_str!("../../../demo/demo.css") },
    Asset { path: "/client.js", content_type: JAVASCRIPT, body: include_str!("../../../clients/js/src/index.js") },
];

/// The page may load its own scripts and styles and open WebSockets, nothing else: chat text
/// from other users is rendered as text, and this keeps it so even if a bug slipped through.
/// (`ws:`/`wss:` are listed because older browsers do not count them as `'self'`.)
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded file at `path` (without the query), or `None`.
pub(super) fn response(path: &str) -> Option<HttpResponse> {
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    let response = HttpResponse {
        content_type: asset.content_type,
        // `no-cache`: the files change with the binary, and a browser left open across an
        // upgrade must not run an old page against a new server; they are small.
        ..HttpResponse::text(200, asset.body)
    }
    .with_header("Cache-Control", "no-cache")
    .with_header("X-Content-Type-Options", "nosniff");
    Some(if asset.content_type == HTML {
        response.with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    } else {
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_others_are_not() {
        for asset in &ASSETS {
            let r = response(asset.path).expect(asset.path);
            assert_eq!((r.status, r.content_type), (200, asset.content_type));
            assert_eq!(r.body, asset.body.as_bytes());
        }
        assert!(response("/index.html.bak").is_none());
        assert!(response("/ws").is_none());
    }

    #[test]
    fn the_page_loads_only_embedded_files() {
        // "No external assets": every src/href of the page is one of ours (or inline data).
        let page = ASSETS[0].body;
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                let target = part.split('"').next().unwrap_or_default();
                // Relative to `/`, where the page is served.
                let ours =
                    target.starts_with("data:") || ASSETS.iter().any(|a| a.path.strip_prefix('/') == Some(target));
                assert!(ours, "{attr}{target}\" is not an embedded file");
            }
        }
    }
}
