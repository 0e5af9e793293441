//! `/versions` and `/capabilities`: what this server speaks.

use std::{collections::BTreeMap, sync::Arc};

use axum::extract::State;
use conduit_service::{
    Error, Services,
    rooms::create::{CREATABLE_VERSIONS, DEFAULT_VERSION},
};
use ruma::RoomVersionId;
use ruma::api::client::discovery::{
    get_capabilities::{
        self,
        v3::{
            Capabilities, ChangePasswordCapability, ProfileFieldsCapability, RoomVersionStability,
            RoomVersionsCapability, ThirdPartyIdChangesCapability,
        },
    },
    get_supported_versions,
};

// Deprecated since v1.16, still read by older clients.
#[allow(deprecated)]
use ruma::api::client::discovery::get_capabilities::v3::{
    SetAvatarUrlCapability, SetDisplayNameCapability,
};

use crate::{Ruma, RumaResponse, error::ApiError};

/// Spec versions whose behaviour the implemented endpoints follow. Endpoints
/// not implemented yet answer `M_UNRECOGNIZED` (see docs/features.md).
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

pub async fn versions(
    _: State<Arc<Services>>,
    _: Ruma<get_supported_versions::Request, true>,
) -> Result<RumaResponse<get_supported_versions::Response>, ApiError> {
    let mut response =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    // Only what is implemented: dehydrated devices (MSC3814) and simplified
    // sliding sync (MSC4186, under its unstable name).
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc3814".to_owned(), true),
        ("org.matrix.simplified_msc3575".to_owned(), true),
    ]);
    Ok(RumaResponse(response))
}

#[allow(deprecated)] // clients before v1.16 still read m.set_displayname / m.set_avatar_url
pub async fn capabilities(
    _: State<Arc<Services>>,
    _: Ruma<get_capabilities::v3::Request, true>,
) -> Result<RumaResponse<get_capabilities::v3::Response>, ApiError> {
    let mut capabilities = Capabilities::new();
    capabilities.change_password = ChangePasswordCapability::new(true);
    capabilities.set_displayname = SetDisplayNameCapability::new(true);
    capabilities.set_avatar_url = SetAvatarUrlCapability::new(true);
    capabilities.profile_fields = Some(ProfileFieldsCapability::new(true));
    // No third-party identifiers (email, phone) are kept by this server.
    capabilities.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    // The versions `createRoom` makes (ruma's default would say "1").
    let version = |v: &str| RoomVersionId::try_from(v).map_err(Error::internal);
    capabilities.room_versions = RoomVersionsCapability::new(
        version(DEFAULT_VERSION)?,
        CREATABLE_VERSIONS
            .iter()
            .map(|v| Ok((version(v)?, RoomVersionStability::Stable)))
            .collect::<Result<_, Error>>()?,
    );
    Ok(RumaResponse(get_capabilities::v3::Response::new(
        capabilities,
    )))
}
