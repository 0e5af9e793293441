// End-to-end encryption as matrix-js-sdk's Rust crypto (matrix-sdk-crypto-wasm)
// does it in Node, with its in-memory store (no IndexedDB needed):
// cross-signing with password UIA, secret storage (4S) holding the
// cross-signing keys and a new key backup, an encrypted room whose room keys
// go to the backup; then a NEW device of the same user, with only the
// recovery key, imports cross-signing from 4S (signing itself), restores the
// backup and decrypts the old messages. Last, replacing the cross-signing
// keys must go through UIA.
// Part "dehydration" (MSC3814): Alice's only device uploads a dehydrated
// device and goes away; Bob (on [bob's homeserver url], default the same)
// sends her a message; her new device, with only the recovery key,
// rehydrates the dehydrated device, gets the room key from its to-device
// events and decrypts the message.
// Usage: node e2ee.mjs <homeserver url> [backup|dehydration] [bob's homeserver url].
// Exits non-zero on the first failure.
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { CryptoEvent, decodeRecoveryKey, DecryptionFailureCode } from "matrix-js-sdk/lib/crypto-api/index.js";

const [baseUrl, part = "backup", bobUrl = baseUrl] = process.argv.slice(2);
const password = "correct horse battery";
const MEGOLM = "m.megolm.v1.aes-sha2";
const { Method, Direction } = sdk;
const rand = () => Math.random().toString(16).slice(2, 12);
// The SDK and the Rust crypto log a lot through console.*: keep the last
// lines and print them only on failure (or all of them with E2EE_DEBUG=1).
const sdkLog = [];
if (!process.env.E2EE_DEBUG) {
  for (const level of ["log", "debug", "info", "warn", "error", "trace"]) {
    const show = (a) => {
      if (typeof a === "string") return a;
      try {
        return a?.stack ?? JSON.stringify(a);
      } catch {
        return String(a);
      }
    };
    console[level] = (...args) => {
      sdkLog.push(`${level}: ${args.map(show).join(" ")}`);
      if (sdkLog.length > 400) sdkLog.shift();
    };
  }
}
const out = (line) => process.stdout.write(line + "\n");
const fail = (line) => process.stderr.write(line + "\n");
logger.setLevel("debug");

const TIMEOUT_MS = Number(process.env.E2EE_TIMEOUT_MS ?? 150000);
setTimeout(() => {
  fail(`FAIL ${part}: global timeout after ${TIMEOUT_MS} ms at step: ${step}`);
  fail(`last SDK log lines:\n${sdkLog.slice(-80).join("\n")}`);
  process.exit(2);
}, TIMEOUT_MS).unref();

let step = "start";
const note = (what) => {
  step = what;
  out(`-- ${what}`);
};

async function until(what, check, timeoutMs = 30000, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// The dummy stage, in a UIA session if the server asks for one (Synapse does).
async function register(prefix, homeserver = baseUrl) {
  const anon = sdk.createClient({ baseUrl: homeserver });
  const body = { username: `${prefix}${rand()}`, password, initial_device_display_name: `${prefix} first device` };
  try {
    return await anon.registerRequest({ ...body, auth: { type: "m.login.dummy" } });
  } catch (e) {
    if (e.httpStatus !== 401 || !e.data?.session) throw e;
    return await anon.registerRequest({ ...body, auth: { type: "m.login.dummy", session: e.data.session } });
  }
}

async function login(userId, deviceName) {
  const anon = sdk.createClient({ baseUrl });
  return anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: userId },
    password,
    initial_device_display_name: deviceName,
  });
}

// A password-UIA callback for uploading cross-signing keys. It first tries
// without auth (a first upload needs none on servers that follow MSC3967),
// then answers the 401 with the password in the server's session.
function passwordUia(userId, record) {
  return async (makeRequest) => {
    try {
      await makeRequest(null);
      record.push("no-auth");
      return;
    } catch (e) {
      if (e.httpStatus !== 401 || !e.data?.session) throw e;
      assert.ok(
        e.data.flows?.some((f) => f.stages?.length === 1 && f.stages[0] === "m.login.password"),
        `UIA flows offer no password stage: ${JSON.stringify(e.data)}`,
      );
      record.push("password");
      await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: userId },
        password,
        session: e.data.session,
      });
    }
  };
}

