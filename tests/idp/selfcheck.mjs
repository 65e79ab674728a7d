// Starts idp.mjs and drives it exactly as the Rust end-to-end tests do, printing
// every request, so it doubles as a readable spec of the HTTP sequence.
//
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
//     -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem -out cert.pem
//   NODE_EXTRA_CA_CERTS=cert.pem IDP_CERT=cert.pem IDP_KEY=key.pem node selfcheck.mjs
//
// REDIRECT_URIS defaults to http://127.0.0.1:9/callback: nothing needs to listen
// there, the redirect is read from the Location header and never followed.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { createInterface } from 'node:readline';
import { strict as assert } from 'node:assert';

import {
  SignJWT, createLocalJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify,
} from 'jose';

const redirectUri = (process.env.REDIRECT_URIS ?? 'http://127.0.0.1:9/callback').split(',')[0];

// A key pair for the private_key_jwt client; the IdP gets the public half.
const clientKey = await generateKeyPair('ES256');
const clientJwk = { ...await exportJWK(clientKey.publicKey), kid: 'tether-client-1', alg: 'ES256', use: 'sig' };

// --- start the IdP ---------------------------------------------------------
const child = spawn(process.execPath, [new URL('./idp.mjs', import.meta.url).pathname], {
  env: {
    ...process.env,
    REDIRECT_URIS: process.env.REDIRECT_URIS ?? redirectUri,
    CLIENT_JWKS: JSON.stringify({ keys: [clientJwk] }),
    BACKCHANNEL_LOGOUT_URI: process.env.BACKCHANNEL_LOGOUT_URI ?? 'http://127.0.0.1:9/backchannel-logout',
  },
  stdio: ['pipe', 'pipe', 'inherit'],
});
const exited = new Promise((resolve) => { child.on('exit', (code, signal) => resolve({ code, signal })); });
const { issuer } = JSON.parse(await new Promise((resolve, reject) => {
  createInterface({ input: child.stdout }).once('line', resolve);
  child.once('exit', () => reject(new Error('idp exited before printing its issuer')));
}));
console.log(`issuer line: ${JSON.stringify({ issuer })}`);

// --- a tiny path-aware cookie jar (what a browser or reqwest would do) -----
class Jar {
  cookies = new Map(); // "name;path" -> { name, value, path }

  store(url, res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const [name, ...rest] = pair.split('=');
      const value = rest.join('=');
      const attr = Object.fromEntries(attrs.map((a) => {
        const [k, ...v] = a.split('=');
        return [k.toLowerCase(), v.join('=')];
      }));
      const path = attr.path ?? new URL(url).pathname.replace(/\/[^/]*$/, '') ?? '/';
      const expired = attr['max-age'] === '0' || (attr.expires && Date.parse(attr.expires) <= Date.now());
      if (expired || value === '') this.cookies.delete(`${name};${path}`);
      else this.cookies.set(`${name};${path}`, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.cookies.values()]
      .filter(({ path }) => pathname === path || pathname.startsWith(path.endsWith('/') ? path : `${path}/`))
      .map(({ name, value }) => `${name}=${value}`).join('; ');
  }
}

const short = (url) => url.replace(issuer, '');

async function request(jar, method, url, { headers = {}, body } = {}) {
  const cookie = jar?.header(url);
  const res = await fetch(url, {
    method, body, redirect: 'manual', headers: { ...headers, ...(cookie && { cookie }) },
  });
  jar?.store(url, res);
  const sent = cookie ? cookie.split('; ').map((c) => c.split('=')[0]).join(',') : '-';
  const setNames = res.headers.getSetCookie().map((c) => c.split(';')[0].split('=')[0]);
  const location = res.headers.get('location');
  console.log(`  ${method} ${short(url).slice(0, 90)} -> ${res.status}`
    + ` | cookies sent: ${sent}${setNames.length ? ` | set: ${setNames.join(',')}` : ''}`
    + `${location ? ` | Location: ${short(location).slice(0, 110)}` : ''}`);
  return res;
}

// --- the browser part of the code flow -------------------------------------
const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
const jwks = createLocalJWKSet(await (await fetch(discovery.jwks_uri)).json());

