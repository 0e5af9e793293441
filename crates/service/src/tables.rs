//! Every table the homeserver keeps, in one place: its name on disk, its
//! key and its value. `conduit db` lists them from [`ALL`].

use conduit_storage::{Json, Str, Table, TableDef, U64};
use serde_json::Value as JsonValue;

use crate::users::{AccountRecord, DeviceRecord, TokenRecord};

/// Server-wide values by name, e.g. `signing_key`.
pub const GLOBAL_JSON: Table<Str, Json<JsonValue>> = Table::new("global");
/// user id -> the account: password hash, flags.
pub const ACCOUNTS: Table<Str, Json<AccountRecord>> = Table::new("accounts");
/// (user id, field) -> profile value (`displayname`, `avatar_url`).
pub const PROFILES: Table<(Str, Str), Json<JsonValue>> = Table::new("profiles");
/// (user id, device id) -> the device and its current tokens.
pub const DEVICES: Table<(Str, Str), Json<DeviceRecord>> = Table::new("devices");
/// (user id, device id) -> (time, address) of the device's latest request,
/// written at most every five minutes.
pub const DEVICE_LAST_SEEN: Table<(Str, Str), Json<crate::users::devices::LastSeen>> =
    Table::new("device_last_seen");
/// access token -> whose it is. A point lookup per authenticated request.
pub const ACCESS_TOKENS: Table<Str, Json<TokenRecord>> = Table::new("access_tokens");
/// refresh token -> whose it is.
pub const REFRESH_TOKENS: Table<Str, Json<TokenRecord>> = Table::new("refresh_tokens");
/// (user id, room id or "" for global, event type) -> account data content.
pub const ACCOUNT_DATA: Table<(Str, Str, Str), Json<JsonValue>> = Table::new("account_data");
/// registration token -> its record (uses, expiry, who made it, revoked).
pub const REGISTRATION_TOKENS: Table<Str, Json<crate::registration_tokens::RegistrationToken>> =
    Table::new("registration_tokens");
/// (user id, filter id) -> filter definition.
pub const FILTERS: Table<(Str, Str), Json<JsonValue>> = Table::new("filters");

/// event id -> its short id.
pub const EVENTID_SHORT: Table<Str, U64> = Table::new("eventid_short");
/// short id -> event id.
pub const SHORT_EVENTID: Table<U64, Str> = Table::new("short_eventid");
/// (event type, state key) -> its short id.
pub const STATEKEY_SHORT: Table<(Str, Str), U64> = Table::new("statekey_short");
/// short id -> (event type, state key).
pub const SHORT_STATEKEY: Table<U64, Json<(String, String)>> = Table::new("short_statekey");
/// snapshot id -> a room state as a diff against a parent snapshot.
pub const STATE_SNAPSHOTS: Table<U64, Json<crate::rooms::state_snapshots::StoredSnapshot>> =
    Table::new("state_snapshots");

/// event short id -> the PDU as stored (with `event_id`).
pub const PDUS: Table<U64, Json<JsonValue>> = Table::new("pdus");
/// room id -> its short id and version.
pub const ROOMS: Table<Str, Json<crate::rooms::timeline::RoomRecord>> = Table::new("rooms");
/// room short id -> current state snapshot, forward extremities, depth.
pub const ROOM_HEADS: Table<U64, Json<crate::rooms::timeline::RoomHead>> = Table::new("room_heads");
/// (room short id, count) -> event short id: the timeline, in order.
pub const TIMELINE: Table<(U64, U64), U64> = Table::new("timeline");
/// event short id -> where it sits: room, count, state before it.
pub const EVENT_META: Table<U64, Json<crate::rooms::timeline::EventMeta>> =
    Table::new("event_meta");
/// (user id, room id) -> the user's membership there.
pub const USER_ROOMS: Table<(Str, Str), Json<String>> = Table::new("user_rooms");

