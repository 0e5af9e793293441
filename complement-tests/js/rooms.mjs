// Two people in a room, driven by matrix-js-sdk's request methods (no
// startClient: that needs a crypto store). Sync is raw /sync through the
// SDK's HTTP layer, so each check sees the exact JSON a client gets.
// Usage: node rooms.mjs <homeserver url> <part>. Exits non-zero on the first failure.
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import zlib from "node:zlib";

const [baseUrl, part] = process.argv.slice(2);
const password = "correct horse battery";
const { Method, Direction } = sdk;
logger.setLevel("warn"); // the SDK logs every request at debug
const rand = () => Math.random().toString(16).slice(2, 12);

async function user(prefix) {
  const anon = sdk.createClient({ baseUrl });
  const reg = await anon.registerRequest({ username: `${prefix}${rand()}`, password, auth: { type: "m.login.dummy" } });
  return sdk.createClient({ baseUrl, accessToken: reg.access_token, userId: reg.user_id, deviceId: reg.device_id });
}

function sync(client, params = {}) {
  const query = { timeout: "0", ...params };
  if (query.filter && typeof query.filter !== "string") query.filter = JSON.stringify(query.filter);
  return client.http.authedRequest(Method.Get, "/sync", query);
}

// Incremental syncs from `since` until `done(response)`; returns that response.
async function syncUntil(client, since, done, params = {}, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await sync(client, { ...params, since, timeout: "500" });
    if (done(response)) return response;
    since = response.next_batch;
    assert.ok(Date.now() < deadline, `${client.getUserId()} never saw it; last sync: ${JSON.stringify(response)}`);
  }
}

const joined = (response, room) => response.rooms?.join?.[room];
const timeline = (response, room) => joined(response, room)?.timeline?.events ?? [];
const ephemeral = (response, room, type) => (joined(response, room)?.ephemeral?.events ?? []).filter((e) => e.type === type);
const ids = (events) => events.map((e) => e.event_id);
const text = (body, extra = {}) => ({ msgtype: "m.text", body, ...extra });

async function expectError(promise, status, errcode) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.httpStatus, status, `${e.httpStatus} ${e.errcode}: ${e.message}`);
    assert.equal(e.errcode, errcode);
    return e;
  }
  assert.fail(`expected ${status} ${errcode}`);
}

// A real PNG of one colour, made here (no imaging library).
function pngOf(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (bytes) => {
    let c = 0xffffffff;
    for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (kind, data) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(kind), data]);
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc(body));
    return Buffer.concat([head, body, tail]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const row = Buffer.concat([Buffer.from([0]), Buffer.alloc(width * 3, Buffer.from([20, 180, 20]))]);
  const pixels = zlib.deflateSync(Buffer.concat(Array(height).fill(row)));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", header),
    chunk("IDAT", pixels), chunk("IEND", Buffer.alloc(0))]);
}

// [width, height] from a JPEG's start-of-frame marker.
function jpegSize(bytes) {
  assert.equal(bytes.readUInt16BE(0), 0xffd8, "not a JPEG");
  let at = 2;
  for (;;) {
    const marker = bytes.readUInt16BE(at);
    const length = bytes.readUInt16BE(at + 2);
    if (marker >= 0xffc0 && marker <= 0xffcf && ![0xffc4, 0xffc8, 0xffcc].includes(marker)) {
      return [bytes.readUInt16BE(at + 7), bytes.readUInt16BE(at + 5)];
    }
    at += 2 + length;
  }
}

// Alice creates a room and invites Bob, who joins.
async function sharedRoom(alice, bob, options = {}) {
  const { room_id } = await alice.createRoom({ preset: "public_chat", invite: [bob.getUserId()], ...options });
  await bob.joinRoom(room_id);
  return room_id;
}

