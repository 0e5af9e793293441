//! A small Matrix client on matrix-rust-sdk, the SDK Element X is built on,
//! for the black-box tests (`sdk_client.py` drives it). It logs in with a
//! password, or with `--oauth login|create` as its user through the OAuth
//! 2.0 API (it prints `{"event":"authorize","url":...}` and reads the
//! address the browser was sent back to as its first line), then runs the SDK's `SyncService` (simplified sliding sync: the
//! room list and the encryption sync) and keeps the room list as the SDK
//! sorts it. Then it reads one command per line on stdin and answers each
//! with one JSON line on stdout (`{"ok": true, "result": ...}` or
//! `{"ok": false, "error": ...}`); the SDK's logs go to stderr.
//!
//! Commands: `rooms`, `wait_rooms N SECS`, `wait_first ROOM SECS`,
//! `wait_message ROOM SECS TEXT`, `paginate ROOM N`, `send ROOM TEXT`,
//! `wait_invite SECS`, `join ROOM`, `whoami`, `refresh` (OAuth tokens).

#![recursion_limit = "256"]
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, pin_mut};
use matrix_sdk::{
    Client, RoomState,
    ruma::{OwnedRoomId, RoomId, events::room::message::RoomMessageEventContent},
    sliding_sync::VersionBuilder,
};
use matrix_sdk_ui::{
    eyeball_im::Vector,
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::{State as SyncState, SyncService},
    timeline::{RoomExt as _, Timeline, TimelineItem},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    time::{Instant, sleep, timeout},
};

struct Ctx {
    client: Client,
    sync: Arc<SyncService>,
    rooms: Arc<Mutex<Vector<RoomListItem>>>, // sorted by the SDK (recency)
    timelines: tokio::sync::Mutex<HashMap<OwnedRoomId, Arc<Timeline>>>,
}

fn emit(v: Value) {
    println!("{v}");
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [hs, user, password] = &a[..] else {
        bail!("usage: <homeserver_url> <user> <password>")
    };

    let client = Client::builder()
        .homeserver_url(hs)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative) // asserts /versions advertises MSC4186
        .respect_login_well_known(false)
        .handle_refresh_tokens()
        .build()
        .await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if user == "--oauth" {
        oauth_login(&client, password == "create", &mut lines).await?;
    } else {
        client
            .matrix_auth()
            .login_username(user, password)
            .initial_device_display_name("sdk-test-client")
            .send()
            .await?;
    }
    let me = client
        .session_meta()
        .ok_or_else(|| anyhow!("no session after login"))?;
    emit(
        json!({"event":"logged_in","user_id":me.user_id.to_string(),"device_id":me.device_id.to_string()}),
    );

    let sync = Arc::new(
        SyncService::builder(client.clone())
            .with_offline_mode()
            .build()
            .await?,
    );
    let rooms: Arc<Mutex<Vector<RoomListItem>>> = Default::default();

    // Room list: sorted stream of diffs. The filter MUST be set or nothing is ever yielded.
    let all_rooms = sync.room_list_service().all_rooms().await?;
    let r = rooms.clone();
    tokio::spawn(async move {
        let (stream, ctrl) = all_rooms.entries_with_dynamic_adapters(1000);
        ctrl.set_filter(Box::new(new_filter_non_left()));
        pin_mut!(stream);
        while let Some(diffs) = stream.next().await {
            let mut v = r.lock().unwrap();
            for d in diffs {
                d.apply(&mut v);
            }
        }
        drop(ctrl); // keep the controller alive as long as the stream
    });

    // Supervisor: report state changes; restart after errors.
    let s = sync.clone();
    tokio::spawn(async move {
        let mut states = s.state();
        while let Some(st) = states.next().await {
            emit(json!({"event":"sync_state","state":format!("{st:?}")}));
            if matches!(st, SyncState::Error(_)) {
                sleep(Duration::from_millis(500)).await;
                s.start().await;
            }
        }
    });
    sync.start().await;

    let ctx = Ctx {
        client,
        sync: sync.clone(),
        rooms,
        timelines: Default::default(),
    };
    while let Some(line) = lines.next_line().await? {
        match ctx.run(line.trim()).await {
            Ok(v) => emit(json!({"ok":true,"cmd":line,"result":v})),
            Err(e) => emit(json!({"ok":false,"cmd":line,"error":format!("{e:#}")})),
        }
    }
    sync.stop().await;
    Ok(())
}

