//! The client-server API, one file per area of the spec.

mod account;
mod account_data;
mod alias;
mod appservice;
mod backup;
mod dehydrated;
mod devices;
pub(crate) mod directory;
mod discovery;
mod filter;
mod keys;
pub(crate) mod media;
mod membership;
mod message;
mod messages;
mod openid;
mod presence;
mod profile;
mod push_rules;
mod pushers;
mod receipts;
mod redact;
mod register;
mod relations;
mod room;
mod search;
mod session;
mod sliding_sync;
mod space;
mod state;
mod summary;
mod sync;
mod timestamp;
mod to_device;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post, put},
};
use conduit_service::Services;

use crate::ruma_wrapper::RouterExt;

/// A count a client sent (a limit), as a `usize` (saturated: the callers
/// clamp it to their own maximum anyway).
fn count(value: ruma::UInt) -> usize {
    usize::try_from(u64::from(value)).unwrap_or(usize::MAX)
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(discovery::versions)
        .ruma_route(discovery::capabilities)
        .route("/_matrix/client/v3/login", get(session::login_types))
        .route("/_matrix/client/r0/login", get(session::login_types))
        .ruma_route(session::login)
        .route(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            post(sliding_sync::sliding_sync),
        )
        .ruma_route(session::refresh)
        .ruma_route(session::logout)
        .ruma_route(session::logout_all)
        .ruma_route(register::register)
        .ruma_route(register::username_available)
        .ruma_route(register::token_validity)
        .ruma_route(account::whoami)
        .ruma_route(openid::request_token)
        .ruma_route(account::change_password)
        .ruma_route(account::deactivate)
        .ruma_route(account::third_party_ids)
        .ruma_route(devices::list)
        .ruma_route(devices::get)
        .ruma_route(devices::update)
        .ruma_route(devices::delete)
        .ruma_route(devices::delete_many)
        .ruma_route(profile::get_profile)
        .ruma_route(profile::get_field)
        .ruma_route(profile::set_field)
        .ruma_route(profile::delete_field)
        .ruma_route(account_data::get_global)
        .ruma_route(account_data::set_global)
        .ruma_route(account_data::get_room)
        .ruma_route(account_data::get_tags)
        .ruma_route(account_data::create_tag)
        .ruma_route(account_data::delete_tag)
        .ruma_route(account_data::set_room)
        .ruma_route(filter::create)
        .ruma_route(filter::get)
        .ruma_route(push_rules::get_all)
        .ruma_route(push_rules::get_global)
        .ruma_route(push_rules::get_rule)
        .ruma_route(push_rules::set_rule)
        .ruma_route(push_rules::delete_rule)
        .ruma_route(push_rules::get_enabled)
        .ruma_route(push_rules::set_enabled)
        .ruma_route(push_rules::get_actions)
        .ruma_route(push_rules::set_actions)
        .ruma_route(appservice::ping)
        .route(
            "/_matrix/client/v3/thirdparty/protocols",
            get(appservice::thirdparty_protocols),
        )
        .route(
            "/_matrix/client/v3/thirdparty/protocol/{protocol}",
            get(appservice::thirdparty_protocol),
        )
        .route(
            "/_matrix/client/v3/thirdparty/{kind}/{protocol}",
            get(appservice::thirdparty_by_protocol),
        )
        .route(
            "/_matrix/client/v3/thirdparty/{kind}",
            get(appservice::thirdparty_reverse),
        )
        .ruma_route(pushers::list)
        .ruma_route(pushers::notifications)
        .route("/_matrix/client/v3/pushers/set", post(pushers::set))
        .route("/_matrix/client/r0/pushers/set", post(pushers::set))
        .ruma_route(room::create_room)
        .ruma_route(room::joined_rooms)
        .ruma_route(room::get_event)
        .ruma_route(message::send)
        .ruma_route(messages::get)
        .ruma_route(messages::context)
        .ruma_route(timestamp::timestamp_to_event)
        .ruma_route(space::hierarchy)
        .ruma_route(summary::room_summary)
        .ruma_route(redact::redact)
        .ruma_route(sync::sync)
        .ruma_route(receipts::typing)
        .ruma_route(search::search_events)
        .ruma_route(search::search_users)
        .ruma_route(directory::get_visibility)
        .ruma_route(directory::set_visibility)
        .ruma_route(directory::get_public)
        .ruma_route(directory::post_public)
        .ruma_route(relations::all)
        .ruma_route(relations::with_rel_type)
        .ruma_route(relations::with_rel_type_and_event_type)
        .ruma_route(relations::threads)
        .ruma_route(presence::set)
        .ruma_route(presence::get)
        .ruma_route(receipts::receipt)
        .ruma_route(receipts::read_markers)
        .ruma_route(alias::create)
        .ruma_route(alias::get)
        .ruma_route(alias::delete)
        .ruma_route(alias::room_aliases)
        .ruma_route(state::get_all)
        .ruma_route(state::get_one)
        .ruma_route(state::put)
        .ruma_route(membership::join_by_id)
        .ruma_route(membership::join_by_id_or_alias)
        .ruma_route(membership::leave)
        .ruma_route(membership::knock)
        .ruma_route(membership::invite)
        .ruma_route(membership::kick)
        .ruma_route(membership::ban)
        .ruma_route(membership::unban)
        .ruma_route(membership::forget)
        .ruma_route(membership::joined_members)
        .ruma_route(membership::members)
        .ruma_route(keys::upload)
        .ruma_route(keys::query)
        .ruma_route(keys::claim)
        .ruma_route(keys::changes)
        .ruma_route(keys::upload_signing_keys)
        .ruma_route(keys::upload_signatures)
        .ruma_route(to_device::send)
        .ruma_route(backup::create_version)
        .ruma_route(backup::latest_version)
        .ruma_route(backup::get_version)
        .ruma_route(backup::update_version)
        .ruma_route(backup::delete_version)
        .ruma_route(backup::put_all)
        .ruma_route(backup::put_room)
        .ruma_route(backup::put_session)
        .ruma_route(backup::get_all)
        .ruma_route(backup::get_room)
        .ruma_route(backup::get_session)
        .ruma_route(backup::delete_all)
        .ruma_route(backup::delete_room)
        .ruma_route(backup::delete_session)
        .ruma_route(dehydrated::put)
        .ruma_route(dehydrated::get)
        .ruma_route(dehydrated::delete)
        .ruma_route(dehydrated::events)
        .route(
            "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/{device_id}/events",
            get(dehydrated::events_get),
        )
        .merge(media_routes())
}

