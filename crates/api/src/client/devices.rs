//! The user's devices.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services, users::DeviceRecord};
use ruma::{
    DeviceId, MilliSecondsSinceUnixEpoch, UInt,
    api::client::device::{
        Device, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};

use crate::{Ruma, RumaResponse, error::ApiError};

fn to_device(device_id: &DeviceId, record: DeviceRecord) -> Device {
    let mut device = Device::new(device_id.to_owned());
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record
        .last_seen_ts
        .and_then(|ts| UInt::new(ts).map(MilliSecondsSinceUnixEpoch));
    device
}

pub async fn list(
    State(services): State<Arc<Services>>,
    req: Ruma<get_devices::v3::Request>,
) -> Result<RumaResponse<get_devices::v3::Response>, ApiError> {
    let devices = services
        .devices
        .list(&req.sender()?.user_id)?
        .into_iter()
        .map(|(id, record)| to_device(&id, record))
        .collect();
    Ok(RumaResponse(get_devices::v3::Response::new(devices)))
}

pub async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_device::v3::Request>,
) -> Result<RumaResponse<get_device::v3::Response>, ApiError> {
    let device_id = &req.body.device_id;
    let record = services
        .devices
        .get(&req.sender()?.user_id, device_id)?
        .ok_or_else(|| Error::not_found("Unknown device."))?;
    Ok(RumaResponse(get_device::v3::Response::new(to_device(
        device_id, record,
    ))))
}

pub async fn update(
    State(services): State<Arc<Services>>,
    req: Ruma<update_device::v3::Request>,
) -> Result<RumaResponse<update_device::v3::Response>, ApiError> {
    let sender = req.sender()?;
    services
        .rename_device(
            &sender.user_id,
            &req.body.device_id,
            req.body.display_name.clone(),
        )
        .await?;
    Ok(RumaResponse(update_device::v3::Response::new()))
}

pub async fn delete(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_device::v3::Request>,
) -> Result<RumaResponse<delete_device::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let passed = services
        .reauthenticate(
            Some(sender),
            req.body.auth.as_ref(),
            req.json.as_ref(),
            "remove a device from your account",
        )
        .await?;
    services
        .delete_known_device(&sender.user_id, &req.body.device_id)
        .await?;
    services.uiaa.finish(passed);
    Ok(RumaResponse(delete_device::v3::Response::new()))
}

pub async fn delete_many(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<RumaResponse<delete_devices::v3::Response>, ApiError> {
    let sender = req.sender()?;
    let passed = services
        .reauthenticate(
            Some(sender),
            req.body.auth.as_ref(),
            req.json.as_ref(),
            "remove devices from your account",
        )
        .await?;
    services
        .delete_devices(&sender.user_id, &req.body.devices)
        .await?;
    services.uiaa.finish(passed);
    Ok(RumaResponse(delete_devices::v3::Response::new()))
}
