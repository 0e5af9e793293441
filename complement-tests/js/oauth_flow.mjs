// The OAuth 2.0 sign-in page in headless Chromium (Debian's chromium driven
// by playwright-core): the authorization URL renders, the password form
// signs in, and the browser lands at the app's redirect URI with a code,
// which proves the page's form-action policy lets the redirect through.
// Usage: node oauth_flow.mjs <json>, with {url, username, password, client,
//   artifacts}: `client` is the app's origin, answered by a address that need not exist.
// Prints one JSON line: {title, client, redirectedTo}.
import { chromium } from "playwright-core";

const job = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 800, height: 1000 } });
  // The app's address does not resolve: what counts is that the browser
  // asks for it (a redirect after a form is not routable in playwright).
  let redirectedTo = null;
  const blocked = [];
  const page = await context.newPage();
  page.on("console", (m) => blocked.push(m.text()));
  const reachedApp = new Promise((resolve) =>
    page.on("request", (r) => {
      if (r.url().startsWith(`${job.client}/`)) {
        redirectedTo = r.url();
        resolve();
      }
    }),
  );
  await page.goto(job.url);
  const result = { title: await page.title(), client: await page.textContent("#client-name"), redirectedTo: null };
  await page.screenshot({ path: `${job.artifacts}/oauth-sign-in.png`, fullPage: true });
  await page.fill("#username", job.username);
  await page.fill("#password", job.password);
  await page.click("#sign-in");
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`no redirect to the app; console: ${blocked.join("\n")}`)), 20000),
  );
  await Promise.race([reachedApp, timeout]);
  result.redirectedTo = redirectedTo;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