// Runs one login; returns the token endpoint's JSON body and what was sent.
async function codeFlow({
  clientId = 'tether', auth = 'basic', acrValues = 'urn:example:mfa', login = {}, jar = new Jar(), quiet = false,
} = {}) {
  const log = console.log;
  if (quiet) console.log = () => {};
  try {
    const verifier = crypto.randomBytes(32).toString('base64url');
    const state = crypto.randomBytes(16).toString('base64url');
    const nonce = crypto.randomBytes(16).toString('base64url');
    const authUrl = new URL(discovery.authorization_endpoint);
    authUrl.search = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: 'openid',
      state,
      nonce,
      code_challenge: crypto.hash('sha256', verifier, 'base64url'),
      code_challenge_method: 'S256',
      prompt: 'login',
      max_age: '0',
      login_hint: 'alice',
      ...(acrValues && { acr_values: acrValues }),
    });

    // 1. authorization request -> 303 to /interaction/:uid
    let res = await request(jar, 'GET', authUrl.href);
    assert.equal(res.status, 303);
    const interactionUrl = new URL(res.headers.get('location'), issuer).href;

    // 2. what is being asked
    res = await request(jar, 'GET', interactionUrl);
    assert.equal(res.status, 200);
    const details = await res.json();
    console.log(`    ${JSON.stringify(details)}`);

    // 3. log in (and consent) -> 303 to /auth/:uid
    res = await request(jar, 'POST', `${interactionUrl}/login`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        login: 'alice', acr: 'urn:example:mfa', amr: 'pwd,otp', ...login,
      }),
    });
    assert.equal(res.status, 303);

    // 4. resume -> 303 to the redirect_uri (not followed, just parsed)
    let location = new URL(res.headers.get('location'), issuer).href;
    while (location.startsWith(issuer)) {
      res = await request(jar, 'GET', location);
      assert.ok([302, 303].includes(res.status), `expected a redirect, got ${res.status}: ${await res.text()}`);
      location = new URL(res.headers.get('location'), issuer).href;
    }
    const callback = new URL(location);
    assert.equal(`${callback.origin}${callback.pathname}`, redirectUri);
    assert.equal(callback.searchParams.get('state'), state);
    assert.equal(callback.searchParams.get('iss'), issuer);
    const code = callback.searchParams.get('code');
    assert.ok(code);

    // 5. token request, server to server, no cookies
    const form = {
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
    };
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    if (auth === 'basic') {
      // RFC 6749 2.3.1: id and secret are form-urlencoded before base64.
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent('tether-secret')}`).toString('base64')}`;
    } else if (auth === 'post') {
      Object.assign(form, { client_id: clientId, client_secret: 'tether-secret' });
    } else if (auth === 'private_key_jwt') {
      const assertion = await new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: clientJwk.kid })
        .setIssuer(clientId).setSubject(clientId).setAudience(discovery.token_endpoint)
        .setJti(crypto.randomUUID()).setIssuedAt().setExpirationTime('1m')
        .sign(clientKey.privateKey);
      Object.assign(form, {
        client_id: clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      });
    }
    res = await request(null, 'POST', discovery.token_endpoint, { headers, body: new URLSearchParams(form) });
    const tokens = await res.json();
    assert.equal(res.status, 200, JSON.stringify(tokens));
    return { tokens, nonce, clientId };
  } finally {
    console.log = log;
  }
}

function verify({ tokens, nonce, clientId }) {
  return jwtVerify(tokens.id_token, jwks, { issuer, audience: clientId }).then(({ payload }) => {
    assert.equal(payload.nonce, nonce);
    return payload;
  });
}

// --- main flow -------------------------------------------------------------
console.log('\ndiscovery:', JSON.stringify({
  issuer: discovery.issuer,
  authorization_endpoint: discovery.authorization_endpoint,
  token_endpoint: discovery.token_endpoint,
  jwks_uri: discovery.jwks_uri,
  token_endpoint_auth_methods_supported: discovery.token_endpoint_auth_methods_supported,
  id_token_signing_alg_values_supported: discovery.id_token_signing_alg_values_supported,
}));