// A started client with Rust crypto in memory. `ssss.key` (raw bytes) is what
// the app hands out when the crypto stack asks for the secret storage key.
async function startClient(session, ssss, homeserver = baseUrl) {
  const client = sdk.createClient({
    baseUrl: homeserver,
    userId: session.user_id,
    accessToken: session.access_token,
    deviceId: session.device_id,
    cryptoCallbacks: {
      getSecretStorageKey: async ({ keys }) => {
        if (!ssss.key) return null;
        const defaultKey = await client.secretStorage.getDefaultKeyId();
        const keyId = defaultKey && keys[defaultKey] ? defaultKey : Object.keys(keys)[0];
        return [keyId, ssss.key];
      },
      cacheSecretStorageKey: (keyId, _info, key) => {
        ssss.key = key;
        ssss.keyId = keyId;
      },
    },
  });
  await client.initRustCrypto({ useIndexedDB: false });
  const synced = new Promise((resolve, reject) => {
    const onSync = (state, _prev, data) => {
      if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) {
        client.off(sdk.ClientEvent.Sync, onSync);
        resolve();
      } else if (state === sdk.SyncState.Error) {
        reject(new Error(`sync error: ${data?.error?.message ?? JSON.stringify(data)}`));
      }
    };
    client.on(sdk.ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 30 });
  await synced;
  return client;
}

const http = (client, method, path, query, body, prefix) =>
  client.http.authedRequest(method, path, query, body, prefix ? { prefix } : undefined);

async function queryKeys(client, userId) {
  return http(client, Method.Post, "/keys/query", undefined, { device_keys: { [userId]: [] } });
}

const keyId = (crossSigningKey) => Object.keys(crossSigningKey.keys)[0]; // "ed25519:<public key>"

async function accountData(client, type) {
  const path = `/user/${encodeURIComponent(client.getUserId())}/account_data/${encodeURIComponent(type)}`;
  return http(client, Method.Get, path);
}

// The room's m.room.message history through /messages, each event freshly
// decrypted: [{id, encrypted, body, failure}].
async function history(client, roomId) {
  const page = await client.createMessagesRequest(roomId, null, 100, Direction.Backward);
  const mapper = client.getEventMapper();
  const out = [];
  for (const raw of page.chunk.reverse()) {
    if (raw.type !== "m.room.encrypted" && raw.type !== "m.room.message") continue;
    const event = mapper(raw);
    await client.decryptEventIfNeeded(event);
    out.push({
      id: event.getId(),
      wireType: raw.type,
      algorithm: raw.content?.algorithm,
      body: event.isDecryptionFailure() ? undefined : event.getContent().body,
      failure: event.decryptionFailureReason,
    });
  }
  return out;
}

// Cross-signing and secret storage on a fresh account's first device, as in
// the backup part but without its checks; returns the recovery key.
async function secureAccount(client, ssss, { backup }) {
  const crypto = client.getCrypto();
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(client.getUserId(), []) });
  let recoveryKey;
  await crypto.bootstrapSecretStorage({
    createSecretStorageKey: async () => {
      const generated = await crypto.createRecoveryKeyFromPassphrase();
      recoveryKey = generated.encodedPrivateKey;
      ssss.key = generated.privateKey;
      return generated;
    },
    setupNewSecretStorage: true,
    setupNewKeyBackup: backup,
  });
  assert.ok(await crypto.isCrossSigningReady(), "cross-signing not ready");
  assert.ok(await crypto.isSecretStorageReady(), "secret storage not ready");
  return recoveryKey;
}

const dehydratedDevice = (client) =>
  http(client, Method.Get, "/dehydrated_device", undefined, undefined, "/_matrix/client/unstable/org.matrix.msc3814.v1");