/// room alias -> the room and who made the alias.
pub const ALIASES: Table<Str, Json<crate::rooms::aliases::AliasRecord>> = Table::new("aliases");
/// (room id, alias) -> the room's local aliases, for listing.
pub const ROOM_ALIASES: Table<(Str, Str), Json<bool>> = Table::new("room_aliases");
/// room id -> published in the room directory.
pub const PUBLISHED_ROOMS: Table<Str, Json<bool>> = Table::new("published_rooms");
/// (room short id, position) -> a receipt. Only each user's latest receipt
/// per type and thread is kept, so a room's rows are its current receipts
/// and the rows since a sync token are what changed.
pub const RECEIPTS: Table<(U64, U64), Json<crate::rooms::receipts::ReceiptRecord>> =
    Table::new("receipts");
/// (room short id, user id, "type thread") -> (position, receipted event's
/// count) of that user's latest receipt of that type and thread.
pub const RECEIPT_LATEST: Table<(U64, Str, Str), Json<(u64, u64)>> = Table::new("receipt_latest");
/// (user id, room short id, event count) -> an event that notifies the user
/// and that their receipts do not cover yet: the unread counts.
pub const NOTIFICATIONS: Table<(Str, U64, U64), Json<crate::rooms::push::Notification>> =
    Table::new("notifications");
/// (user id, event position) -> an event that notified the user, read or
/// not, for `GET /notifications` and the pushes (kept 30 days).
pub const NOTIFICATION_LOG: Table<(Str, U64), Json<crate::push::history::LoggedNotification>> =
    Table::new("notification_log");
/// (user id, app id, pushkey) -> a pusher: where the user's notifications
/// are pushed.
pub const PUSHERS: Table<(Str, Str, Str), Json<crate::push::PusherRecord>> = Table::new("pushers");
/// (pusher id, event position) -> a notification waiting to be pushed;
/// written in the event's own batch, deleted once the gateway took it.
pub const PUSH_QUEUE: Table<(U64, U64), Json<bool>> = Table::new("push_queue");
/// Appservice id -> its registration (YAML) as `appservice register` was
/// given it; the config's registration files are not copied here.
pub const APPSERVICES: Table<Str, Json<String>> = Table::new("appservices");
/// (appservice id, stream position) -> an event (short id) waiting to be
/// sent to the appservice; written in the event's own batch, deleted once
/// the appservice took the transaction holding it.
pub const APPSERVICE_QUEUE: Table<(Str, U64), U64> = Table::new("appservice_queue");
/// Appservice id -> the position of the last event of the transaction
/// being sent: its id, so a retry (after a restart too) is the same
/// transaction with the same events.
pub const APPSERVICE_TXNS: Table<Str, U64> = Table::new("appservice_txns");
/// (appservice id, stream position, index) -> a to-device message for a
/// device of one of its users (MSC4203), in the transaction format (with
/// `to_user_id` and `to_device_id`); written in the message's own batch,
/// sent in the transaction of the events around its position.
pub const APPSERVICE_TO_DEVICE: Table<(Str, U64, U64), Json<JsonValue>> =
    Table::new("appservice_to_device");
/// Appservice id -> the stream position up to which it was told whose
/// device lists changed (MSC3202): the next transaction reads
/// `key_changes` from there.
pub const APPSERVICE_DEVICE_LISTS: Table<Str, U64> = Table::new("appservice_device_lists");
/// (user id, position) -> (room id or "", type) of account data changed
/// then; incremental sync reads the rows after its token.
pub const ACCOUNT_DATA_CHANGES: Table<(Str, U64), Json<(String, String)>> =
    Table::new("account_data_changes");
/// (user id, room id or "", type) -> the position of its last change, so
/// the older change row can go.
pub const ACCOUNT_DATA_POSITIONS: Table<(Str, Str, Str), U64> =
    Table::new("account_data_positions");
