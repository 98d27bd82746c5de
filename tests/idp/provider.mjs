// A real OpenID Connect provider for Chaperone's end-to-end tests:
// npm `oidc-provider` (OpenID certified) with the demo school's people,
// their groups, classes and MFA evidence (amr/acr) set per person.
//
//   node provider.mjs <config.json>
//
// config.json: { port, issuer, keys_file, clients: [{client_id, client_secret,
// redirect_uris}], users: [{sub, login, name, groups, classes, amr, acr,
// email, email_verified}] } (`email` and `email_verified` with the `email` scope)
//
// Listens on 127.0.0.1 only. The signing key (RS256) is kept in keys_file:
// delete the file and restart to rotate it. Prints "ready <issuer>" once
// listening; exits on SIGTERM.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map(config.users.map(u => [u.sub, u]));
const byLogin = new Map(config.users.map(u => [u.login, u]));

function signingKeys() {
  if (existsSync(config.keys_file)) return JSON.parse(readFileSync(config.keys_file, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
  const keys = { keys: [jwk] };
  writeFileSync(config.keys_file, JSON.stringify(keys));
  return keys;
}

const provider = new Provider(config.issuer, {
  clients: config.clients.map(c => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'school'],
  claims: { openid: ['sub', 'acr', 'amr', 'auth_time'], profile: ['name'], email: ['email', 'email_verified'], school: ['groups', 'classes'] },
  acrValues: ['urn:mfa', 'urn:pwd'],
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = users.get(id);
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        const email = user.email ? { email: user.email, email_verified: user.email_verified === true } : {};
        return { sub: id, name: user.name, groups: user.groups, classes: user.classes, ...email };
      },
    };
  },
});

const escape = s => String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function loginForm(res, uid, error) {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><html><head><title>School sign-in</title></head><body data-page="test-idp-login">
<h1>School sign-in (test provider)</h1>${error ? `<p id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Login <input id="login" name="login" autocomplete="off"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="submit" type="submit">Sign in</button></form></body></html>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (req.method === 'GET') return loginForm(res, uid);
    const form = await readForm(req);
    const user = byLogin.get(form.get('login') || '');
    if (!user) return loginForm(res, uid, 'Unknown login');
    return provider.interactionFinished(req, res, { login: { accountId: user.sub, amr: user.amr, acr: user.acr || undefined } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId ? await provider.Grant.find(details.grantId) : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    grant.addOIDCScope(params.scope);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  res.writeHead(400);
  res.end(`unsupported prompt ${prompt.name}`);
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch(err => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}`);
    });
    return;
  }
  callback(req, res);
});
server.listen(config.port, '127.0.0.1', () => {
  console.log(`ready ${config.issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