/// The OAuth 2.0 login of a native app: registers itself with a loopback
/// redirect, prints the authorization URL, and finishes with the address
/// the test's browser was sent back to.
async fn oauth_login(
    client: &Client,
    create: bool,
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
) -> Result<()> {
    use matrix_sdk::{
        authentication::oauth::registration::{
            ApplicationType, ClientMetadata, Localized, OAuthGrantType,
        },
        ruma::{api::client::discovery::get_authorization_server_metadata::v1::Prompt, serde::Raw},
    };
    let redirect = url::Url::parse("http://127.0.0.1/")?;
    let metadata = ClientMetadata {
        client_name: Some(Localized::new("sdk-test-client".to_owned(), [])),
        ..ClientMetadata::new(
            ApplicationType::Native,
            vec![OAuthGrantType::AuthorizationCode {
                redirect_uris: vec![redirect.clone()],
            }],
            Localized::new(url::Url::parse("https://sdk-client.example/")?, []),
        )
    };
    let mut builder = client
        .oauth()
        .login(redirect, None, Some(Raw::new(&metadata)?.into()), None);
    if create {
        builder = builder.prompt(vec![Prompt::Create]);
    }
    let data = builder.build().await?;
    emit(json!({"event":"authorize","url":data.url.to_string()}));
    let back = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow!("no redirect address on stdin"))?;
    client
        .oauth()
        .finish_login(url::Url::parse(back.trim())?.into())
        .await?;
    Ok(())
}

fn item_json(it: &TimelineItem) -> Option<Value> {
    let ev = it.as_event()?;
    let c = ev.content();
    let body = if let Some(m) = c.as_message() {
        m.body().to_owned()
    } else if c.is_unable_to_decrypt() {
        "<unable-to-decrypt>".to_owned()
    } else {
        return None;
    };
    Some(
        json!({"event_id": ev.event_id().map(|e| e.to_string()), "sender": ev.sender().to_string(),
                "body": body, "ts": ev.timestamp(), "local_echo": ev.is_local_echo(),
                "encrypted": ev.encryption_info().is_some()}),
    )
}

/// Subscribe to a timeline and wait until `pred` holds on its items.
async fn wait_items(
    t: &Timeline,
    secs: u64,
    pred: impl Fn(&Vector<Arc<TimelineItem>>) -> bool,
) -> Result<Vector<Arc<TimelineItem>>> {
    let (mut items, stream) = t.subscribe().await;
    pin_mut!(stream);
    timeout(Duration::from_secs(secs), async {
        loop {
            if pred(&items) {
                return anyhow::Ok(items.clone());
            }
            let diffs = stream
                .next()
                .await
                .ok_or_else(|| anyhow!("timeline stream ended"))?;
            for d in diffs {
                d.apply(&mut items);
            }
        }
    })
    .await
    .map_err(|_| anyhow!("timeout"))?
}

/// Whether the timeline holds a message `text` that came back from the
/// server's sync (not only the SDK's local echo).
fn has_body(items: &Vector<Arc<TimelineItem>>, text: &str) -> bool {
    items.iter().any(|i| {
        i.as_event().is_some_and(|e| {
            e.content().as_message().is_some_and(|m| m.body() == text) && !e.is_local_echo()
        })
    })
}

impl Ctx {
    async fn timeline(&self, id: &RoomId) -> Result<Arc<Timeline>> {
        let mut map = self.timelines.lock().await;
        if let Some(t) = map.get(id) {
            return Ok(t.clone());
        }
        let room = self
            .client
            .get_room(id)
            .ok_or_else(|| anyhow!("unknown room {id}"))?;
        // Full required_state + timeline_limit 20 for this room (the list only asks for 1 event).
        self.sync
            .room_list_service()
            .subscribe_to_rooms(&[id])
            .await;
        let t = Arc::new(room.timeline().await?);
        map.insert(id.to_owned(), t.clone());
        Ok(t)
    }

