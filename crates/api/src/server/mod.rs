//! The server-server side: for now the key server, which federation peers
//! (and notaries) read our signing key from.

mod key;

use std::sync::Arc;

use axum::{Router, routing::get};
use conduit_service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/key/v2/server", get(key::server_key))
        // Deprecated form with a key id, still requested by older servers.
        .route("/_matrix/key/v2/server/{key_id}", get(key::server_key))
}
