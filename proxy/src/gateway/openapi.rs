//! `GET <prefix>/openapi.json`: the route's OpenAPI 3.1 document. The document is built by
//! [`tollgate_snapshot::openapi::document`] from the compiled route (pure, and shared with the
//! controller's portal, which renders and exports the same document).

use http::Response;
use tollgate_snapshot::openapi::document;
use tollgate_snapshot::{RouteIdx, Snapshot};

use super::answer::json_value;
use crate::call::ResponseBody;

/// The document of route `route`, as an answer.
pub fn serve(snapshot: &Snapshot, route: RouteIdx) -> Response<ResponseBody> {
    json_value(&document(&snapshot.content.routes[route as usize]))
}
