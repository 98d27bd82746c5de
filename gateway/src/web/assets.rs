//! The pages' static files, compiled into the binary: one table, one route
//! (`/static/<name>`). A name not in the table is 404; nothing is read from
//! disk at run time, so no request can reach a file outside the table.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// A static file by its name under `gateway/static/`, which is also its name
/// under `/static/`: the two cannot drift apart.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        (
            $name,
            $content_type,
            include_str!(concat!("../../static/", $name)),
        )
    };
}

/// Every static file: name under `/static/`, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    asset!("app.css", CSS),
    asset!("annotate.js", JS),
    asset!("app.js", JS),
    asset!("common.js", JS),
    asset!("lesson.js", JS),
    asset!("lesson-annotate.js", JS),
    asset!("lesson-devices.js", JS),
    asset!("lesson-media.js", JS),
    asset!("lesson-panel.js", JS),
    asset!("lesson-signal.js", JS),
    asset!("lesson-view.js", JS),
    asset!("lesson-words.js", JS),
    asset!("replay.js", JS),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `GET /static/{name}`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/static/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type_and_a_body() {
        for (name, content_type, body) in ASSETS {
            assert!(!body.is_empty(), "{name}");
            let ext = name.rsplit('.').next().unwrap_or_default();
            assert_eq!(*content_type, if ext == "css" { CSS } else { JS }, "{name}");
        }
    }

    /// A module a page imports but the table lacks would be a 404 in the
    /// browser and a blank page: every `from './x.js'` and `import('./x.js')`
    /// names a file in the table.
    #[test]
    fn every_imported_module_is_in_the_table() {
        let mut imports = 0;
        for (name, _, body) in ASSETS {
            for prefix in ["from './", "import('./"] {
                for (at, _) in body.match_indices(prefix) {
                    let rest = &body[at + prefix.len()..];
                    let imported = &rest[..rest.find('\'').unwrap_or(rest.len())];
                    assert!(
                        ASSETS.iter().any(|(n, _, _)| *n == imported),
                        "{name} imports {imported}, which is not served"
                    );
                    imports += 1;
                }
            }
        }
        assert!(
            imports > 0,
            "no imports found: the pattern no longer matches"
        );
    }
}
