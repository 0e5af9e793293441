// One single sign-on login in headless Chromium (Debian's chromium driven by
// playwright-core), from the client's redirect to the login token:
// conduit's redirect -> the provider's login form -> (new identity) the
// username form -> "Continue to <app>?" -> the app's redirectUrl.
// Usage: node sso_login.mjs <json>, with
//   {url, path, login, pick, artifacts, name}: `path` is the redirect path
//   (with its query) on the homeserver `url`; `login` the provider login
//   name; `pick` the username to type if the form comes (null keeps the
//   suggestion); `click` an optional selector to follow first; screenshots
//   go to `artifacts` as `name-*.png`.
// Prints one JSON line: {loginToken, redirectedTo, form: {prefilled, error}|null,
//   confirm: {title, userId}, done: text of a UIA completion page|null}.
import { chromium } from "playwright-core";

const job = JSON.parse(process.argv[2]);
const CLIENT = "http://client.invalid";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  // A fresh context: no cookies from an earlier login at the provider.
  const context = await browser.newContext({ viewport: { width: 800, height: 1000 } });
  // The app waiting at redirectUrl is this stub.
  let redirectedTo = null;
  await context.route(`${CLIENT}/**`, (route) => {
    redirectedTo = route.request().url();
    return route.fulfill({ status: 200, contentType: "text/plain", body: "the app" });
  });
  const page = await context.newPage();
  const shot = (step) => page.screenshot({ path: `${job.artifacts}/${job.name}-${step}.png`, fullPage: true });
  await page.goto(`${job.url}${job.path}`);
  // A page of ours first (the UIA fallback's "Continue with …").
  if (job.click) {
    await Promise.all([page.waitForNavigation(), page.click(job.click)]);
  }

  // The provider's login form (a Mastodon stub signs in without one).
  if (await page.isVisible("#login-form")) {
    await page.fill("#login", job.login);
    await page.fill("#password", "any");
    await Promise.all([page.waitForURL((u) => !u.pathname.startsWith("/interaction")), page.click("#submit")]);
  }
  const result = { loginToken: null, redirectedTo: null, form: null, confirm: null, done: null };

  if (await page.isVisible("#done")) {
    result.done = await page.textContent("#done");
    await shot("done");
    console.log(JSON.stringify(result));
    process.exit(0);
  }
  if (await page.isVisible("#create")) {
    result.form = {
      prefilled: await page.inputValue("#username"),
      error: (await page.isVisible("#error")) ? await page.textContent("#error") : null,
    };
    await shot("username");
    if (job.pick !== null) {
      await page.fill("#username", job.pick);
    }
    await Promise.all([page.waitForNavigation(), page.click("#create")]);
    if (await page.isVisible("#create")) {
      throw new Error(`username refused: ${await page.textContent("#error")}`);
    }
  }
  if (!(await page.isVisible("#continue"))) {
    await shot("error");
    const why = (await page.isVisible("#error")) ? await page.textContent("#error") : await page.content();
    throw new Error(`no confirmation page: ${why}`);
  }
  result.confirm = { title: await page.title(), userId: await page.textContent("#user-id") };
  await shot("confirm");
  await Promise.all([page.waitForURL(`${CLIENT}/**`), page.click("#continue")]);
  result.redirectedTo = redirectedTo;
  result.loginToken = new URL(redirectedTo).searchParams.get("loginToken");
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
