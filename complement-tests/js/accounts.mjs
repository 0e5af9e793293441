// The accounts slice driven by matrix-js-sdk, the SDK under Element Web.
// Usage: node accounts.mjs <homeserver url>. Exits non-zero on the first failure.
import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";

const baseUrl = process.argv[2];
const password = "correct horse battery";
const name = `js${Math.random().toString(16).slice(2, 12)}`;

// Registration with user-interactive auth: the SDK's first call returns the flows.
const anon = sdk.createClient({ baseUrl });
let session;
try {
  await anon.registerRequest({ username: name, password });
  assert.fail("registration without auth must ask for a stage");
} catch (e) {
  assert.equal(e.httpStatus, 401);
  session = e.data.session;
  assert.deepEqual(e.data.flows, [{ stages: ["m.login.dummy"] }]);
}
const reg = await anon.registerRequest({
  username: name,
  password,
  auth: { type: "m.login.dummy", session },
  initial_device_display_name: "js register",
});
assert.equal(reg.user_id, `@${name}:localhost`);

const login = await anon.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: name },
  password,
  initial_device_display_name: "js web",
});
const client = sdk.createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });

const who = await client.whoami();
assert.equal(who.user_id, reg.user_id);
assert.equal(who.device_id, login.device_id);

await client.setDisplayName("JS Tester");
const profile = await client.getProfileInfo(reg.user_id);
assert.equal(profile.displayname, "JS Tester");

const { devices } = await client.getDevices();
assert.deepEqual(devices.map((d) => d.device_id).sort(), [reg.device_id, login.device_id].sort());

try {
  await client.deleteMultipleDevices([reg.device_id]);
  assert.fail("deleting a device must ask for the password");
} catch (e) {
  assert.equal(e.httpStatus, 401);
  await client.deleteMultipleDevices([reg.device_id], {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: reg.user_id },
    password,
    session: e.data.session,
  });
}
const after = await client.getDevices();
assert.deepEqual(after.devices.map((d) => d.device_id), [login.device_id]);

await client.setAccountData("org.example.settings", { theme: "dark" });
const data = await client.getAccountDataFromServer("org.example.settings");
assert.deepEqual(data, { theme: "dark" });

await client.logout(true);
const stale = sdk.createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id });
try {
  await stale.whoami();
  assert.fail("the old token must be dead");
} catch (e) {
  assert.equal(e.httpStatus, 401);
  assert.equal(e.errcode, "M_UNKNOWN_TOKEN");
}
console.log("js-sdk accounts scenario passed");