console.log('\ncode flow (tether, client_secret_basic):');
const main = await codeFlow();
console.log('\ntoken response:', JSON.stringify({ ...main.tokens, id_token: '<JWT>', access_token: '<opaque>' }));
console.log('id_token header:', JSON.stringify(decodeProtectedHeader(main.tokens.id_token)));
const claims = await verify(main);
console.log('id_token claims:', JSON.stringify(claims));
for (const claim of ['sub', 'auth_time', 'nonce', 'acr', 'amr', 'sid']) assert.ok(claim in claims, `${claim} missing`);
assert.equal(claims.sub, 'alice');
assert.equal(claims.acr, 'urn:example:mfa');
assert.deepEqual(claims.amr, ['pwd', 'otp']);

const check = (name, fn) => fn().then(() => console.log(`ok   ${name}`));

console.log('\nother clients and logins:');
await check('client_secret_post (tether-post)', async () => verify(await codeFlow({ clientId: 'tether-post', auth: 'post', quiet: true })));
await check('private_key_jwt (tether-pkjwt)', async () => verify(await codeFlow({ clientId: 'tether-pkjwt', auth: 'private_key_jwt', quiet: true })));
await check('stale auth_time is passed through', async () => {
  const authTime = Math.floor(Date.now() / 1000) - 3600;
  const c = await verify(await codeFlow({ login: { auth_time: String(authTime) }, quiet: true }));
  assert.equal(c.auth_time, authTime);
});
await check('no acr/amr at login, no acr_values: claims absent', async () => {
  const c = await verify(await codeFlow({ acrValues: null, login: { acr: '', amr: '' }, quiet: true }));
  assert.ok(!('acr' in c) && !('amr' in c) && 'sid' in c && 'auth_time' in c);
});
await check('second login reusing the same cookie jar', async () => {
  const jar = new Jar();
  await verify(await codeFlow({ jar, quiet: true }));
  await verify(await codeFlow({ jar, quiet: true }));
});

// --- test hooks ------------------------------------------------------------
console.log('\ntest hooks:');
const hooks = {
  bad_signature: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
  expired: 'ERR_JWT_EXPIRED',
  wrong_audience: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
};
for (const [mode, expected] of Object.entries(hooks)) {
  await check(`mutate-next-id-token ${mode} -> ${expected}`, async () => {
    const res = await request(null, 'POST', `${issuer}/test/mutate-next-id-token`, {
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mode }),
    });
    assert.equal(res.status, 200);
    const flow = await codeFlow({ quiet: true });
    const original = await codeFlow({ quiet: true }); // the mutation is used up
    await verify(original);
    assert.equal(decodeProtectedHeader(flow.tokens.id_token).kid, decodeProtectedHeader(original.tokens.id_token).kid);
    await assert.rejects(verify(flow), (err) => err.code === expected);
    if (mode === 'wrong_audience') assert.equal(decodeJwt(flow.tokens.id_token).aud, 'someone-else');
  });
}

await check('logout-token', async () => {
  const res = await request(null, 'POST', `${issuer}/test/logout-token`, {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub: claims.sub, sid: claims.sid, aud: 'tether' }),
  });
  assert.equal(res.status, 200);
  const { logout_token: token } = await res.json();
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer, audience: 'tether', typ: 'logout+jwt', requiredClaims: ['iat', 'exp', 'jti', 'events'],
  });
  console.log('    logout_token header:', JSON.stringify(protectedHeader));
  console.log('    logout_token claims:', JSON.stringify(payload));
  assert.deepEqual(payload.events, { 'http://schemas.openid.net/event/backchannel-logout': {} });
  assert.ok(!('nonce' in payload));
  assert.equal(payload.sid, claims.sid);
});

// --- shutdown: closing stdin stops the IdP ---------------------------------
child.stdin.end();
const { code, signal } = await exited;
assert.equal(code, 0, `idp exit ${code} ${signal}`);
console.log('\nok   idp exited 0 after stdin was closed');
console.log('selfcheck: all passed');
