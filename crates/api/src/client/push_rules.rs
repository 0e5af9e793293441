//! Push rules: the spec's default rule set plus the user's own rules,
//! stored as the `m.push_rules` account data.

use std::sync::Arc;

use axum::extract::State;
use conduit_service::{Error, Services};
use ruma::{
    UserId,
    api::client::push::{
        delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{AnyPushRuleRef, InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};

use crate::{Ruma, RumaResponse, error::ApiError};

fn rule_not_found() -> Error {
    Error::not_found("No push rule with this id.")
}

/// Reads the user's rules, applies `change`, and stores them again, under
/// the user's lock so concurrent edits do not lose each other.
async fn update_rules(
    services: &Services,
    user_id: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<(), Error>,
) -> Result<(), ApiError> {
    Ok(services.update_push_rules(user_id, change).await?)
}

fn find_rule<'a>(
    rules: &'a Ruleset,
    kind: &RuleKind,
    rule_id: &str,
) -> Result<AnyPushRuleRef<'a>, ApiError> {
    rules
        .get(kind.clone(), rule_id)
        .ok_or_else(|| ApiError(rule_not_found()))
}

pub async fn get_all(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<RumaResponse<get_pushrules_all::v3::Response>, ApiError> {
    let rules = services.account_data.push_rules(&req.sender()?.user_id)?;
    Ok(RumaResponse(get_pushrules_all::v3::Response::new(rules)))
}

pub async fn get_global(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<RumaResponse<get_pushrules_global_scope::v3::Response>, ApiError> {
    let rules = services.account_data.push_rules(&req.sender()?.user_id)?;
    Ok(RumaResponse(get_pushrules_global_scope::v3::Response::new(
        rules,
    )))
}

pub async fn get_rule(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<RumaResponse<get_pushrule::v3::Response>, ApiError> {
    let rules = services.account_data.push_rules(&req.sender()?.user_id)?;
    let rule = find_rule(&rules, &req.body.kind, &req.body.rule_id)?;
    Ok(RumaResponse(get_pushrule::v3::Response::new(
        rule.to_owned().into(),
    )))
}

pub async fn set_rule(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<RumaResponse<set_pushrule::v3::Response>, ApiError> {
    let user_id = req.sender()?.user_id.clone();
    let body = req.body;
    update_rules(&services, &user_id, |rules| {
        rules
            .insert(body.rule, body.after.as_deref(), body.before.as_deref())
            .map_err(|e| match e {
                // The spec's 400 "problem configuring this push rule"; 404
                // is for the rule being changed itself.
                InsertPushRuleError::UnknownRuleId => Error::new(
                    conduit_service::ErrorCode::Unknown,
                    "The before or after rule does not exist.",
                )
                .with_status(400),
                e => Error::invalid_param(e.to_string()),
            })
    })
    .await?;
    Ok(RumaResponse(set_pushrule::v3::Response::new()))
}

pub async fn delete_rule(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<RumaResponse<delete_pushrule::v3::Response>, ApiError> {
    update_rules(&services, &req.sender()?.user_id, |rules| {
        rules
            .remove(req.body.kind.clone(), &req.body.rule_id)
            .map_err(|e| match e {
                RemovePushRuleError::NotFound => rule_not_found(),
                e => Error::invalid_param(e.to_string()),
            })
    })
    .await?;
    Ok(RumaResponse(delete_pushrule::v3::Response::new()))
}

pub async fn get_enabled(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<get_pushrule_enabled::v3::Response>, ApiError> {
    let rules = services.account_data.push_rules(&req.sender()?.user_id)?;
    let rule = find_rule(&rules, &req.body.kind, &req.body.rule_id)?;
    Ok(RumaResponse(get_pushrule_enabled::v3::Response::new(
        rule.enabled(),
    )))
}

pub async fn set_enabled(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<RumaResponse<set_pushrule_enabled::v3::Response>, ApiError> {
    update_rules(&services, &req.sender()?.user_id, |rules| {
        rules
            .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
            .map_err(|_| rule_not_found())
    })
    .await?;
    Ok(RumaResponse(set_pushrule_enabled::v3::Response::new()))
}

pub async fn get_actions(
    State(services): State<Arc<Services>>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<get_pushrule_actions::v3::Response>, ApiError> {
    let rules = services.account_data.push_rules(&req.sender()?.user_id)?;
    let rule = find_rule(&rules, &req.body.kind, &req.body.rule_id)?;
    let actions = rule.actions().to_vec();
    Ok(RumaResponse(get_pushrule_actions::v3::Response::new(
        actions,
    )))
}

pub async fn set_actions(
    State(services): State<Arc<Services>>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<RumaResponse<set_pushrule_actions::v3::Response>, ApiError> {
    update_rules(&services, &req.sender()?.user_id, |rules| {
        rules
            .set_actions(
                req.body.kind.clone(),
                &req.body.rule_id,
                req.body.actions.clone(),
            )
            .map_err(|_| rule_not_found())
    })
    .await?;
    Ok(RumaResponse(set_pushrule_actions::v3::Response::new()))
}