/// (parent event short id, position) -> an event relating to the parent.
pub const RELATIONS: Table<(U64, U64), U64> = Table::new("relations");
/// (parent short id, sender, reaction key) -> the sender's reaction with
/// that key (refusing a second one is a point lookup).
pub const ANNOTATIONS: Table<(U64, Str, Str), U64> = Table::new("annotations");
/// thread root short id -> the thread's summary.
pub const THREADS: Table<U64, Json<crate::rooms::relations::ThreadSummary>> = Table::new("threads");
/// (room short id, position of a thread's latest event) -> the thread root:
/// a room's threads by latest activity.
pub const THREAD_ROOTS: Table<(U64, U64), U64> = Table::new("thread_roots");
/// (room short id, lower-cased word, position) -> an event with that word
/// in its searchable text (`/search`).
pub const SEARCH_INDEX: Table<(U64, Str, U64), U64> = Table::new("search_index");
/// (user id, device id, transaction id) -> the event id it produced.
pub const TRANSACTIONS: Table<(Str, Str, Str), Str> = Table::new("transactions");
/// (SSO provider id, subject at that provider) -> the local user it signs in.
pub const SSO_IDENTITIES: Table<(Str, Str), Str> = Table::new("sso_identities");
/// (user id, SSO provider id, subject) -> (): a user's identities, for the
/// SSO re-authentication stage.
pub const USER_SSO_IDENTITIES: Table<(Str, Str, Str), Json<bool>> =
    Table::new("user_sso_identities");
/// SSO provider id -> the OAuth app this server registered on a Mastodon instance.
pub const SSO_APPS: Table<Str, Json<crate::sso::mastodon::MastodonApp>> = Table::new("sso_apps");

/// (server name, key id) -> one of that server's signing keys, as fetched
/// and verified, with how long it may be trusted.
pub const SERVER_KEYS: Table<(Str, Str), Json<crate::federation::keys::VerifyKeyRecord>> =
    Table::new("server_keys");
/// server name -> its latest signed key response, as it sent it: what this
/// server hands out as a notary.
pub const SERVER_KEY_RESPONSES: Table<Str, Json<JsonValue>> = Table::new("server_key_responses");
/// (destination server, stream position) -> an event (short id) waiting to
/// be sent there; written in the event's own batch, deleted once delivered.
pub const FEDERATION_QUEUE: Table<(Str, U64), U64> = Table::new("federation_queue");
/// (origin server, transaction id) -> the answer given to that `/send` and
/// when, so a retried transaction is answered without processing it again
/// (kept a day).
pub const FEDERATION_TXNS: Table<(Str, Str), Json<crate::federation::serve::TxnRecord>> =
    Table::new("federation_txns");
/// event short id -> why it was rejected: stored (others may cite it), never
/// served as state and never shown.
pub const REJECTED_EVENTS: Table<U64, Json<String>> = Table::new("rejected_events");
/// event short id -> why it soft-failed: authorised by its own past but not
/// by the current state; stored, not shown to clients, not built upon.
pub const SOFT_FAILED_EVENTS: Table<U64, Json<String>> = Table::new("soft_failed_events");
/// (local user id, room id) -> an invite from another server to a room this
/// server is not in: the event and the room's stripped state.
pub const REMOTE_INVITES: Table<(Str, Str), Json<crate::federation::invite::RemoteInvite>> =
    Table::new("remote_invites");
/// OpenID token -> whose it is and until when (an hour).
pub const OPENID_TOKENS: Table<Str, Json<crate::openid::OpenIdToken>> = Table::new("openid_tokens");