const parts = {
  // Each preset's join rule, history visibility, guest access and power;
  // Bob sees the invite with its stripped state, Alice sees him join.
  async presets(alice, bob) {
    const expected = {
      private_chat: ["invite", "can_join"],
      trusted_private_chat: ["invite", "can_join"],
      public_chat: ["public", "forbidden"],
    };
    for (const [preset, [joinRule, guestAccess]] of Object.entries(expected)) {
      const bobSince = (await sync(bob)).next_batch;
      const { room_id: room } = await alice.createRoom({ preset, invite: [bob.getUserId()], name: `${preset} room` });
      const state = Object.fromEntries((await alice.roomState(room)).map((e) => [`${e.type}|${e.state_key}`, e.content]));
      assert.deepEqual(state["m.room.join_rules|"], { join_rule: joinRule }, preset);
      assert.deepEqual(state["m.room.history_visibility|"], { history_visibility: "shared" }, preset);
      // No m.room.guest_access event means "forbidden" (Synapse sends none for public_chat).
      assert.deepEqual(state["m.room.guest_access|"] ?? { guest_access: "forbidden" }, { guest_access: guestAccess }, preset);
      const users = state["m.room.power_levels|"].users;
      if (Number(state["m.room.create|"].room_version) < 12) {
        assert.equal(users[alice.getUserId()], 100);
        assert.equal(users[bob.getUserId()], preset === "trusted_private_chat" ? 100 : undefined, preset);
      } else {
        assert.equal(users[alice.getUserId()], undefined, "v12 creators are not in users");
      }

      const invited = await syncUntil(bob, bobSince, (r) => r.rooms?.invite?.[room]);
      const stripped = Object.fromEntries(invited.rooms.invite[room].invite_state.events.map((e) => [e.type, e.content]));
      assert.deepEqual(stripped["m.room.join_rules"], { join_rule: joinRule });
      assert.deepEqual(stripped["m.room.name"], { name: `${preset} room` });

      const aliceSince = (await sync(alice)).next_batch;
      await bob.joinRoom(room);
      await syncUntil(alice, aliceSince, (r) =>
        timeline(r, room).some((e) => e.type === "m.room.member" && e.state_key === bob.getUserId() && e.content.membership === "join"),
      );
    }
  },

  // 200 alternating messages; Bob's sync limited to 10 has `limited` and a
  // `prev_batch` from which /messages pages back the other 190: each
  // message exactly once, in order, down to the room's creation.
  async messages(alice, bob) {
    const room = await sharedRoom(alice, bob);
    const since = (await sync(bob)).next_batch;
    const sent = [];
    for (let i = 0; i < 200; i++) {
      const sender = i % 2 === 0 ? alice : bob;
      sent.push((await sender.sendMessage(room, text(`message ${i}`))).event_id);
    }
    const gap = await sync(bob, { since, filter: { room: { timeline: { limit: 10 } } } });
    const tl = joined(gap, room).timeline;
    assert.equal(tl.limited, true);
    assert.deepEqual(ids(tl.events), sent.slice(-10));
    assert.ok(tl.prev_batch);

    const older = [];
    let from = tl.prev_batch;
    for (let pages = 0; from; pages++) {
      assert.ok(pages < 20, "paging never ends");
      const page = await bob.createMessagesRequest(room, from, 50, Direction.Backward);
      older.push(...page.chunk);
      from = page.chunk.length ? page.end : undefined;
    }
    const messages = older.filter((e) => e.type === "m.room.message").reverse();
    assert.deepEqual([...ids(messages), ...ids(tl.events)], sent);
    assert.deepEqual(
      messages.slice(0, 2).map((e) => [e.sender, e.content.body]),
      [
        [alice.getUserId(), "message 0"],
        [bob.getUserId(), "message 1"],
      ],
    );
    assert.equal(older.at(-1).type, "m.room.create");
  },

  // Name, topic and power level changes reach the other user's sync; after
  // a gap, the changes before the timeline come in the `state` section.
  async state(alice, bob) {
    const room = await sharedRoom(alice, bob, { name: "Before", topic: "Old topic" });
    const since = (await sync(bob)).next_batch;
    await expectError(bob.setRoomTopic(room, "Bob was here"), 403, "M_FORBIDDEN");
    await alice.setRoomName(room, "After");
    await alice.setRoomTopic(room, "New topic");
    await alice.setPowerLevel(room, bob.getUserId(), 50);
    const seen = {};
    await syncUntil(bob, since, (r) => {
      for (const e of timeline(r, room)) if (e.state_key === "") seen[e.type] = e.content;
      return seen["m.room.power_levels"]?.users?.[bob.getUserId()] === 50;
    });
    assert.deepEqual(seen["m.room.name"], { name: "After" });
    assert.equal(seen["m.room.topic"].topic, "New topic");

    const aliceSince = (await sync(alice)).next_batch;
    await bob.setRoomTopic(room, "Bob's topic");
    for (let i = 0; i < 5; i++) await bob.sendMessage(room, text(`after topic ${i}`));
    const gap = await sync(alice, { since: aliceSince, filter: { room: { timeline: { limit: 2 } } } });
    assert.equal(joined(gap, room).timeline.limited, true);
    const topic = joined(gap, room).state.events.find((e) => e.type === "m.room.topic");
    assert.equal(topic?.content?.topic, "Bob's topic", JSON.stringify(joined(gap, room).state));
  },

  // Redaction as Bob sees it, then kick and ban: his join after the ban is 403 M_FORBIDDEN.
  async moderation(alice, bob) {
    const room = await sharedRoom(alice, bob);
    let since = (await sync(bob)).next_batch;
    const { event_id: regret } = await bob.sendMessage(room, text("something I regret"));
    const { event_id: redaction } = await alice.redactEvent(room, regret, undefined, { reason: "spam" });
    const seen = await syncUntil(bob, since, (r) => timeline(r, room).some((e) => e.type === "m.room.redaction"));
    const event = timeline(seen, room).find((e) => e.type === "m.room.redaction");
    assert.equal(event.event_id, redaction);
    assert.equal(event.content.reason, "spam");
    assert.equal(event.content.redacts ?? event.redacts, regret);
    // Served after the redaction, the message is stripped: in a fresh sync and from /event.
    const fresh = await sync(bob, { filter: { room: { timeline: { limit: 5 } } } });
    const stripped = timeline(fresh, room).find((e) => e.event_id === regret);
    assert.deepEqual(stripped.content, {});
    assert.equal(stripped.unsigned.redacted_because.event_id, redaction);
    const fetched = await bob.fetchRoomEvent(room, regret);
    assert.deepEqual(fetched.content, {});
    assert.equal(fetched.unsigned.redacted_because.event_id, redaction);
    assert.equal(fetched.unsigned.redacted_because.content.reason, "spam");

    // Kick and ban each end in Bob's `leave` section, as his own member event.
    const lastMembership = (r) => (r.rooms?.leave?.[room]?.timeline?.events ?? []).filter((e) => e.type === "m.room.member").at(-1);
    since = seen.next_batch;
    await alice.kick(room, bob.getUserId(), "cool off");
    const kicked = await syncUntil(bob, since, (r) => lastMembership(r)?.content?.membership === "leave");
    const leave = lastMembership(kicked);
    assert.deepEqual([leave.state_key, leave.sender, leave.content.reason], [bob.getUserId(), alice.getUserId(), "cool off"]);
    assert.equal(joined(kicked, room), undefined);

    await bob.joinRoom(room);
    await alice.ban(room, bob.getUserId(), "enough");
    const banned = await syncUntil(bob, kicked.next_batch, (r) => lastMembership(r)?.content?.membership === "ban");
    assert.deepEqual([lastMembership(banned).state_key, lastMembership(banned).sender], [bob.getUserId(), alice.getUserId()]);
    await expectError(bob.joinRoom(room), 403, "M_FORBIDDEN");
  },

  // The SDK reads what a redaction redacts from the top-level `redacts`
  // (MatrixEvent.getAssociatedId; Room.applyRedaction uses event.redacts).
  // Room v11 moved it into content and says servers should keep the
  // top-level copy for such clients.
  async redactsForOlderClients(alice, bob) {
    const room = await sharedRoom(alice, bob);
    const since = (await sync(bob)).next_batch;
    const { event_id: regret } = await bob.sendMessage(room, text("oops"));
    await alice.redactEvent(room, regret);
    const seen = await syncUntil(bob, since, (r) => timeline(r, room).some((e) => e.type === "m.room.redaction"));
    const raw = timeline(seen, room).find((e) => e.type === "m.room.redaction");
    assert.equal(new sdk.MatrixEvent(raw).getAssociatedId(), regret, `the SDK cannot tell what was redacted: ${JSON.stringify(raw)}`);
  },

  // Alias create and lookup; Bob joins through it.
  async alias(alice, bob) {
    const { room_id: room } = await alice.createRoom({ preset: "public_chat" });
    const alias = `#club${rand()}:localhost`;
    await alice.createAlias(alias, room);
    assert.deepEqual(await bob.getRoomIdForAlias(alias), { room_id: room, servers: ["localhost"] });
    const joinedRoom = await bob.joinRoom(alias);
    assert.equal(joinedRoom.roomId, room);
    await expectError(bob.getRoomIdForAlias(`#nope${rand()}:localhost`), 404, "M_NOT_FOUND");
  },

  // A reaction and thread replies, read back through /relations and /threads,
  // with the m.thread bundled aggregation on each root.
  async relations(alice, bob) {
    const support = await alice.doesServerSupportThread();
    const stable = sdk.FeatureSupport.Stable;
    assert.deepEqual(support, { threads: stable, list: stable, fwdPagination: stable }, "the server advertises v1.4+");
    sdk.Thread.setServerSideSupport(support.threads);
    sdk.Thread.setServerSideListSupport(support.list);
    sdk.Thread.setServerSideFwdPaginationSupport(support.fwdPagination);

    const room = await sharedRoom(alice, bob);
    const thread = (root) => ({ "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } } });
    const { event_id: root } = await alice.sendMessage(room, text("what shall we read next?"));
    const { event_id: reaction } = await bob.sendEvent(room, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: root, key: "👍" } });
    const { event_id: bobReply } = await bob.sendMessage(room, text("Dune!", thread(root)));
    const { event_id: aliceReply } = await alice.sendMessage(room, text("again?", thread(root)));
    const { event_id: otherRoot } = await bob.sendMessage(room, text("anyone for chess?"));
    const { event_id: otherReply } = await bob.sendMessage(room, text("I'll bring the board", thread(otherRoot)));

    const all = await alice.fetchRelations(room, root, null);
    assert.deepEqual(ids(all.chunk), [aliceReply, bobReply, reaction]);
    // The SDK appends eventType unless it is null, so null it is.
    const threaded = await alice.fetchRelations(room, root, "m.thread", null);
    assert.deepEqual(ids(threaded.chunk), [aliceReply, bobReply]);
    const reactions = await alice.fetchRelations(room, root, "m.annotation", "m.reaction");
    assert.deepEqual(reactions.chunk.map((e) => [e.event_id, e.content["m.relates_to"].key]), [[reaction, "👍"]]);
    const forward = await alice.fetchRelations(room, root, null, null, { dir: Direction.Forward });
    assert.deepEqual(ids(forward.chunk), [reaction, bobReply, aliceReply]);
    const paged = [];
    let from;
    for (let i = 0; i < 5; i++) {
      const page = await alice.fetchRelations(room, root, null, null, { dir: Direction.Backward, limit: 1, ...(from ? { from } : {}) });
      assert.ok(page.chunk.length <= 1);
      paged.push(...ids(page.chunk));
      from = page.next_batch;
      if (!from) break;
    }
    assert.deepEqual(paged, [aliceReply, bobReply, reaction]);

    // The SDK reverses /threads' chunk to oldest first.
    const list = await alice.createThreadListMessagesRequest(room, null, 10, Direction.Backward, sdk.ThreadFilterType.All);
    assert.deepEqual(ids(list.chunk), [root, otherRoot]);
    const summary = Object.fromEntries(list.chunk.map((e) => [e.event_id, e.unsigned["m.relations"]["m.thread"]]));
    assert.equal(summary[root].count, 2);
    assert.equal(summary[root].latest_event.event_id, aliceReply);
    assert.equal(summary[root].latest_event.sender, alice.getUserId());
    assert.equal(summary[root].current_user_participated, true);
    assert.equal(summary[otherRoot].count, 1);
    assert.equal(summary[otherRoot].latest_event.event_id, otherReply);
    assert.equal(summary[otherRoot].current_user_participated, false);
    const mine = await alice.createThreadListMessagesRequest(room, null, 10, Direction.Backward, sdk.ThreadFilterType.My);
    assert.deepEqual(ids(mine.chunk), [root]);
    const onePage = await bob.createThreadListMessagesRequest(room, null, 1, Direction.Backward, sdk.ThreadFilterType.All);
    assert.deepEqual(ids(onePage.chunk), [otherRoot]);
    assert.ok(onePage.end, "a next_batch for the second thread");
    const nextPage = await bob.createThreadListMessagesRequest(room, onePage.end, 1, Direction.Backward, sdk.ThreadFilterType.All);
    assert.deepEqual(ids(nextPage.chunk), [root]);

    // /messages bundles the aggregation with the root too.
    const recent = await bob.createMessagesRequest(room, null, 10, Direction.Backward);
    const rootEvent = recent.chunk.find((e) => e.event_id === root);
    assert.equal(rootEvent.unsigned["m.relations"]["m.thread"].count, 2);
    assert.equal(rootEvent.unsigned["m.relations"]["m.thread"].current_user_participated, true);
  },

  // Typing and receipts in the other user's `ephemeral`, with their exact
  // shapes; /read_markers moves m.fully_read (room account data) and the
  // receipt; a private receipt reaches only its sender.
  async ephemeral(alice, bob) {
    const room = await sharedRoom(alice, bob);
    const { event_id: first } = await alice.sendMessage(room, text("first"));
    const { event_id: second } = await alice.sendMessage(room, text("second"));
    const { event_id: third } = await alice.sendMessage(room, text("third"));
    const bobSince = (await sync(bob)).next_batch;
    let aliceSince = (await sync(alice)).next_batch;

    assert.deepEqual(await alice.sendTyping(room, true, 30000), {});
    const typing = await syncUntil(bob, bobSince, (r) => ephemeral(r, room, "m.typing").length > 0);
    assert.deepEqual(ephemeral(typing, room, "m.typing"), [{ type: "m.typing", content: { user_ids: [alice.getUserId()] } }]);
    await alice.sendTyping(room, false);
    const stopped = await syncUntil(bob, typing.next_batch, (r) => ephemeral(r, room, "m.typing").length > 0);
    assert.deepEqual(ephemeral(stopped, room, "m.typing")[0].content, { user_ids: [] });
    // Typing also ends by itself when its timeout runs out.
    await alice.sendTyping(room, true, 1000);
    const again = await syncUntil(bob, stopped.next_batch, (r) => ephemeral(r, room, "m.typing").length > 0);
    assert.deepEqual(ephemeral(again, room, "m.typing")[0].content, { user_ids: [alice.getUserId()] });
    const expired = await syncUntil(bob, again.next_batch, (r) => ephemeral(r, room, "m.typing").length > 0);
    assert.deepEqual(ephemeral(expired, room, "m.typing")[0].content, { user_ids: [] });

    const asEvent = (event_id) => new sdk.MatrixEvent({ event_id, room_id: room, type: "m.room.message", sender: alice.getUserId(), content: {} });
    assert.deepEqual(await bob.sendReceipt(asEvent(first), sdk.ReceiptType.Read), {});
    const receipted = await syncUntil(alice, aliceSince, (r) => ephemeral(r, room, "m.receipt").some((e) => e.content[first]));
    const receipt = ephemeral(receipted, room, "m.receipt").find((e) => e.content[first]);
    assert.deepEqual(Object.keys(receipt.content[first]), ["m.read"]);
    assert.deepEqual(Object.keys(receipt.content[first]["m.read"]), [bob.getUserId()]);
    const { ts } = receipt.content[first]["m.read"][bob.getUserId()];
    assert.ok(Number.isInteger(ts) && Math.abs(Date.now() - ts) < 60000, `ts ${ts}`);
    assert.deepEqual(Object.keys(receipt.content[first]["m.read"][bob.getUserId()]), ["ts"], "an unthreaded receipt has no thread_id");

    aliceSince = receipted.next_batch;
    assert.deepEqual(await bob.setRoomReadMarkersHttpRequest(room, second, second), {});
    const moved = await syncUntil(alice, aliceSince, (r) => ephemeral(r, room, "m.receipt").some((e) => e.content[second]));
    assert.ok(ephemeral(moved, room, "m.receipt").some((e) => e.content[second]["m.read"][bob.getUserId()]));
    const mine = await syncUntil(bob, bobSince, (r) => (joined(r, room)?.account_data?.events ?? []).some((e) => e.type === "m.fully_read"));
    assert.deepEqual(
      joined(mine, room).account_data.events.find((e) => e.type === "m.fully_read").content,
      { event_id: second },
    );
    // Only /read_markers moves it: the account data API must refuse m.fully_read.
    try {
      await bob.setRoomAccountData(room, "m.fully_read", { event_id: first });
      assert.fail("m.fully_read set through the account data API");
    } catch (e) {
      assert.ok(e.httpStatus >= 400 && e.httpStatus < 500, `${e.httpStatus} ${e.message}`);
    }

    // m.read.private: Bob sees it, Alice never does.
    aliceSince = moved.next_batch;
    const bobAfter = (await sync(bob, { since: mine.next_batch })).next_batch;
    await bob.setRoomReadMarkersHttpRequest(room, third, undefined, third);
    const own = await syncUntil(bob, bobAfter, (r) => ephemeral(r, room, "m.receipt").some((e) => e.content[third]));
    const privateReceipt = ephemeral(own, room, "m.receipt").find((e) => e.content[third]);
    assert.deepEqual(Object.keys(privateReceipt.content[third]), ["m.read.private"]);
    await alice.sendMessage(room, text("after the private receipt"));
    const later = await syncUntil(alice, aliceSince, (r) => timeline(r, room).length > 0);
    assert.ok(!ephemeral(later, room, "m.receipt").some((e) => e.content[third]), "Alice must not see Bob's private receipt");
  },

  // The published room directory: visibility, listing, search, pagination.
  async directory(alice, bob) {
    const alias = `lounge${rand()}`;
    const { room_id: lounge } = await alice.createRoom({
      visibility: "public",
      preset: "public_chat",
      name: "Alpha Lounge",
      topic: "tea and biscuits",
      room_alias_name: alias,
    });
    const { room_id: garage } = await alice.createRoom({ preset: "public_chat", name: "Beta Garage" });
    const { room_id: hideout } = await alice.createRoom({ preset: "private_chat", name: "Gamma Hideout" });
    await bob.joinRoom(lounge);

    assert.deepEqual(await bob.getRoomDirectoryVisibility(lounge), { visibility: "public" });
    assert.deepEqual(await bob.getRoomDirectoryVisibility(garage), { visibility: "private" });
    await alice.setRoomDirectoryVisibility(garage, "public");
    assert.deepEqual(await bob.getRoomDirectoryVisibility(garage), { visibility: "public" });

    const listed = await bob.publicRooms();
    assert.deepEqual(new Set(listed.chunk.map((r) => r.room_id)), new Set([lounge, garage]));
    assert.ok(!listed.chunk.some((r) => r.room_id === hideout));
    const entry = listed.chunk.find((r) => r.room_id === lounge);
    assert.equal(entry.name, "Alpha Lounge");
    assert.equal(entry.topic, "tea and biscuits");
    assert.equal(entry.canonical_alias, `#${alias}:localhost`);
    assert.equal(entry.num_joined_members, 2);
    assert.equal(entry.world_readable, false);
    assert.equal(entry.guest_can_join, false);
    assert.ok([undefined, "public"].includes(entry.join_rule));

    const found = await bob.publicRooms({ filter: { generic_search_term: "Lounge" } });
    assert.deepEqual(found.chunk.map((r) => r.room_id), [lounge]);
    const none = await bob.publicRooms({ filter: { generic_search_term: "zeppelin" } });
    assert.deepEqual(none.chunk, []);

    // GET pagination and POST pagination: one room a page, each once.
    for (const filter of [undefined, {}]) {
      const seen = [];
      let since;
      for (let i = 0; i < 4; i++) {
        const page = await bob.publicRooms({ limit: 1, ...(since ? { since } : {}), ...(filter ? { filter } : {}) });
        assert.equal(page.chunk.length, 1, JSON.stringify(page));
        seen.push(page.chunk[0].room_id);
        since = page.next_batch;
        if (!since) break;
      }
      assert.deepEqual(seen.toSorted(), [lounge, garage].toSorted(), filter ? "POST" : "GET");
    }

    await alice.setRoomDirectoryVisibility(garage, "private");
    assert.deepEqual((await bob.publicRooms()).chunk.map((r) => r.room_id), [lounge]);
  },

  // unread_notifications: 3 from Bob, 0 after Alice's receipt, a highlight
  // for a mention, and 0 again once she sends a message herself.
  // An m.image: Alice uploads a picture and sends it; Bob gets the event,
  // downloads the file and a thumbnail through authenticated media, and the
  // old unauthenticated route refuses the new media.
  async media(alice, bob) {
    const room = await sharedRoom(alice, bob);
    const since = (await sync(bob)).next_batch;
    const picture = pngOf(200, 100);
    const { content_uri } = await alice.uploadContent(new Blob([picture], { type: "image/png" }), {
      name: "green.png",
      type: "image/png",
    });
    assert.match(content_uri, /^mxc:\/\//);
    const { event_id } = await alice.sendMessage(room, {
      msgtype: "m.image", body: "green.png", url: content_uri,
      info: { mimetype: "image/png", w: 200, h: 100, size: picture.length },
    });
    const seen = await syncUntil(bob, since, (r) => ids(timeline(r, room)).includes(event_id));
    const image = timeline(seen, room).find((e) => e.event_id === event_id);
    assert.equal(image.content.url, content_uri);

    const auth = { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } };
    const download = bob.mxcUrlToHttp(content_uri, undefined, undefined, undefined, false, true, true);
    assert.match(download, /\/_matrix\/client\/v1\/media\/download\//);
    const file = await fetch(download, auth);
    assert.equal(file.status, 200);
    assert.deepEqual(Buffer.from(await file.arrayBuffer()), Buffer.from(picture));
    assert.equal(file.headers.get("content-type"), "image/png");

    const thumbnailUrl = bob.mxcUrlToHttp(content_uri, 96, 96, "crop", false, true, true);
    const thumbnail = await fetch(thumbnailUrl, auth);
    assert.equal(thumbnail.status, 200);
    assert.deepEqual(jpegSize(Buffer.from(await thumbnail.arrayBuffer())), [96, 96]);

    const legacy = bob.mxcUrlToHttp(content_uri, undefined, undefined, undefined, false, true, false);
    assert.match(legacy, /\/_matrix\/media\/v3\/download\//);
    assert.equal((await fetch(legacy)).status, 404);
    assert.equal((await fetch(download)).status, 401, "authenticated media needs a token");
  },

  async unread(alice, bob) {
    await alice.setDisplayName("Alice Liddell");
    const room = await sharedRoom(alice, bob);
    const since = (await sync(alice)).next_batch;
    const sent = [];
    for (let i = 0; i < 3; i++) sent.push((await bob.sendMessage(room, text(`unread ${i}`))).event_id);
    const got = await syncUntil(alice, since, (r) => ids(timeline(r, room)).includes(sent[2]));
    assert.deepEqual(joined(got, room).unread_notifications, { notification_count: 3, highlight_count: 0 });

    const last = new sdk.MatrixEvent({ event_id: sent[2], room_id: room, type: "m.room.message", sender: bob.getUserId(), content: {} });
    await alice.sendReceipt(last, sdk.ReceiptType.Read);
    const read = await syncUntil(alice, got.next_batch, (r) => ephemeral(r, room, "m.receipt").some((e) => e.content[sent[2]]));
    assert.deepEqual(joined(read, room).unread_notifications, { notification_count: 0, highlight_count: 0 });

    const { event_id: mention } = await bob.sendMessage(room, text("Alice Liddell, your turn", { "m.mentions": { user_ids: [alice.getUserId()] } }));
    const pinged = await syncUntil(alice, read.next_batch, (r) => ids(timeline(r, room)).includes(mention));
    assert.deepEqual(joined(pinged, room).unread_notifications, { notification_count: 1, highlight_count: 1 });

    // Sending an event also marks everything before it read (push module, "Marking notifications as read").
    await alice.sendMessage(room, text("coming!"));
    const fresh = await sync(alice);
    assert.deepEqual(joined(fresh, room).unread_notifications, { notification_count: 0, highlight_count: 0 }, "after Alice's own message");
  },
};

assert.ok(parts[part], `unknown part ${part}; one of ${Object.keys(parts).join(", ")}`);
const alice = await user("alice");
const bob = await user("bob");
await parts[part](alice, bob);
console.log(`js-sdk rooms scenario '${part}' passed`);
