// A small but real OpenID Connect provider (oidc-provider) for the end-to-end
// tests. It is driven with plain HTTP: there is no login page, a test posts the
// login result to /interaction/:uid/login instead. See selfcheck.mjs for the
// exact request sequence.
//
// Env:
//   IDP_CERT, IDP_KEY        PEM files for the HTTPS listener (cert for "localhost")
//   REDIRECT_URIS            comma-separated redirect_uris registered for every client
//   CLIENT_JWKS              optional public JWK set; registers the private_key_jwt client
//   BACKCHANNEL_LOGOUT_URI   optional backchannel_logout_uri for every client
//
// stdout carries exactly one line, {"issuer":"https://localhost:PORT"}, once
// listening; everything else goes to stderr.
//
// Habits of real IdPs it emulates, for tether's provider presets:
//   - the client "tether-google" is refused any authorization request carrying
//     prompt=login, as Google refuses it (max_age=0 must do);
//   - the claims request parameter (Entra ID asks for authentication contexts as an
//     essential "acrs" ID token claim); the login form's acrs=c1,c2 is what the
//     ID token then carries;
//   - a second spelling of the issuer in the ID token (Google's tokens may carry
//     "accounts.google.com" without the scheme): the "bare_issuer" mutation.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

import { SignJWT, calculateJwkThumbprint, decodeJwt, decodeProtectedHeader } from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info, which is stdout; the
// parent reads stdout for the issuer line, so send all console output to stderr.
console.log = console.info = console.debug = console.error;

const log = (...args) => console.error('[idp]', ...args);

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    log(`${name} must be set`);
    process.exit(2);
  }
  return value;
}

const tlsOptions = {
  cert: fs.readFileSync(requireEnv('IDP_CERT')),
  key: fs.readFileSync(requireEnv('IDP_KEY')),
};
const redirectUris = requireEnv('REDIRECT_URIS').split(',').map((s) => s.trim()).filter(Boolean);
const clientJwks = process.env.CLIENT_JWKS ? JSON.parse(process.env.CLIENT_JWKS) : undefined;
const backchannelLogoutUri = process.env.BACKCHANNEL_LOGOUT_URI || undefined;

// --- signing keys ----------------------------------------------------------
// Fresh keys each run. The RSA key comes first and ID tokens use RS256 (the
// client default); the EC key is published too so ES256 is advertised.
async function signingKey(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.kid = await calculateJwkThumbprint(jwk);
  jwk.alg = alg;
  jwk.use = 'sig';
  return { alg, kid: jwk.kid, jwk, privateKey };
}

const keys = [
  await signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
  await signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
];
const keyByKid = new Map(keys.map((k) => [k.kid, k]));
const idTokenKey = keys[0];

// Same algorithms, never published: used to forge "bad_signature" tokens.
const impostors = {
  RS256: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
  ES256: crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
};

// --- clients ---------------------------------------------------------------
const common = {
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...(backchannelLogoutUri && {
    backchannel_logout_uri: backchannelLogoutUri,
    backchannel_logout_session_required: true,
  }),
};
const clients = [
  {
    ...common, client_id: 'tether', client_secret: 'tether-secret', token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    ...common, client_id: 'tether-google', client_secret: 'tether-secret', token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    ...common, client_id: 'tether-post', client_secret: 'tether-secret', token_endpoint_auth_method: 'client_secret_post',
  },
];
if (clientJwks) {
  // token_endpoint_auth_signing_alg is left unset: any asymmetric alg is accepted.
  clients.push({
    ...common, client_id: 'tether-pkjwt', token_endpoint_auth_method: 'private_key_jwt', jwks: clientJwks,
  });
}

// The authentication contexts each account's last login satisfied (the form's acrs).
const contextsByAccount = new Map();