const parts = {
  async backup() {
    note("register and start the first device");
    const reg = await register("alice");
    const userId = reg.user_id;
    const ssss = {};
    const first = await startClient(reg, ssss);
    const crypto1 = first.getCrypto();
    assert.ok(crypto1, "no crypto backend");
    const deviceKeys = await crypto1.getOwnDeviceKeys();
    // The SDK uploads its keys right after the first sync: wait for them.
    let keys0 = await queryKeys(first, userId);
    for (let i = 0; i < 50 && !keys0.device_keys?.[userId]?.[reg.device_id]; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      keys0 = await queryKeys(first, userId);
    }
    assert.equal(keys0.device_keys?.[userId]?.[reg.device_id]?.keys?.[`ed25519:${reg.device_id}`], deviceKeys.ed25519,
      `the server does not return our device keys: ${JSON.stringify(keys0)}`);

    note("bootstrapCrossSigning");
    const uia = [];
    await crypto1.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(userId, uia) });
    assert.equal(uia.length, 1, "the signing keys were not uploaded");
    out(`   first upload of the signing keys: ${uia[0]}`);
    assert.ok(await crypto1.isCrossSigningReady(), "cross-signing not ready after bootstrap");
    const keys1 = await queryKeys(first, userId);
    const master = keys1.master_keys?.[userId];
    const selfSigning = keys1.self_signing_keys?.[userId];
    const userSigning = keys1.user_signing_keys?.[userId];
    assert.ok(master && selfSigning && userSigning, `cross-signing keys missing from /keys/query: ${JSON.stringify(keys1)}`);
    assert.deepEqual(master.usage, ["master"]);
    assert.deepEqual(selfSigning.usage, ["self_signing"]);
    assert.ok(selfSigning.signatures?.[userId]?.[keyId(master)], "self-signing key not signed by the master key");
    assert.ok(
      keys1.device_keys[userId][reg.device_id].signatures?.[userId]?.[keyId(selfSigning)],
      `our device is not signed by the self-signing key: ${JSON.stringify(keys1.device_keys[userId][reg.device_id])}`,
    );
    assert.equal(await crypto1.getCrossSigningKeyId(), keyId(master).slice("ed25519:".length));

    note("bootstrapSecretStorage with a new key backup");
    let recoveryKey;
    await crypto1.bootstrapSecretStorage({
      createSecretStorageKey: async () => {
        const generated = await crypto1.createRecoveryKeyFromPassphrase();
        recoveryKey = generated.encodedPrivateKey;
        ssss.key = generated.privateKey;
        return generated;
      },
      setupNewSecretStorage: true,
      setupNewKeyBackup: true,
    });
    assert.ok(recoveryKey, "createSecretStorageKey was never called");
    assert.ok(await crypto1.isSecretStorageReady(), "secret storage not ready after bootstrap");
    const defaultKey = await accountData(first, "m.secret_storage.default_key");
    assert.ok(defaultKey.key, JSON.stringify(defaultKey));
    const keyInfo = await accountData(first, `m.secret_storage.key.${defaultKey.key}`);
    assert.equal(keyInfo.algorithm, "m.secret_storage.v1.aes-hmac-sha2");
    for (const secret of ["m.cross_signing.master", "m.cross_signing.self_signing", "m.cross_signing.user_signing", "m.megolm_backup.v1"]) {
      const stored = await accountData(first, secret);
      assert.ok(stored.encrypted?.[defaultKey.key]?.ciphertext, `${secret} not in secret storage: ${JSON.stringify(stored)}`);
    }
    const backupVersion = await crypto1.getActiveSessionBackupVersion();
    assert.ok(backupVersion, "no active key backup");
    const serverBackup = await http(first, Method.Get, "/room_keys/version");
    assert.equal(serverBackup.version, backupVersion);
    assert.equal(serverBackup.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    assert.ok(serverBackup.auth_data?.public_key, JSON.stringify(serverBackup));

    note("an encrypted room and three messages");
    const { room_id: roomId } = await first.createRoom({
      name: "secrets",
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
    });
    await until("the room in sync, encrypted", async () => first.getRoom(roomId) && (await crypto1.isEncryptionEnabledInRoom(roomId)));
    const bodies = ["first secret", "second secret", "third secret"];
    const sent = [];
    for (const body of bodies) sent.push((await first.sendMessage(roomId, { msgtype: "m.text", body })).event_id);
    const onServer = await history(first, roomId);
    assert.deepEqual(onServer.map((e) => [e.id, e.wireType, e.algorithm, e.body]),
      sent.map((id, i) => [id, "m.room.encrypted", MEGOLM, bodies[i]]), "the sender's own history");

    note("the room key reaches the backup");
    const backedUp = await until("the room key in the backup", async () => {
      const all = await http(first, Method.Get, "/room_keys/keys", { version: backupVersion });
      const sessions = all.rooms?.[roomId]?.sessions ?? {};
      return Object.keys(sessions).length ? sessions : null;
    });
    const [sessionId, backedUpSession] = Object.entries(backedUp)[0];
    assert.ok(backedUpSession.session_data?.ciphertext && backedUpSession.session_data?.ephemeral && backedUpSession.session_data?.mac,
      JSON.stringify(backedUpSession));
    const one = await http(first, Method.Get, `/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}`, { version: backupVersion });
    assert.deepEqual(one, backedUpSession, "GET of one session differs from the full listing");
    const counted = await http(first, Method.Get, "/room_keys/version");
    assert.ok(counted.count >= 1 && counted.etag, `backup count/etag: ${JSON.stringify(counted)}`);
    first.stopClient(); // the first device is gone: only the recovery key is left

    note("a new device with only the recovery key");
    const session2 = await login(userId, "alice second device");
    assert.notEqual(session2.device_id, reg.device_id);
    const ssss2 = { key: decodeRecoveryKey(recoveryKey) };
    const second = await startClient(session2, ssss2);
    const crypto2 = second.getCrypto();
    const before = await history(second, roomId);
    assert.deepEqual(before.map((e) => [e.id, e.body]), sent.map((id) => [id, undefined]), "the new device could decrypt before the restore");
    assert.ok(before.every((e) => e.failure === DecryptionFailureCode.MEGOLM_UNKNOWN_INBOUND_SESSION_ID ||
      e.failure === DecryptionFailureCode.HISTORICAL_MESSAGE_BACKUP_UNCONFIGURED ||
      e.failure === DecryptionFailureCode.HISTORICAL_MESSAGE_WORKING_BACKUP), JSON.stringify(before));

    note("cross-signing from secret storage");
    await until("our cross-signing keys", () => crypto2.userHasCrossSigningKeys(userId, true));
    await crypto2.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(userId, []) });
    assert.ok(await crypto2.isCrossSigningReady(), "cross-signing not ready on the new device");
    const status2 = await crypto2.getCrossSigningStatus();
    assert.ok(status2.privateKeysCachedLocally.masterKey && status2.privateKeysCachedLocally.selfSigningKey, JSON.stringify(status2));
    const keys2 = await queryKeys(second, userId);
    assert.deepEqual(keys2.master_keys[userId].keys, master.keys, "the master key changed");
    assert.ok(
      keys2.device_keys[userId][session2.device_id]?.signatures?.[userId]?.[keyId(selfSigning)],
      `the new device's signature upload is not in /keys/query: ${JSON.stringify(keys2.device_keys[userId][session2.device_id])}`,
    );
    for (const deviceId of [reg.device_id, session2.device_id]) {
      const status = await until(`${deviceId} cross-signed`, async () => {
        const s = await crypto2.getDeviceVerificationStatus(userId, deviceId);
        return s?.crossSigningVerified ? s : null;
      }, 10000);
      assert.ok(status.signedByOwner);
    }

    note("restore the key backup");
    await crypto2.loadSessionBackupPrivateKeyFromSecretStorage();
    const check = await crypto2.checkKeyBackupAndEnable();
    assert.equal(check?.backupInfo?.version, backupVersion);
    assert.ok(check.trustInfo.trusted && check.trustInfo.matchesDecryptionKey, JSON.stringify(check.trustInfo));
    const restored = await crypto2.restoreKeyBackup();
    // (`imported` may be 0: the per-session backup downloader can fetch the key first.)
    assert.ok(restored.total >= 1, `the backup restore found nothing: ${JSON.stringify(restored)}`);
    out(`   restored ${restored.imported} of ${restored.total} room keys`);
    const after = await history(second, roomId);
    assert.deepEqual(after.map((e) => [e.id, e.body]), sent.map((id, i) => [id, bodies[i]]), "old messages after the restore");
    // The live timeline's undecryptable events are retried with the new keys.
    await until("the live timeline decrypted", () => {
      const live = second.getRoom(roomId).getLiveTimeline().getEvents().filter((e) => sent.includes(e.getId()));
      return live.length === sent.length && live.every((e) => !e.isDecryptionFailure() && e.getContent().body === bodies[sent.indexOf(e.getId())]);
    }, 15000);

    note("the new device's messages are backed up too");
    const fresh = (await second.sendMessage(roomId, { msgtype: "m.text", body: "from the new device" })).event_id;
    await until("the new device's room key in the backup", async () => {
      const all = await http(second, Method.Get, "/room_keys/keys", { version: backupVersion });
      return Object.keys(all.rooms?.[roomId]?.sessions ?? {}).length >= 2;
    });
    assert.equal((await history(second, roomId)).find((e) => e.id === fresh)?.body, "from the new device");

    note("replacing the cross-signing keys needs UIA");
    const reset = [];
    await crypto2.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys: passwordUia(userId, reset) });
    assert.deepEqual(reset, ["password"], "the server replaced the master key without UIA");
    const keys3 = await queryKeys(second, userId);
    assert.notDeepEqual(keys3.master_keys[userId].keys, master.keys, "the master key did not change");
    second.stopClient();
  },

  async dehydration() {
    note("alice's first device: cross-signing, secret storage, a dehydrated device");
    const reg = await register("alice");
    const userId = reg.user_id;
    const ssss = {};
    const first = await startClient(reg, ssss);
    const recoveryKey = await secureAccount(first, ssss, { backup: false });
    const crypto1 = first.getCrypto();
    assert.ok(await crypto1.isDehydrationSupported(), "GET dehydrated_device is not 404 M_NOT_FOUND");
    const uploaded = new Promise((resolve) => first.once(CryptoEvent.DehydratedDeviceUploaded, resolve));
    await crypto1.startDehydration({ createNewKey: true });
    await uploaded;
    const dehydrated = await dehydratedDevice(first);
    assert.ok(dehydrated.device_id && dehydrated.device_data, JSON.stringify(dehydrated));
    const keys = await queryKeys(first, userId);
    const dehydratedKeys = keys.device_keys?.[userId]?.[dehydrated.device_id];
    assert.ok(dehydratedKeys, `the dehydrated device is not in /keys/query: ${JSON.stringify(keys)}`);
    assert.equal(dehydratedKeys.dehydrated, true, JSON.stringify(dehydratedKeys));
    assert.ok(dehydratedKeys.signatures?.[userId]?.[keyId(keys.self_signing_keys[userId])], "dehydrated device not cross-signed");
    assert.ok((await accountData(first, "org.matrix.msc3814")).encrypted, "the dehydration key is not in secret storage");

    note("bob and alice in an encrypted room; alice's device goes away");
    const bobReg = await register("bob", bobUrl);
    const bob = await startClient(bobReg, {}, bobUrl);
    const { room_id: roomId } = await first.createRoom({
      invite: [bobReg.user_id],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
    });
    await until("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId);
    await until("bob knows the room is encrypted", async () => bob.getRoom(roomId) && (await bob.getCrypto().isEncryptionEnabledInRoom(roomId)));
    await until("bob sees alice's dehydrated device", async () => {
      const devices = await bob.getCrypto().getUserDeviceInfo([userId], true);
      return devices.get(userId)?.get(dehydrated.device_id);
    });
    first.stopClient();

    note("bob sends while alice has no device online");
    const body = "for alice's next device";
    const sent = (await bob.sendMessage(roomId, { msgtype: "m.text", body })).event_id;
    // Over federation the room key (an EDU) and the event (a PDU) travel on
    // their own: wait until alice's server has the event, which was sent after.
    await until("bob's message on alice's server", () =>
      http(first, Method.Get, `/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(sent)}`).catch(() => null));

    note("alice's new device rehydrates");
    const session2 = await login(userId, "alice new device");
    const second = await startClient(session2, { key: decodeRecoveryKey(recoveryKey) });
    const crypto2 = second.getCrypto();
    await until("the room on the new device", () => second.getRoom(roomId));
    const before = await history(second, roomId);
    assert.equal(before.find((e) => e.id === sent)?.body, undefined, "decrypted before rehydrating");
    await until("our cross-signing keys", () => crypto2.userHasCrossSigningKeys(userId, true));
    await crypto2.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(userId, []) });
    let progress = [0, 0];
    second.on(CryptoEvent.RehydrationProgress, (roomKeys, toDevice) => (progress = [roomKeys, toDevice]));
    const completed = new Promise((resolve) => second.once(CryptoEvent.RehydrationCompleted, resolve));
    const errored = new Promise((resolve) => second.once(CryptoEvent.RehydrationError, resolve));
    await crypto2.startDehydration();
    const outcome = await Promise.race([completed.then(() => "completed"), errored.then((m) => `error: ${m}`)]);
    assert.equal(outcome, "completed", "rehydration");
    assert.ok(progress[0] >= 1, `rehydration got ${progress[0]} room keys from ${progress[1]} to-device events`);
    out(`   rehydration: ${progress[0]} room keys from ${progress[1]} to-device events`);
    const after = await history(second, roomId);
    assert.equal(after.find((e) => e.id === sent)?.body, body, "bob's message after rehydrating");
    // A new dehydrated device replaces the one used.
    const replaced = await dehydratedDevice(second);
    assert.notEqual(replaced.device_id, dehydrated.device_id, "the dehydrated device was not replaced");
    second.stopClient();
    bob.stopClient();
  },
};

const run = parts[part];
if (!run) {
  fail(`unknown part ${part}; parts: ${Object.keys(parts).join(", ")}`);
  process.exit(64);
}
try {
  await run();
  out(`ok ${part}`);
  process.exit(0);
} catch (e) {
  fail(`last SDK log lines:\n${sdkLog.slice(-80).join("\n")}\n`);
  fail(`FAIL ${part} at step: ${step}\n${e.stack ?? e}`);
  if (e.data) fail(`response body: ${JSON.stringify(e.data)}`);
  process.exit(1);
}