    async fn poll_until<T>(&self, secs: u64, mut f: impl FnMut() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timeout");
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    fn rooms_json(&self) -> Value {
        let v = self.rooms.lock().unwrap();
        Value::Array(
            v.iter()
                .map(|r| {
                    json!({
                        "room_id": r.room_id().to_string(),
                        "state": format!("{:?}", r.state()),                  // Joined / Invited / Left / ...
                        "name": r.cached_display_name().map(|n| n.to_string()),
                        "recency_stamp": r.recency_stamp().map(u64::from),
                        "latest_event_ts": r.latest_event_timestamp(),
                    })
                })
                .collect(),
        )
    }

    async fn run(&self, line: &str) -> Result<Value> {
        let mut p = line.splitn(4, ' ');
        let cmd = p.next().unwrap_or("");
        let mut arg = || p.next().context("missing argument");
        match cmd {
            // wait_rooms <n> <secs>
            "wait_rooms" => {
                let n: usize = arg()?.parse()?;
                let s: u64 = arg()?.parse()?;
                self.poll_until(s, || (self.rooms.lock().unwrap().len() >= n).then_some(()))
                    .await?;
                Ok(self.rooms_json())
            }
            "rooms" => Ok(self.rooms_json()),
            // wait_first <room> <secs>: until the SDK sorts the room first
            "wait_first" => {
                let id = RoomId::parse(arg()?)?;
                let s: u64 = arg()?.parse()?;
                self.poll_until(s, || {
                    self.rooms
                        .lock()
                        .unwrap()
                        .front()
                        .filter(|r| r.room_id() == id)
                        .map(|_| ())
                })
                .await?;
                Ok(self.rooms_json())
            }
            // wait_message <room> <secs> <text...>
            "wait_message" => {
                let id = RoomId::parse(arg()?)?;
                let s: u64 = arg()?.parse()?;
                let text = arg()?;
                let t = self.timeline(&id).await?;
                let items = wait_items(&t, s, |it| has_body(it, text)).await?;
                Ok(items.iter().filter_map(|i| item_json(i)).collect())
            }
            // paginate <room> <n>
            "paginate" => {
                let id = RoomId::parse(arg()?)?;
                let n: u16 = arg()?.parse()?;
                let t = self.timeline(&id).await?;
                let hit_start = t.paginate_backwards(n).await?;
                let msgs: Vec<Value> = t
                    .items()
                    .await
                    .iter()
                    .filter_map(|i| item_json(i))
                    .collect();
                Ok(json!({"hit_start": hit_start, "messages": msgs}))
            }
            // send <room> <text...>   (waits for the remote echo, i.e. an event_id)
            "send" => {
                let id = RoomId::parse(arg()?)?;
                let text = line
                    .splitn(3, ' ')
                    .nth(2)
                    .context("missing text")?
                    .to_owned();
                let t = self.timeline(&id).await?;
                t.send(RoomMessageEventContent::text_plain(&text).into())
                    .await?;
                let items = wait_items(&t, 30, |it| has_body(it, &text)).await?;
                Ok(items
                    .iter()
                    .filter_map(|i| item_json(i))
                    .last()
                    .unwrap_or(Value::Null))
            }
            // wait_invite <secs>  -> room id of the first invited room in the room list
            "wait_invite" => {
                let s: u64 = arg()?.parse()?;
                let id = self
                    .poll_until(s, || {
                        self.rooms
                            .lock()
                            .unwrap()
                            .iter()
                            .find(|r| r.state() == RoomState::Invited)
                            .map(|r| r.room_id().to_owned())
                    })
                    .await?;
                Ok(json!(id.to_string()))
            }
            // join <room>
            "join" => {
                let id = RoomId::parse(arg()?)?;
                let room = self
                    .client
                    .get_room(&id)
                    .ok_or_else(|| anyhow!("unknown room"))?;
                room.join().await?; // only valid for Invited/Left rooms
                self.poll_until(30, || {
                    (self.client.get_room(&id)?.state() == RoomState::Joined).then_some(())
                })
                .await?;
                Ok(json!("joined"))
            }
            // whoami: what the server says the current token is
            "whoami" => {
                let me = self.client.whoami().await?;
                Ok(json!({"user_id": me.user_id.to_string(),
                          "device_id": me.device_id.map(|d| d.to_string())}))
            }
            // refresh: trades the OAuth refresh token now
            "refresh" => {
                self.client.oauth().refresh_access_token().await?;
                Ok(json!("refreshed"))
            }
            _ => bail!("unknown command {cmd:?}"),
        }
    }
}