/// (user id, device id) -> the device's signed identity keys as uploaded,
/// with the cross-signing signatures added since. Remote users' devices
/// are kept here too while their server keeps us told.
pub const DEVICE_KEYS: Table<(Str, Str), Json<JsonValue>> = Table::new("device_keys");
/// (user id, device id, "algorithm:key id") -> an unclaimed one-time key.
pub const ONE_TIME_KEYS: Table<(Str, Str, Str), Json<JsonValue>> = Table::new("one_time_keys");
/// (user id, device id, algorithm) -> the device's fallback key and
/// whether it was handed out.
pub const FALLBACK_KEYS: Table<(Str, Str, Str), Json<crate::e2ee::keys::FallbackKey>> =
    Table::new("fallback_keys");
/// (user id, "master" | "self_signing" | "user_signing") -> the user's
/// cross-signing key, with its owner's signatures.
pub const CROSS_SIGNING_KEYS: Table<(Str, Str), Json<JsonValue>> = Table::new("cross_signing_keys");
/// (signed user, signed key id, signing user) -> the signatures one user
/// made on another's master key, shown only to the signer.
pub const KEY_SIGNATURES: Table<(Str, Str, Str), Json<JsonValue>> = Table::new("key_signatures");
/// (stream position, user id) -> the user's devices or cross-signing keys
/// changed then; `/sync` and `/keys/changes` read the rows after a token.
pub const KEY_CHANGES: Table<(U64, Str), Json<bool>> = Table::new("key_changes");
/// user id -> the position of their latest key change: the older row can
/// go, and it is the `stream_id` of a local user's device list.
pub const KEY_CHANGE_POSITIONS: Table<Str, U64> = Table::new("key_change_positions");
/// remote user id -> the `stream_id` of their device list we last applied:
/// their devices in `device_keys` are current while this row exists.
pub const REMOTE_DEVICE_LISTS: Table<Str, U64> = Table::new("remote_device_lists");
/// (room short id, position, user id) -> the new membership of a user
/// moved into or out of `join` then: whose devices a client must learn or
/// may forget.
pub const MEMBER_CHANGES: Table<(U64, U64, Str), Json<String>> = Table::new("member_changes");
/// (user id, device id, position) -> a to-device message waiting for the
/// device, deleted once a later sync acknowledges it.
pub const TO_DEVICE: Table<(Str, Str, U64), Json<crate::e2ee::to_device::ToDeviceMessage>> =
    Table::new("to_device");
/// (sender, sender's device or "" for another server, transaction or
/// message id) -> when: a retried send is not delivered twice (kept a day).
pub const TO_DEVICE_TXNS: Table<(Str, Str, Str), U64> = Table::new("to_device_txns");
/// (user id, version) -> a key backup version: algorithm, auth data,
/// etag and count.
pub const BACKUP_VERSIONS: Table<(Str, U64), Json<crate::e2ee::backup::BackupVersion>> =
    Table::new("backup_versions");
/// (user id, version, (room id, session id)) -> a backed-up room key.
pub const BACKUP_KEYS: Table<(Str, U64, (Str, Str)), Json<JsonValue>> = Table::new("backup_keys");
/// user id -> their dehydrated device (MSC3814): its id and opaque data.
pub const DEHYDRATED_DEVICES: Table<Str, Json<crate::e2ee::dehydrated::DehydratedDevice>> =
    Table::new("dehydrated_devices");
/// (destination server, position, index) -> an EDU that must survive a
/// restart (to-device messages, device list updates), deleted once sent.
pub const FEDERATION_EDU_QUEUE: Table<(Str, U64, U64), Json<JsonValue>> =
    Table::new("federation_edu_queue");
/// (server, media id) -> a media URI's file (by hash), type, name, size,
/// uploader and time.
pub const MEDIA: Table<(Str, Str), Json<crate::media::MediaRecord>> = Table::new("media");
/// (file hash, server, media id or "id/size-method" of a thumbnail) -> ():
/// what uses a file; a file nothing uses is removed at start.
pub const MEDIA_FILE_REFS: Table<(Str, Str, Str), Json<bool>> = Table::new("media_file_refs");
/// (uploader, upload time, media id) -> (): a user's uploads in order.
pub const USER_MEDIA: Table<(Str, U64, Str), Json<bool>> = Table::new("user_media");
/// (uploader, media id) -> deadline of an asynchronous upload still waiting.
pub const PENDING_UPLOADS: Table<(Str, Str), U64> = Table::new("pending_uploads");
/// (server, media id, "WxH-method") -> a thumbnail made of that media.
pub const THUMBNAILS: Table<(Str, Str, Str), Json<crate::media::thumbnail::ThumbnailRecord>> =
    Table::new("thumbnails");