/// The media repository: streamed bodies, so plain axum handlers.
fn media_routes() -> Router<Arc<Services>> {
    let mut router = Router::new()
        .route("/_matrix/media/v1/create", post(media::create))
        .route("/_matrix/client/v1/media/config", get(media::config))
        .route(
            "/_matrix/client/v1/media/preview_url",
            get(media::preview_url),
        )
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}/{file_name}",
            get(media::download),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
            get(media::thumbnail),
        );
    for version in ["r0", "v3"] {
        router = router
            .route(
                &format!("/_matrix/media/{version}/upload"),
                post(media::upload),
            )
            .route(
                &format!("/_matrix/media/{version}/upload/{{server}}/{{media_id}}"),
                put(media::upload_pending),
            )
            .route(
                &format!("/_matrix/media/{version}/config"),
                get(media::config),
            )
            .route(
                &format!("/_matrix/media/{version}/download/{{server}}/{{media_id}}"),
                get(media::legacy_download),
            )
            .route(
                &format!("/_matrix/media/{version}/download/{{server}}/{{media_id}}/{{file_name}}"),
                get(media::legacy_download),
            )
            .route(
                &format!("/_matrix/media/{version}/thumbnail/{{server}}/{{media_id}}"),
                get(media::legacy_thumbnail),
            );
    }
    router
}
