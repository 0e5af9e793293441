// A test OpenID provider on loopback (oidc-provider), the peer of the SSO
// black-box tests. One static confidential client, accounts from a JSON file,
// a login page of our own, no consent screen.
//
// Usage: node oidc_provider.mjs --port P --client-id ID --client-secret SECRET
//          --redirect-uri URI [--redirect-uri URI …] --accounts FILE.json
// Accounts file: {"alice": {"sub": "u-1001", "preferred_username": "alice",
//   "name": "Alice Liddell", "picture": "http://...", "groups": ["matrix"]}}
// Prints `ready http://127.0.0.1:P` on stdout once listening.
//
// Browser flow: /auth?... -> 303 /interaction/<uid> (login form: input[name=login],
// input[name=password], button[type=submit]) -> POST /interaction/<uid> -> 303
// /auth/<uid> -> 303 redirect_uri?code=...&state=...&iss=...
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { parseArgs } from "node:util";

import Provider from "oidc-provider";

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    "client-id": { type: "string" },
    "client-secret": { type: "string" },
    "redirect-uri": { type: "string", multiple: true },
    accounts: { type: "string" },
  },
});
for (const name of ["port", "client-id", "client-secret", "redirect-uri", "accounts"]) {
  if (!args[name]) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
}
const issuer = `http://127.0.0.1:${args.port}`;

// Login name -> claims; findAccount is keyed by `sub`, the login form by login name.
const byLogin = JSON.parse(readFileSync(args.accounts, "utf8"));
const bySub = new Map(Object.values(byLogin).map((claims) => [claims.sub, claims]));

// Our own RS256 key, so the provider doesn't fall back to its published dev keys.
const signingKey = {
  ...generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" }),
  alg: "RS256",
  use: "sig",
  kid: randomBytes(8).toString("hex"),
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: args["client-id"],
      client_secret: args["client-secret"],
      // application_type "web" (the default) accepts http redirect URIs for the
      // code flow; only the implicit flow would insist on https. The token
      // endpoint takes client_secret_post as well as the registered basic.
      redirect_uris: args["redirect-uri"],
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(16).toString("hex")] },
  // Claim keys become scopes: openid, profile, groups.
  claims: {
    openid: ["sub"],
    profile: ["preferred_username", "name", "picture"],
    groups: ["groups"],
  },
  async findAccount(_ctx, sub) {
    const claims = bySub.get(sub);
    if (!claims) return undefined;
    return { accountId: sub, async claims() { return { ...claims, sub }; } };
  },
  // PKCE is checked if the client sends a challenge, never required (the default
  // already requires it only for public clients; say so explicitly).
  pkce: { required: () => false },
  // Explicit lifetimes (seconds) keep the defaults' NOTICE lines out of the log.
  ttl: { AccessToken: 3600, AuthorizationCode: 600, IdToken: 3600, Interaction: 3600, Grant: 86400, Session: 86400 },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // No consent screen: the static client is granted every scope and claim.
  // oidc-provider hands out only what was requested, so over-granting is harmless.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) {
      const grant = await Grant.find(existing);
      if (grant?.accountId === ctx.oidc.session.accountId) return grant;
    }
    const grant = new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope("openid profile groups");
    grant.addOIDCClaims(["sub", "preferred_username", "name", "picture", "groups"]);
    await grant.save();
    return grant;
  },
});

// Make failures visible in the test's log file.
for (const event of ["server_error", "authorization.error", "grant.error", "userinfo.error", "interaction.error"]) {
  provider.on(event, (_ctx, err) =>
    console.error(`${event}: ${err.message}: ${err.error_description ?? ""} ${err.error_detail ?? ""}`.trimEnd()),
  );
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, { login = "", error = "" } = {}) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in - test OpenID provider</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p id="error">${escape(error)}</p>` : ""}
<form id="login-form" method="post" action="/interaction/${escape(uid)}" autocomplete="off">
  <label>Login <input id="login" name="login" type="text" value="${escape(login)}" required autofocus></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Sign in</button>
</form>
</body></html>`;
}

function send(res, status, html) {
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
  res.end(html);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

// Our login page: GET shows the form, POST checks the login name (the
// password is ignored) and hands the account to oidc-provider.
async function interaction(req, res, uid) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    // Unknown/expired interaction, or the _interaction cookie is missing.
    return send(res, 400, `<p id="error">${escape(err.message)}</p>`);
  }
  if (details.uid !== uid) return send(res, 400, '<p id="error">interaction mismatch</p>');
  if (details.prompt.name !== "login") {
    // loadExistingGrant makes consent unnecessary; anything else is a bug here.
    return send(res, 500, `<p id="error">unexpected prompt ${escape(details.prompt.name)}</p>`);
  }
  if (req.method === "GET") return send(res, 200, loginPage(uid, { login: details.params.login_hint ?? "" }));
  const form = await readForm(req);
  const login = form.get("login") ?? "";
  const account = Object.hasOwn(byLogin, login) ? byLogin[login] : undefined;
  if (!account) return send(res, 200, loginPage(uid, { login, error: `Unknown login "${login}"` }));
  await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)$/.exec(new URL(req.url, issuer).pathname);
  if (match && (req.method === "GET" || req.method === "POST")) {
    interaction(req, res, match[1]).catch((err) => {
      console.error("interaction failed:", err);
      if (!res.headersSent) send(res, 500, `<p id="error">${escape(err.message)}</p>`);
    });
    return;
  }
  callback(req, res);
});
server.listen(Number(args.port), "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
// Nothing to persist: exit at once, whatever connections are open.
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