/// OAuth 2.0 client id -> the client's registered metadata.
pub const OAUTH_CLIENTS: Table<Str, Json<crate::oauth::client::ClientRecord>> =
    Table::new("oauth_clients");

pub const ALL: &[TableDef] = &[
    GLOBAL_JSON.def(),
    ACCOUNTS.def(),
    PROFILES.def(),
    DEVICES.def(),
    DEVICE_LAST_SEEN.def(),
    ACCESS_TOKENS.def(),
    REFRESH_TOKENS.def(),
    ACCOUNT_DATA.def(),
    FILTERS.def(),
    REGISTRATION_TOKENS.def(),
    EVENTID_SHORT.def(),
    SHORT_EVENTID.def(),
    STATEKEY_SHORT.def(),
    SHORT_STATEKEY.def(),
    STATE_SNAPSHOTS.def(),
    PDUS.def(),
    ROOMS.def(),
    ROOM_HEADS.def(),
    TIMELINE.def(),
    EVENT_META.def(),
    USER_ROOMS.def(),
    ALIASES.def(),
    ROOM_ALIASES.def(),
    PUBLISHED_ROOMS.def(),
    TRANSACTIONS.def(),
    RECEIPTS.def(),
    RECEIPT_LATEST.def(),
    NOTIFICATIONS.def(),
    NOTIFICATION_LOG.def(),
    PUSHERS.def(),
    PUSH_QUEUE.def(),
    APPSERVICES.def(),
    APPSERVICE_QUEUE.def(),
    APPSERVICE_TXNS.def(),
    APPSERVICE_TO_DEVICE.def(),
    APPSERVICE_DEVICE_LISTS.def(),
    ACCOUNT_DATA_CHANGES.def(),
    ACCOUNT_DATA_POSITIONS.def(),
    RELATIONS.def(),
    ANNOTATIONS.def(),
    THREADS.def(),
    THREAD_ROOTS.def(),
    SEARCH_INDEX.def(),
    SSO_IDENTITIES.def(),
    USER_SSO_IDENTITIES.def(),
    SSO_APPS.def(),
    OAUTH_CLIENTS.def(),
    SERVER_KEYS.def(),
    SERVER_KEY_RESPONSES.def(),
    FEDERATION_QUEUE.def(),
    FEDERATION_TXNS.def(),
    REJECTED_EVENTS.def(),
    SOFT_FAILED_EVENTS.def(),
    REMOTE_INVITES.def(),
    OPENID_TOKENS.def(),
    DEVICE_KEYS.def(),
    ONE_TIME_KEYS.def(),
    FALLBACK_KEYS.def(),
    CROSS_SIGNING_KEYS.def(),
    KEY_SIGNATURES.def(),
    KEY_CHANGES.def(),
    KEY_CHANGE_POSITIONS.def(),
    REMOTE_DEVICE_LISTS.def(),
    MEMBER_CHANGES.def(),
    TO_DEVICE.def(),
    TO_DEVICE_TXNS.def(),
    BACKUP_VERSIONS.def(),
    BACKUP_KEYS.def(),
    DEHYDRATED_DEVICES.def(),
    FEDERATION_EDU_QUEUE.def(),
    MEDIA.def(),
    MEDIA_FILE_REFS.def(),
    PENDING_UPLOADS.def(),
    USER_MEDIA.def(),
    THUMBNAILS.def(),
];