// --- listener --------------------------------------------------------------
// The issuer needs the port, which the OS picks: listen first, attach the
// provider afterwards (nobody can connect before the issuer line is printed).
const server = https.createServer(tlsOptions);
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const issuer = `https://localhost:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: keys.map((k) => k.jwk) },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  // The last three are Keycloak-style: a level's name and levels as numbers.
  acrValues: ['urn:example:mfa', 'urn:example:pwd', 'gold', '1', '2'],
  // By default the ID token only carries the claims of the requested scopes,
  // acr only when acr_values was sent, auth_time only with max_age/prompt=login,
  // and amr never (it is not a supported claim). Tying them to "openid" puts
  // them in every ID token; each is left out when the login did not set it.
  // acrs (Entra ID's authentication contexts) is only ever asked for through the
  // claims parameter.
  claims: {
    acr: null, amr: null, auth_time: null, sid: null, iss: null, acrs: null,
    openid: ['sub', 'acr', 'amr', 'auth_time'],
  },
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    claimsParameter: { enabled: true },
  },
  // The tests' client always sends PKCE; insist on it so a regression shows.
  pkce: { required: () => true },
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, ...(contextsByAccount.has(sub) && { acrs: contextsByAccount.get(sub) }) }),
  }),
  // Errors as JSON instead of an HTML page: easier to assert on in a test.
  renderError: (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
  // Plain numbers also keep oidc-provider from printing "you SHOULD change" notices.
  ttl: {
    AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 3600, Session: 86400, Grant: 86400,
  },
});

// sid is only put in ID tokens for clients with a back-channel logout URI (or
// when the claims parameter asks for it); the tests want it in every one.
provider.Client.prototype.includeSid = () => true;

// One line per rejected request, so a failing test's stderr says why.
const describe = (err) => (err.error
  ? `${err.error}: ${err.error_description}${err.error_detail ? ` (${err.error_detail})` : ''}`
  : (err.expose || err instanceof SyntaxError ? err.message : err.stack));
for (const event of ['server_error', 'authorization.error', 'grant.error', 'backchannel.error']) {
  provider.on(event, (...args) => log(event, describe(args.find((a) => a instanceof Error))));
}

// --- helpers ---------------------------------------------------------------
async function readBody(ctx) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > 64 * 1024) ctx.throw(413);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  if (ctx.is('application/json')) return JSON.parse(text);
  return Object.fromEntries(new URLSearchParams(text));
}

function sendJson(ctx, status, body) {
  ctx.status = status;
  ctx.body = body;
}

function badRequest(ctx, description) {
  sendJson(ctx, 400, { error: 'invalid_request', error_description: description });
}

async function loadInteraction(ctx, uid) {
  // interactionDetails finds the interaction from the _interaction cookie (its
  // path is /interaction/:uid), so the request must carry the IdP's cookies.
  const interaction = await provider.interactionDetails(ctx.req, ctx.res);
  if (interaction.uid !== uid) ctx.throw(400, 'interaction uid does not match the cookie');
  return interaction;
}

// Login and consent in one step.
async function finishLogin(ctx, uid) {
  const interaction = await loadInteraction(ctx, uid);
  const form = await readBody(ctx);
  if (!form.login) return badRequest(ctx, 'login is required');
  if (form.auth_time && !/^\d+$/.test(form.auth_time)) return badRequest(ctx, 'auth_time must be epoch seconds');

  const { params, prompt } = interaction;
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId: form.login, clientId: params.client_id });
  const scopes = new Set(['openid', ...String(params.scope ?? '').split(' ').filter(Boolean)]);
  grant.addOIDCScope([...scopes].join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  // Claims asked for through the claims parameter are consented to at once, too (the
  // login prompt comes before consent, so its details do not list them yet).
  if (params.claims) {
    const asked = JSON.parse(params.claims);
    grant.addOIDCClaims([...Object.keys(asked.id_token ?? {}), ...Object.keys(asked.userinfo ?? {})]);
  }
  const grantId = await grant.save();

  const login = { accountId: form.login };
  if (form.acr) login.acr = form.acr;
  if (form.amr) login.amr = form.amr.split(',').map((s) => s.trim()).filter(Boolean);
  if (form.auth_time) login.ts = Number(form.auth_time); // lets a test claim a stale login
  if (form.acrs) contextsByAccount.set(form.login, form.acrs.split(',').map((s) => s.trim()).filter(Boolean));
  else contextsByAccount.delete(form.login);

  // Answers 303 to /auth/:uid itself, so Koa must not write a response too.
  ctx.respond = false;
  await provider.interactionFinished(ctx.req, ctx.res, { login, consent: { grantId } }, { mergeWithLastSubmission: false });
}

// --- test hooks ------------------------------------------------------------
const MUTATIONS = new Set(['bad_signature', 'expired', 'wrong_audience', 'bare_issuer']);
let nextIdTokenMutation;

async function mutateIdToken(idToken, mode) {
  const header = decodeProtectedHeader(idToken);
  const claims = decodeJwt(idToken);
  let key = keyByKid.get(header.kid).privateKey;
  if (mode === 'bad_signature') key = impostors[header.alg];
  if (mode === 'expired') {
    claims.iat -= 2 * 3600;
    claims.exp -= 2 * 3600;
  }
  if (mode === 'wrong_audience') claims.aud = 'someone-else';
  if (mode === 'bare_issuer') claims.iss = issuer.replace(/^https:\/\//, '');
  return new SignJWT(claims).setProtectedHeader(header).sign(key);
}

// OpenID Connect Back-Channel Logout 1.0, section 2.4.
async function logoutToken({ sub, sid, aud }) {
  const claims = {
    events: { 'http://schemas.openid.net/event/backchannel-logout': {} },
    ...(sub !== undefined && { sub }),
    ...(sid !== undefined && { sid }),
  };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: idTokenKey.alg, kid: idTokenKey.kid, typ: 'logout+jwt' })
    .setIssuer(issuer)
    .setAudience(aud)
    .setIssuedAt()
    .setExpirationTime('2m')
    .setJti(crypto.randomUUID())
    .sign(idTokenKey.privateKey);
}

// --- routes outside oidc-provider ------------------------------------------
const tokenPath = new URL(provider.urlFor('token')).pathname;
const authorizationPath = new URL(provider.urlFor('authorization')).pathname;
// Clients whose IdP, like Google, supports no prompt=login.
const NO_PROMPT_LOGIN = new Set(['tether-google']);

provider.use(async (ctx, next) => {
  const interactionMatch = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  try {
    if (ctx.path === authorizationPath && NO_PROMPT_LOGIN.has(ctx.query.client_id)
        && String(ctx.query.prompt ?? '').split(' ').includes('login')) {
      log(`refused prompt=login for ${ctx.query.client_id}`);
      return badRequest(ctx, 'prompt=login is not supported by this provider');
    }
    if (interactionMatch && ctx.method === 'GET' && !interactionMatch[2]) {
      const { uid, prompt, params } = await loadInteraction(ctx, interactionMatch[1]);
      return sendJson(ctx, 200, { uid, prompt: prompt.name, params });
    }
    if (interactionMatch && ctx.method === 'POST' && interactionMatch[2]) {
      return await finishLogin(ctx, interactionMatch[1]);
    }
    if (ctx.path === '/test/mutate-next-id-token' && ctx.method === 'POST') {
      const { mode } = await readBody(ctx);
      if (!MUTATIONS.has(mode)) return badRequest(ctx, `mode must be one of ${[...MUTATIONS]}`);
      nextIdTokenMutation = mode;
      return sendJson(ctx, 200, { mode });
    }
    if (ctx.path === '/test/logout-token' && ctx.method === 'POST') {
      const body = await readBody(ctx);
      if (!body.aud) return badRequest(ctx, 'aud is required');
      return sendJson(ctx, 200, { logout_token: await logoutToken(body) });
    }
  } catch (err) {
    ctx.respond = true;
    log(ctx.method, ctx.path, describe(err));
    const status = err instanceof SyntaxError ? 400 : (err.statusCode ?? err.status ?? 500);
    return sendJson(ctx, status, {
      error: err.error ?? (status < 500 ? 'invalid_request' : 'server_error'),
      error_description: err.error_description ?? err.message,
    });
  }

  await next();

  // A pending mutation is spent on the next successful token response.
  if (ctx.path === tokenPath && nextIdTokenMutation && ctx.status === 200 && ctx.body?.id_token) {
    const mode = nextIdTokenMutation;
    nextIdTokenMutation = undefined;
    ctx.body = { ...ctx.body, id_token: await mutateIdToken(ctx.body.id_token, mode) };
    log(`token response id_token replaced (${mode})`);
  }
});

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer })}\n`, () => log(`listening, issuer ${issuer}`));

// --- shutdown --------------------------------------------------------------
// Stop when the parent closes our stdin (or dies). Only a pipe is watched: a
// /dev/null or closed stdin would otherwise end the process at once.
function stop(why) {
  log(`stopping: ${why}`);
  process.exit(0);
}
function stdinIsPipe() {
  try {
    const stat = fs.fstatSync(0);
    return stat.isFIFO() || stat.isSocket();
  } catch {
    return false; // no fd 0 at all
  }
}
if (stdinIsPipe()) {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.resume();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
