// The invite page in headless Chromium (Debian's chromium driven by
// playwright-core): it renders (screenshot saved), opening it uses nothing,
// its form registers an account, and a second visit shows it used up.
// Usage: node invite_page.mjs <homeserver url> <invite link> <artifacts dir>
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [baseUrl, link, artifacts] = process.argv.slice(2);
const token = link.split("/").pop();
const validity = async () => {
  const r = await fetch(`${baseUrl}/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
  return (await r.json()).valid;
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 800, height: 1300 } });
  let response = await page.goto(link);
  assert.equal(response.status(), 200);
  assert.match(await page.title(), /Join localhost/);
  assert.match(await page.textContent("#uses"), /1 of 1 uses left, valid until \d{4}-\d\d-\d\d/);
  assert.equal(await page.textContent("#token"), token);
  assert.ok(await page.isVisible(".qr svg"), "the QR code renders");
  assert.equal(response.headers()["referrer-policy"], "no-referrer");
  await page.screenshot({ path: `${artifacts}/invite-page.png`, fullPage: true });

  // Opening (and reloading) the page uses nothing.
  await page.reload();
  assert.equal(await validity(), true, "GET must not consume the invite");

  // Mismatched passwords: an error, nothing used.
  await page.fill("#username", "chromium_user");
  await page.fill("#password", "a long password");
  await page.fill("#confirm", "another one");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.match(await page.textContent("#error"), /do not match/);
  assert.equal(await page.inputValue("#username"), "chromium_user", "the username is kept");
  assert.equal(await validity(), true);

  await page.fill("#password", "a long password");
  await page.fill("#confirm", "a long password");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.match(await page.textContent("#created"), /@chromium_user:localhost is ready/);
  await page.screenshot({ path: `${artifacts}/invite-page-created.png`, fullPage: true });
  assert.equal(await validity(), false, "the account used the invite");

  // The account works: a password login.
  const login = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "chromium_user" }, password: "a long password" }),
  });
  assert.equal(login.status, 200);

  // A second visit says the link is used up.
  response = await page.goto(link);
  assert.equal(response.status(), 404);
  assert.match(await page.textContent("body"), /used up/);
  console.log("invite page scenario passed");
} finally {
  await browser.close();
}
